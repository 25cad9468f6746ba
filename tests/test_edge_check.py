"""The edge check: hostile text in a path, a query argument or a form field is a 400 naming it, on every route.

NUL reaches PostgreSQL as an error (a 500 before the check); control characters,
invalid UTF-8 and malformed percent-escapes are refused the same way, before any
view, CSRF check or query runs.
"""
from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.dashboard_helpers import (  # noqa: F401  (fixtures)
    PASSWORD, csrf_token, login, make_user, post, record, users,
)
from tests.factories import issue_key

CONTROLS = [chr(c) for c in range(0x20)] + ["\x7f"]
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def assert_html_400(response, *words: str) -> str:
    html = response.get_data(as_text=True)
    assert response.status_code == 400, (response.status_code, html[:300])
    assert response.mimetype == "text/html"
    for word in words:
        assert word in html, (word, html[:500])
    return html


def assert_json_400(response, param: str | None) -> dict:
    assert response.status_code == 400, (response.status_code, response.get_data(as_text=True)[:300])
    error = response.get_json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    return error


@pytest.fixture
def admin(users, login):
    return login(users["admin"])


# -- the examples that were 500s on PostgreSQL ------------------------------------------------------------
@pytest.mark.parametrize("url, param", [
    ("/logs?model=%00", "model"), ("/logs?label=%00", "label"), ("/logs?provider=%00", "provider"),
    ("/usage?label=%00", "label"), ("/usage/export.csv?label=%00", "label"),
    ("/usage/export.csv?group=label&model=a%00b", "model"),
])
def test_nul_in_a_dashboard_filter_is_a_400_naming_it(admin, url, param):
    assert_html_400(admin.get(url), f"query parameter &#39;{param}&#39; contains a NUL character")


@pytest.mark.parametrize("url", ["/logs/%00", "/invoices/number/KW%00", "/admin/prices/openai/%00",
                                 "/admin/prices/%00/gpt-4o", "/invoices/2026-01%00/print"])
def test_nul_in_a_dashboard_path_is_a_400(admin, url):
    assert_html_400(admin.get(url), "path contains a NUL character")


def test_nul_in_the_generation_lookup_is_a_json_400(client, org):
    key = issue_key(org)
    response = client.get("/v1/generation?id=%00", headers={"Authorization": f"Bearer {key}"})
    error = assert_json_400(response, "id")
    assert "NUL" in error["message"]


def test_nul_in_the_management_api_is_a_json_400(client, org):
    key = issue_key(org, scope="management")
    headers = {"Authorization": f"Bearer {key}"}
    assert_json_400(client.get("/api/v1/usage?group_by=%00", headers=headers), "group_by")
    assert_json_400(client.get("/api/v1/invoices/KW-2026-%00", headers=headers), "path")


def test_nul_in_the_login_email_needs_no_account(app):
    client = app.test_client()
    token = csrf_token(client)
    response = client.post("/login", data={"email": "a\x00@example.com", "password": "whatever-password",
                                           "csrf_token": token})
    assert_html_400(response, "form field &#39;email&#39; contains a NUL character")


def test_the_refusal_never_echoes_a_password(app):
    client = app.test_client()
    token = csrf_token(client)
    response = client.post("/login", data={"email": "a@example.com", "password": "hunter2\x00secret",
                                           "csrf_token": token})
    html = assert_html_400(response, "form field &#39;password&#39;")
    assert "hunter2" not in html and "secret" not in html


# -- the class: any control character, anywhere a caller writes text -------------------------------------
@FUZZ
@given(control=st.sampled_from(CONTROLS), before=st.text(max_size=5), after=st.text(max_size=5),
       route=st.sampled_from(["/", "/usage", "/usage/export.csv", "/logs", "/invoices", "/credits", "/keys",
                              "/admin/audit", "/admin/prices", "/admin/users", "/login"]),
       name=st.sampled_from(["model", "label", "provider", "start", "key", "before", "next", "x"]))
def test_any_control_character_in_any_query_argument_is_a_400(admin, control, before, after, route, name):
    response = admin.get(route, query_string={name: before + control + after})
    assert_html_400(response, f"query parameter &#39;{name}&#39;")


@FUZZ
@given(control=st.sampled_from(CONTROLS), route=st.sampled_from(["/v1/generation", "/v1/models", "/api/v1/usage",
                                                                 "/api/v1/credits", "/api/v1/invoices"]),
       name=st.sampled_from(["id", "start", "group_by", "limit", "before", "anything"]))
