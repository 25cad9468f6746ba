"""Route-by-route access: every registered route × role, other organizations' objects, CSRF and headers."""
from __future__ import annotations

import pytest

from app import db
from app.billing import invoicing
from app.billing.periods import current_period
from tests.dashboard_helpers import (  # noqa: F401  (fixtures)
    PASSWORD, csrf_token, gateway_key_for, login, make_user, other_org, other_users, post, record, sign_in, users,
)
from tests.clock import in_month, period_ago
from tests.factories import grant

ALL = {"admin", "finance", "developer"}
FIN = {"admin", "finance"}
ADM = {"admin"}
KEYS = {"admin", "developer"}

# endpoint -> roles allowed. Every dashboard route must be listed: a new one fails test_matrix_covers_every_route.
MATRIX: dict[str, set[str]] = {
    "overview.index": ALL,
    "usage.index": ALL, "usage.export_csv": ALL,
    "logs.index": ALL, "logs.detail": ALL,
    "invoices.index": FIN, "invoices.detail": FIN, "invoices.by_number": FIN, "invoices.printable": FIN,
    "invoices.printable_by_number": FIN, "invoices.csv_download": FIN, "invoices.csv_by_number": FIN,
    "invoices.confirm_finalize": FIN, "invoices.finalize": FIN, "invoices.void": ADM,
    "credits.index": FIN, "credits.grant": ADM,
    "keys.index": KEYS, "keys.create": KEYS, "keys.revoke": KEYS,
    "admin.policy": ADM, "admin.save_policy": ADM, "admin.audit_log": ADM,
    "users.index": ADM, "users.create": ADM, "users.change_role": ADM, "users.toggle_active": ADM,
    "prices.index": ADM, "prices.create": ADM, "prices.versions": ADM,
}
PUBLIC = {"auth.login", "auth.logout", "static", "health.healthz"}
# Bearer-token JSON APIs: a dashboard session alone must never open them (that is why CSRF can skip them).
BEARER_BLUEPRINTS = {"gateway", "api"}


@pytest.fixture
def world(app, org, users, other_org, other_users):
    """One object of each kind in our organization and in another one."""
    grant(org, "100")
    rid = record(org, at=in_month(1))
    record(org, credential="shared", cost="0.05", charge="0.05")
    dev_key, _ = gateway_key_for(org, users["developer"], name="dev key")
    bystander = make_user(org, "developer")
    with db.session_scope() as s:
        number = invoicing.finalize(s, org.id, period_ago(1), user_id=users["admin"].id).number
    other_rid = record(other_org)
    other_key, _ = gateway_key_for(other_org, other_users["developer"])
    grant(other_org, "10")
    with db.session_scope() as s:
        other_number = invoicing.finalize(s, other_org.id, period_ago(1)).number
    return {
        "period": period_ago(1), "number": number, "request_id": rid, "key_id": dev_key.id,
        "user_id": bystander.id, "provider": "openai", "model": "gpt-4o-mini",
        "other": {"request_id": other_rid, "key_id": other_key.id, "user_id": other_users["developer"].id,
                  "number": other_number},
    }


def url_for_rule(app, rule, values: dict) -> str:
    with app.test_request_context():
        from flask import url_for

        return url_for(rule.endpoint, **{arg: values[arg] for arg in rule.arguments})


def dashboard_rules(app):
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.rsplit(".", 1)[0] if "." in rule.endpoint else ""
        if rule.endpoint in PUBLIC or blueprint in BEARER_BLUEPRINTS:
            continue
        yield rule


def test_matrix_covers_every_route(app):
    missing = []
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.rsplit(".", 1)[0] if "." in rule.endpoint else ""
        if rule.endpoint not in MATRIX and rule.endpoint not in PUBLIC and blueprint not in BEARER_BLUEPRINTS:
            missing.append(f"{rule.rule} ({rule.endpoint})")
    assert not missing, f"routes missing from the access matrix: {missing}"
    stale = set(MATRIX) - {r.endpoint for r in app.url_map.iter_rules()}
    assert not stale, f"matrix lists routes that no longer exist: {stale}"


