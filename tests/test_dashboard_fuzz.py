"""Every dashboard page and form, and the sign-in, with hostile and careless input: an answer, never a 5xx.

The routes are read from the app's URL map, so a new page is fuzzed without
being listed here. Bounded: a few hundred requests per database.
"""
from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.routing import IntegerConverter

from tests.dashboard_helpers import csrf_token, login, post, users  # noqa: F401  (fixtures)
from tests.test_dashboard_access import BEARER_BLUEPRINTS, PUBLIC

PARAMS = ("start", "end", "key", "credential", "provider", "model", "label", "group", "sort", "order", "chart",
          "status", "fallback", "before", "next", "limit", "id")
SEEDS = ("", "-1", "0", "99999999999999999999999", "²", "٣", "2026-13-45", "9999-12-31", "0001-01-01",
         "2026-01-01T00:00:00+00:00~1", "KW-2026-000001", "=cmd|' /C calc'!A0", "/\\evil.example", "%", "a" * 300)
VALUES = st.one_of(st.sampled_from(SEEDS), st.text(max_size=60), st.integers().map(str), st.dates().map(str))
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ANSWERS = {200, 201, 302, 400, 401, 403, 404, 405}


def get_rules(app):
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.rsplit(".", 1)[0] if "." in rule.endpoint else ""
        if "GET" in rule.methods and blueprint not in BEARER_BLUEPRINTS and rule.endpoint not in PUBLIC - {"auth.login"}:
            yield rule


def path_for(app, rule, draw) -> str:
    values = {}
    for arg in rule.arguments:
        if isinstance(rule._converters[arg], IntegerConverter):
            values[arg] = draw(st.integers(min_value=0, max_value=10**25))
        else:
            values[arg] = draw(VALUES.filter(lambda v: v and "/" not in v and v not in (".", "..")))
    with app.test_request_context():
        from flask import url_for

        return url_for(rule.endpoint, **values)


@pytest.fixture
def admin(users, login):
    return login(users["admin"])


@FUZZ
@given(data=st.data())
def test_every_dashboard_page_answers_any_query_string(app, admin, caplog, data):
    rules = sorted(get_rules(app), key=lambda r: r.rule)
    rule = data.draw(st.sampled_from(rules), label="route")
    url = path_for(app, rule, data.draw)
    query = data.draw(st.dictionaries(st.sampled_from(PARAMS), VALUES, max_size=4), label="query")
    with caplog.at_level(logging.ERROR):
        response = admin.get(url, query_string=query)
    assert response.status_code in ANSWERS, (url, query, response.status_code)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], (url, query)


FORMS = {
    "/credits/grant": ("amount", "note"),
    "/admin/policy": ("enabled", "monthly_cap", "alert_threshold", "trigger_rate_limit", "p_openai_enabled"),
    "/admin/prices": ("provider", "model", "input", "output", "cached_input", "effective_from", "source"),
    "/keys": ("name", "scope"),
    "/admin/users": ("email", "password", "role"),
    "/admin/users/1/role": ("role",),
}


@FUZZ
@given(data=st.data())
def test_every_dashboard_form_answers_any_field_values(admin, caplog, data):
    url = data.draw(st.sampled_from(sorted(FORMS)), label="form")
    fields = data.draw(st.fixed_dictionaries({}, optional={name: VALUES for name in FORMS[url]}), label="fields")
    with caplog.at_level(logging.ERROR):
        response = post(admin, url, fields)
    assert response.status_code in ANSWERS, (url, fields, response.status_code)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], (url, fields)


@FUZZ
@given(email=VALUES, password=VALUES, next_url=VALUES)
def test_sign_in_answers_any_email_password_and_next(app, email, password, next_url):
    client = app.test_client()
    response = client.post("/login", query_string={"next": next_url},
                           data={"email": email, "password": password, "csrf_token": csrf_token(client)})
    assert response.status_code in (302, 400, 401), response.status_code
    if response.status_code == 302:  # only a right password signs in; none of these is one
        pytest.fail(f"signed in with {email!r}")


@pytest.mark.parametrize("target", ["/\\evil.example", "/\\/evil.example", "\\\\evil.example", "/%5Cevil.example",
                                    "https://evil.example", "//evil.example", "/\t/evil.example"])
def test_sign_in_never_redirects_off_site(app, users, target):
    from tests.dashboard_helpers import PASSWORD

    client = app.test_client()
    response = client.post("/login", query_string={"next": target},
                           data={"email": users["admin"].email, "password": PASSWORD, "csrf_token": csrf_token(client)})
    if response.status_code == 302:
        location = response.headers["Location"]
        assert location == "/" or (location.startswith("/") and not location.startswith(("//", "/\\"))
                                   and "\\" not in location), location
    else:
        assert response.status_code == 400  # a tab is refused at the edge
