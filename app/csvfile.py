"""The one CSV writer for every export: text a spreadsheet would run as a formula is made inert.

A cell a spreadsheet opens as a formula ("CSV injection", OWASP) starts with
= + - @, a tab or a carriage return, possibly after leading whitespace, which
Excel and LibreOffice skip. Any such text cell gets a leading apostrophe, so it
shows as typed and never runs. Numbers stay numbers, negative ones too:
int and finite Decimal values are written as they are, and so is text that
reads exactly as a finite decimal number ("-1.50"), since a spreadsheet can
only take it as that number.
"""
from __future__ import annotations

import csv
import io
import re
from decimal import Decimal
from typing import Any, Iterable

from flask import Response

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def safe_cell(value: Any) -> str:
    """The cell as text: numbers as numbers, formula-like text quoted with an apostrophe."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, Decimal) and value.is_finite():
        return str(value)
    text = "" if value is None else str(value)
    return "'" + text if runs_as_formula(text) and not _is_number(text) else text


def runs_as_formula(text: str) -> bool:
    """A trigger first, or first after leading whitespace (tab and CR are triggers themselves)."""
    rest = text.lstrip()
    return any(c in "\t\r" for c in text[:len(text) - len(rest)]) or rest.startswith(FORMULA_START)


def _is_number(text: str) -> bool:
    # Plain decimal notation only: Decimal() would also take "1_000", " 1" or "Infinity".
    return _NUMBER.fullmatch(text) is not None


def to_text(header: Iterable[Any], rows: Iterable[Iterable[Any]]) -> str:
    """A whole CSV document (RFC 4180 line ends), every cell through safe_cell."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([safe_cell(cell) for cell in header])
    for row in rows:
        writer.writerow([safe_cell(cell) for cell in row])
    return out.getvalue()


def attachment(text: str, filename: str) -> Response:
    """A CSV download; the filename is built by the caller from checked values only."""
    return Response(text, mimetype="text/csv", headers={"Content-Disposition": f'attachment; filename="{filename}"'})