@pytest.mark.parametrize("role", ["developer", "finance", "admin"])
def test_access_matrix_route_by_route(app, world, users, login, role):
    client = login(users[role])
    checked = 0
    for rule in dashboard_rules(app):
        url = url_for_rule(app, rule, world)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = post(client, url) if method == "POST" else client.get(url)
            where = f"{role} {method} {url} -> {response.status_code}"
            if role in MATRIX[rule.endpoint]:
                assert response.status_code not in (401, 403, 404) and response.status_code < 500, where
            else:
                assert response.status_code == 403, where
            checked += 1
    assert checked >= len(MATRIX)


def test_anonymous_is_sent_to_sign_in_everywhere(app, world, client):
    for rule in dashboard_rules(app):
        url = url_for_rule(app, rule, world)
        response = client.get(url) if "GET" in rule.methods else client.post(url)
        if "GET" in rule.methods:
            assert response.status_code == 302 and "/login" in response.headers["Location"], url
        else:  # a POST without a session has no CSRF token either: refused before anything runs
            assert response.status_code in (302, 400), url


def test_session_alone_never_opens_the_bearer_apis(app, world, users, login):
    client = login(users["admin"])
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.rsplit(".", 1)[0] if "." in rule.endpoint else ""
        if blueprint not in BEARER_BLUEPRINTS or rule.arguments:
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            response = client.open(rule.rule, method=method, json={})
            assert response.status_code in (401, 403), f"{method} {rule.rule} -> {response.status_code}"


@pytest.mark.parametrize("endpoint,method", [
    ("logs.detail", "GET"), ("keys.revoke", "POST"), ("users.change_role", "POST"),
    ("users.toggle_active", "POST"), ("invoices.by_number", "GET"), ("invoices.csv_by_number", "GET"),
    ("invoices.printable_by_number", "GET"), ("invoices.void", "POST"),
])
def test_another_organizations_objects_answer_404(app, world, users, login, endpoint, method):
    client = login(users["admin"])
    rule = next(r for r in app.url_map.iter_rules() if r.endpoint == endpoint)
    url = url_for_rule(app, rule, {**world, **world["other"]})
    response = post(client, url, {"role": "admin", "reason": "guessing urls"}) if method == "POST" else client.get(url)
    assert response.status_code == 404


def test_another_organizations_key_is_not_revoked(app, world, users, login):
    client = login(users["admin"])
    post(client, f"/keys/{world['other']['key_id']}/revoke")
    from app.models import ApiKey

    assert db.session.get(ApiKey, world["other"]["key_id"]).revoked_at is None


def test_a_form_without_csrf_token_is_rejected_and_saves_nothing(app, world, users, login):
    client = login(users["admin"])
    from app.models import CreditEntry

    before = db.session.query(CreditEntry).count()
    response = client.post("/credits/grant", data={"amount": "25", "note": "no token"})
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    response = client.post("/credits/grant", data={"amount": "25", "csrf_token": "forged"})
    assert response.status_code == 400
    db.session.remove()
    assert db.session.query(CreditEntry).count() == before


def test_login_form_needs_csrf_too(app, users):
    client = app.test_client()
    response = client.post("/login", data={"email": users["admin"].email, "password": PASSWORD})
    assert response.status_code == 400


def test_security_headers(app, users, login):
    client = login(users["finance"])
    for url in ("/", f"/invoices/{current_period()}", "/credits", "/login"):
        response = client.get(url, follow_redirects=False)
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"
    for url in ("/credits", f"/invoices/{current_period()}", f"/invoices/{current_period()}/invoice.csv"):
        assert client.get(url).headers["Cache-Control"] == "no-store"


def test_pages_have_no_inline_script_or_style(app, world, users, login):
    """The CSP forbids inline code, so none may be written: it would silently not run."""
    import re

    client = login(users["admin"])
    for url in ("/", "/usage", "/logs", f"/logs/{world['request_id']}", "/invoices", f"/invoices/{world['period']}",
                f"/invoices/{world['period']}/print", "/credits", "/keys", "/admin/policy", "/admin/users",
                "/admin/prices", "/admin/audit", "/login"):
        html = client.get(url).get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), url
        assert not re.search(r"\sstyle=|<style", html), url
        assert not re.search(r"\son[a-z]+=", html), url