def test_control_characters_on_the_bearer_apis_are_json_400s(client, org, control, route, name):
    key = issue_key(org, scope="management" if route.startswith("/api") else "inference")
    response = client.get(route, query_string={name: f"a{control}b"}, headers={"Authorization": f"Bearer {key}"})
    assert_json_400(response, name)


@FUZZ
@given(control=st.sampled_from([c for c in CONTROLS if c not in "\t\r\n"]))
def test_multiline_form_fields_keep_line_breaks_but_not_other_controls(admin, control):
    # The void reason is the one multi-line field: a line break is text there; any other control is refused.
    clean = post(admin, "/invoices/number/KW-2000-000001/void", {"reason": "line one\r\nline\ttwo"})
    assert clean.status_code == 404  # reached the view (no such invoice), not refused at the edge
    response = post(admin, "/invoices/number/KW-2000-000001/void", {"reason": f"bad {control} reason"})
    assert_html_400(response, "form field &#39;reason&#39;")


@pytest.mark.parametrize("field", ["\t", "\n", "\r"])
def test_line_breaks_are_refused_in_single_line_form_fields(admin, field):
    assert_html_400(post(admin, "/credits/grant", {"amount": "5", "note": f"a{field}b"}), "form field &#39;note&#39;")


# -- encoding ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url, words", [
    ("/usage?label=%FF", "query parameter &#39;label&#39; is not valid UTF-8"),
    ("/usage?label=%C3", "query parameter &#39;label&#39; is not valid UTF-8"),
    ("/logs?model=%zz", "malformed percent-escape"),
    ("/logs?model=100%", "malformed percent-escape"),
    ("/usage?%FF=1", "query parameter name is not valid UTF-8"),
    ("/logs/%FF%FE", "path is not valid UTF-8"),
    ("/logs/gen-%zz", "path has a malformed percent-escape"),
])
def test_invalid_utf8_or_percent_encoding_is_a_400(admin, url, words):
    assert_html_400(admin.get(url), words)


def test_invalid_utf8_in_a_form_body_is_a_400(app):
    client = app.test_client()
    token = csrf_token(client)
    response = client.post("/login", data=f"email=a%FF%40example.com&password=x&csrf_token={token}".encode(),
                           content_type="application/x-www-form-urlencoded")
    assert_html_400(response, "form field &#39;email&#39; is not valid UTF-8")


def test_valid_unicode_passes_the_edge(admin):
    assert admin.get("/usage", query_string={"label": "équipe-β 🚀"}).status_code == 200
    assert admin.get("/logs/gen-é").status_code == 404


# -- bounds --------------------------------------------------------------------------------------------
def test_lengths_are_bounded(admin, app):
    from app import edge

    assert_html_400(admin.get("/usage", query_string={"x": "a" * (edge.MAX_QUERY_VALUE + 1)}),
                    f"query parameter &#39;x&#39; is longer than {edge.MAX_QUERY_VALUE} characters")
    assert admin.get("/usage", query_string={"x": "a" * edge.MAX_QUERY_VALUE}).status_code == 200
    assert_html_400(admin.get("/usage?" + "a" * (edge.MAX_NAME + 1) + "=1"), "query parameter name is longer")
    assert_html_400(admin.get("/logs/" + "a" * (edge.MAX_PATH + 1)), "path is longer")
    assert_html_400(admin.get("/usage?" + "&".join(f"p{i}=1" for i in range(edge.MAX_PARAMS + 1))),
                    f"more than {edge.MAX_PARAMS} query parameters")


def test_a_hostile_parameter_name_is_not_echoed(admin):
    html = assert_html_400(admin.get("/usage?%3Cscript%3E%00=1"), "a query parameter name contains a NUL")
    assert "<script>" not in html and "&lt;script&gt;" not in html


def test_no_traceback_is_logged_for_a_refusal(admin, caplog):
    admin.get("/logs?model=%00")
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    assert not re.search("unhandled", caplog.text)


def test_every_multiline_form_field_is_known_to_the_edge():
    """A new <textarea> field must be listed, or every line break typed into it is refused."""
    import inspect

    from wtforms import TextAreaField
    from wtforms.fields.core import UnboundField

    from app import edge
    from app.dashboard import forms

    textareas = {name for _, form in inspect.getmembers(forms, inspect.isclass)
                 for name, field in vars(form).items()
                 if isinstance(field, UnboundField) and issubclass(field.field_class, TextAreaField)}
    assert textareas and textareas <= edge.MULTILINE_FIELDS
