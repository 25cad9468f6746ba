"""Per-view checks of what each parameter means: a clear 400 (or 404 for an id in a path), never a 500.

The edge check (tests/test_edge_check.py) guarantees clean text; these pin what
each view then accepts: filters within their column width, ids in their format,
integers in ASCII digits within the database's range, dates a calendar can hold.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app import db
from app.dashboard import auth
from app.models import LoginThrottle
from tests.dashboard_helpers import csrf_token, login, make_user, post, record, users  # noqa: F401  (fixtures)
from tests.factories import issue_key

HUGE = "99999999999999999999999"
# str.isdigit() says yes to these, int() says no (superscripts) or reads another script's digits.
NOT_ASCII_DIGITS = ["²", "٣", "１"]
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def admin(users, login):
    return login(users["admin"])


def assert_400(response, *words: str) -> str:
    html = response.get_data(as_text=True)
    assert response.status_code == 400, (response.status_code, html[:300])
    for word in words:
        assert word in html, (word, html[:2000])
    return html


# -- integers: ids and page cursors ------------------------------------------------------------------
@pytest.mark.parametrize("value", [HUGE, "-1", "0", "2147483648", *NOT_ASCII_DIGITS])
@pytest.mark.parametrize("url", ["/usage?key={}", "/usage/export.csv?key={}", "/logs?key={}"])
def test_a_gateway_key_filter_outside_the_id_range_is_a_400(admin, url, value):
    assert_400(admin.get(url.format(value)), "unknown gateway key")


@pytest.mark.parametrize("value", [HUGE, "-1", "0", "2147483648", "1.5", *NOT_ASCII_DIGITS])
@pytest.mark.parametrize("url", ["/credits?before={}", "/admin/audit?before={}"])
def test_a_page_cursor_that_is_not_a_row_id_is_a_400(admin, url, value):
    assert_400(admin.get(url.format(value)), "before")


@pytest.mark.parametrize("cursor", ["2026-01-01T00:00:00+00:00~²", f"2026-01-01T00:00:00+00:00~{HUGE}",
                                    "2026-01-01T00:00:00~1", "yesterday~1", "~"])
def test_a_malformed_log_cursor_is_a_400(admin, cursor):
    assert_400(admin.get("/logs", query_string={"before": cursor}), "page link is malformed")


@pytest.mark.parametrize("url", [f"/admin/users/{HUGE}/role", f"/admin/users/{HUGE}/active", f"/keys/{HUGE}/revoke"])
def test_an_object_id_beyond_the_id_range_is_404(admin, url):
    assert post(admin, url, {"role": "admin"}).status_code == 404


# -- text filters: within their column width ----------------------------------------------------------
@pytest.mark.parametrize("name, width", [("provider", 32), ("model", 128), ("label", 64)])
@pytest.mark.parametrize("page", ["/usage", "/usage/export.csv", "/logs"])
def test_a_text_filter_longer_than_its_column_is_a_400(admin, page, name, width):
    assert admin.get(page, query_string={name: "a" * width}).status_code == 200
    assert_400(admin.get(page, query_string={name: "a" * (width + 1)}), f"{name} is longer than {width} characters")


@pytest.mark.parametrize("query, field", [("group=bogus", "group"), ("sort=password", "sort"),
                                          ("order=sideways", "order"), ("chart=pie", "chart")])
def test_an_unknown_choice_on_the_usage_page_is_a_400(admin, query, field):
    assert_400(admin.get(f"/usage?{query}"), f"{field} must be one of")


@pytest.mark.parametrize("query", ["status=maybe", "credential=free", "fallback=perhaps"])
def test_an_unknown_choice_in_the_request_log_is_a_400(admin, query):
    assert_400(admin.get(f"/logs?{query}"), "must be")


# -- dates -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("page", ["/usage", "/usage/export.csv", "/logs"])
@pytest.mark.parametrize("value", ["2026-13-45", "2026-02-30", "31/12/2025", "0000-01-01", "tomorrow"])
def test_a_date_that_does_not_parse_is_a_400(admin, page, value):
    assert_400(admin.get(page, query_string={"start": value}), "is not a date")


@pytest.mark.parametrize("page", ["/usage", "/usage/export.csv", "/logs"])
@pytest.mark.parametrize("name, value", [("end", "9999-12-31"), ("start", "0001-01-01"), ("end", "0001-01-01")])
def test_a_date_at_the_edge_of_the_calendar_is_never_a_500(admin, page, name, value):
    assert admin.get(page, query_string={name: value}).status_code in (200, 400)


@FUZZ
@given(day=st.dates(), name=st.sampled_from(["start", "end"]),
       page=st.sampled_from(["/usage", "/usage/export.csv", "/logs"]))
def test_any_calendar_date_is_answered_without_a_500(admin, day, name, page):
    assert admin.get(page, query_string={name: day.isoformat()}).status_code in (200, 400)


# -- ids in a path: their format, else 404 without a query ------------------------------------------------
@pytest.mark.parametrize("url", ["/logs/" + "a" * 41, "/logs/gen-é", "/logs/gen-zz%20zz",
                                 "/invoices/number/KW-2026-1", "/invoices/number/kw-2026-000001",
                                 "/invoices/number/KW-٢٠٢٦-000001", "/invoices/number/KW-2026-000001x/print",
                                 "/invoices/９９９９-12", "/invoices/9999-12", "/invoices/9999-12/invoice.csv",
                                 "/invoices/9999-12/print", "/invoices/9999-12/finalize",
                                 "/admin/prices/Open%20AI/gpt-4o", "/admin/prices/openai/" + "m" * 129,
                                 "/admin/prices/openai/gpt 4o"])
def test_an_id_not_in_its_format_is_404(admin, url):
    assert admin.get(url).status_code == 404


@FUZZ
@given(ref=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=60)
       .filter(lambda s: "/" not in s and s not in (".", "..")))
def test_any_path_id_is_a_404_or_a_page_never_a_500(admin, ref):
    from urllib.parse import quote

    for url in (f"/logs/{quote(ref)}", f"/invoices/number/{quote(ref)}", f"/invoices/{quote(ref)}",
                f"/admin/prices/openai/{quote(ref)}", f"/admin/prices/{quote(ref)}/gpt-4o"):
        assert admin.get(url).status_code in (200, 404), url


# -- sign-in: a bad email is a failed sign-in like any other ----------------------------------------------
@pytest.mark.parametrize("email", ["a" * 250 + "@x.io", "not-an-email", "two@@example.com", "sp ace@example.com"])
def test_a_malformed_email_is_the_ordinary_failure_and_writes_nothing(app, email):
    client = app.test_client()
    response = client.post("/login", data={"email": email, "password": "some password",
                                           "csrf_token": csrf_token(client)})
    assert response.status_code == 401 and auth.FAILED in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(LoginThrottle)) == 0


# -- the management API ----------------------------------------------------------------------------------
@pytest.mark.parametrize("query, param", [
    (f"before={HUGE}", "before"), ("before=²", "before"), ("limit=²", "limit"), ("limit=-1", "limit"),
    ("before=0", "before"), ("limit=1e3", "limit"),
])
def test_api_integers_outside_their_range_are_400(client, org, query, param):
    key = issue_key(org, scope="management")
    response = client.get(f"/api/v1/credits?{query}", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 400 and response.json["error"]["param"] == param, response.json


@pytest.mark.parametrize("query, param", [("start=2026-13-45", "start"), ("end=tomorrow", "end"),
                                          ("start=0001-01-01&end=0001-01-02", None), ("end=9999-12-31", None)])
def test_api_dates_are_a_400_or_an_answer_never_a_500(client, org, query, param):
    key = issue_key(org, scope="management")
    response = client.get(f"/api/v1/usage?{query}", headers={"Authorization": f"Bearer {key}"})
    if param is None:
        assert response.status_code in (200, 400), response.json
    else:
        assert response.status_code == 400 and response.json["error"]["param"] == param, response.json


@pytest.mark.parametrize("ref", ["KW-٢٠٢٦-000001", "KW-2026-000001%0A", "９９９９-12", "2026-1"])
def test_api_invoice_refs_outside_their_format_are_400(client, org, ref):
    key = issue_key(org, scope="management")
    response = client.get(f"/api/v1/invoices/{ref}", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 400, response.json


@FUZZ
@given(params=st.dictionaries(st.sampled_from(["start", "end", "group_by", "limit", "before"]),
                              st.one_of(st.text(max_size=40), st.integers().map(str), st.dates().map(str)),
                              max_size=3),
       path=st.sampled_from(["/usage", "/credits", "/invoices"]))
def test_api_query_strings_never_give_a_500(client, org, params, path):
    key = issue_key(org, scope="management")
    response = client.get(f"/api/v1{path}", query_string=params, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code in (200, 400), (params, response.json)
