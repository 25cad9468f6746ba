"""One CSV writer for every export: caller-chosen text never runs as a formula, numbers stay numbers."""
from __future__ import annotations

import csv
import io
import pathlib
import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app import csvfile
from tests.dashboard_helpers import gateway_key_for, login, record, users  # noqa: F401  (fixtures)

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
PAYLOAD = "=cmd|' /C calc'!A0"


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def runs_as_formula(cell: str) -> bool:
    """What a spreadsheet would evaluate: a trigger first, or first after leading whitespace."""
    rest = cell.lstrip()
    return "\t" in cell[:len(cell) - len(rest)] or "\r" in cell[:len(cell) - len(rest)] or rest.startswith(TRIGGERS)


def test_a_label_chosen_by_a_caller_is_inert_in_the_usage_export(org, users, login):
    record(org, label=PAYLOAD)
    record(org, label="@SUM(1+1)*cmd|' /C calc'!A0")
    record(org, label="  -2+3+cmd|' /C calc'!A0")
    response = login(users["developer"]).get("/usage/export.csv?group=label")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    cells = [row[0] for row in read_csv(response.get_data(as_text=True))[1:]]
    assert "'" + PAYLOAD in cells
    assert not [c for c in cells if runs_as_formula(c)], cells


def test_a_key_name_is_inert_in_the_usage_export(org, users, login):
    key, _ = gateway_key_for(org, users["developer"], name='=HYPERLINK("http://evil.example","x")')
    record(org, api_key_id=key.id)
    rows = read_csv(login(users["developer"]).get("/usage/export.csv?group=key").get_data(as_text=True))
    assert rows[1][0].startswith("'=HYPERLINK(")


def test_usage_export_numbers_stay_numbers(org, users, login):
    record(org, label="team-a", cost="0.0100", prompt_tokens=1234)
    rows = read_csv(login(users["developer"]).get("/usage/export.csv?group=label").get_data(as_text=True))
    row = dict(zip(rows[0], rows[1]))
    assert row["prompt_tokens"] == "1234" and Decimal(row["byok_cost"]) == Decimal("0.01")


def test_a_malformed_filter_refuses_the_export_instead_of_exporting_other_rows(org, users, login):
    response = login(users["developer"]).get("/usage/export.csv?start=2026-13-45&group=label")
    assert response.status_code == 400 and "is not a date" in response.get_data(as_text=True)


# -- the writer, over classes of input ----------------------------------------------------------------------
@given(lead=st.text(alphabet=" \u00a0\n", max_size=3), trigger=st.sampled_from(TRIGGERS), rest=st.text(max_size=30))
def test_any_text_that_would_run_comes_out_inert(lead, trigger, rest):
    cell = lead + trigger + rest
    [[written]] = read_csv(csvfile.to_text([cell], []))
    if re.fullmatch(r"[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?", cell):
        assert written == cell  # a plain number: a spreadsheet can only read it as that number
    else:
        assert written == "'" + cell and not runs_as_formula(written)


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_any_decimal_comes_out_as_a_number_that_round_trips(value):
    [[written]] = read_csv(csvfile.to_text([value], []))
    assert not written.startswith("'")
    assert Decimal(written) == value


@given(st.integers())
def test_any_integer_comes_out_as_itself(value):
    [[written]] = read_csv(csvfile.to_text([value], []))
    assert int(written) == value


@given(st.text(max_size=40).filter(lambda s: not runs_as_formula(s)))
def test_other_text_comes_out_unchanged(text):
    [[written]] = read_csv(csvfile.to_text([text], []))
    assert written == text


@pytest.mark.parametrize("value, cell", [(Decimal("-0.40"), "-0.40"), ("-0.40", "-0.40"), ("-2+3", "'-2+3"),
                                         ("=1", "'=1"), (None, ""), (True, "True"), ("-Infinity", "'-Infinity"),
                                         (Decimal("-Infinity"), "'-Infinity"), ("-1_000", "'-1_000")])
def test_examples(value, cell):
    assert csvfile.safe_cell(value) == cell


def test_every_export_goes_through_the_one_writer():
    """No other module builds CSV: a new export written with csv.writer would bypass the guard."""
    root = pathlib.Path(__file__).resolve().parents[1] / "app"
    writers = [str(p.relative_to(root)) for p in root.rglob("*.py")
               if re.search(r"\bcsv\.(writer|DictWriter)\b", p.read_text()) and p.name != "csvfile.py"]
    assert writers == []
