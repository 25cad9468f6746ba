"""Admin forms: fallback policy, users, gateway keys, prices and credit grants — valid input saves, bad input saves nothing."""
from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app import db
from app.billing.ledger import balance_of
from app.models import ApiKey, AuditLog, CreditEntry, Organization, Price, User
from app.types import utcnow
from tests.dashboard_helpers import gateway_key_for, login, make_user, post, users  # noqa: F401
from tests.factories import grant
from simulators.server import Fault
from tests.helpers import byok, chat

USER_KEY = "sk-user-dashboard-0001"


def _count(model, *where) -> int:
    db.session.remove()
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def _audits(org, action: str) -> list[AuditLog]:
    db.session.remove()
    return list(db.session.scalars(select(AuditLog).where(AuditLog.org_id == org.id, AuditLog.action == action)))


def _field_error(html: str, field_id: str) -> str:
    match = re.search(rf'id="{field_id}-error">([^<]+)<', html)
    return match.group(1) if match else ""


# -- credits ---------------------------------------------------------------------------------
def test_admin_grants_credits_and_it_is_audited(org, users, login):
    client = login(users["admin"])
    response = post(client, "/credits/grant", {"amount": "1,250.50", "note": "Q4 top-up"})
    assert response.status_code == 302
    assert balance_of(db.session(), org.id)[0] == Decimal("1250.50")
    page = client.get("/credits").get_data(as_text=True)
    assert "$1,250.50" in page and "Q4 top-up" in page
    assert _audits(org, "credits.grant")[0].user_id == users["admin"].id


@pytest.mark.parametrize("amount, message", [
    ("-5", "greater than zero"), ("0", "greater than zero"), ("ten", "is not a number"), ("", "Enter an amount"),
    ("NaN", "is not a number"), ("5000000", "limited to"), ("1e400", "at most"),
])
def test_bad_credit_grant_shows_the_problem_and_saves_nothing(org, users, login, amount, message):
    client = login(users["admin"])
    response = post(client, "/credits/grant", {"amount": amount})
    assert response.status_code == 400
    assert message in _field_error(response.get_data(as_text=True), "amount")
    assert _count(CreditEntry, CreditEntry.org_id == org.id) == 0


# -- fallback policy ----------------------------------------------------------------------------
def _policy_form(**overrides) -> dict:
    form = {"enabled": "on", "trigger_rate_limit": "on", "trigger_overload": "on", "trigger_timeout": "on",
            "monthly_cap": "", "alert_threshold": "20"}
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def test_policy_form_saves_the_gateway_policy_shape_and_audits_it(org, users, login):
    client = login(users["admin"])
    response = post(client, "/admin/policy", _policy_form(
        enabled=None, trigger_auth="on", monthly_cap="250", alert_threshold="35", p_azure_enabled="on",
        p_openai_rate_limit="off"))
    assert response.status_code == 302
    db.session.remove()
    policy = db.session.get(Organization, org.id).fallback_policy
    assert policy == {
        "enabled": False,
        "triggers": {"rate_limit": True, "overload": True, "timeout": True, "auth": True, "budget": False},
        "providers": {"azure": {"enabled": True}, "openai": {"triggers": {"rate_limit": False}}},
        "monthly_cap": "250", "alert_threshold": "0.35",
    }
    entry = _audits(org, "policy.update")[0]
    assert entry.detail["after"] == policy and entry.detail["before"]["enabled"] is True
    html = client.get("/admin/policy").get_data(as_text=True)
    assert 'id="policy-enabled"  >' in html or 'id="policy-enabled" >' in html  # unchecked now
    assert 'value="35"' in html


@pytest.mark.parametrize("field, value, message", [
    ("alert_threshold", "abc", "percentage"), ("alert_threshold", "150", "percentage"),
    ("monthly_cap", "-10", "zero or more"), ("monthly_cap", "lots", "zero or more"),
    ("p_openai_enabled", "maybe", "choose default"),
])
def test_bad_policy_input_saves_nothing(org, users, login, field, value, message):
    client = login(users["admin"])
    response = post(client, "/admin/policy", _policy_form(enabled=None, **{field: value}))
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    db.session.remove()
    assert db.session.get(Organization, org.id).fallback_policy == {}
    assert not _audits(org, "policy.update")


def test_turning_fallback_off_makes_the_next_byok_429_a_429(client, org, users, login, gateway_key, fake_openai):
    grant(org, "10")
    fake_openai.on_key(USER_KEY, Fault("status", 429, headers={"retry-after": "1"}))
    assert chat(client, gateway_key, byok_conf=byok(USER_KEY)).status_code == 200  # default: falls back
    admin = login(users["admin"])
    assert post(admin, "/admin/policy", _policy_form(enabled=None)).status_code == 302
    response = chat(client, gateway_key, byok_conf=byok(USER_KEY))
    assert response.status_code == 429
    assert response.headers.get("X-Gateway-Fallback", "0") == "0"
    assert _audits(org, "policy.update")[0].summary == "fallback policy: fallback off"


# -- users ------------------------------------------------------------------------------------------
def test_admin_creates_a_user_who_can_sign_in(org, users, login, app):
    from tests.dashboard_helpers import sign_in

    client = login(users["admin"])
    response = post(client, "/admin/users", {"email": "New.Person@Example.com", "password": "a long password!",
                                             "role": "finance"})
    assert response.status_code == 302
    assert sign_in(app.test_client(), "new.person@example.com", "a long password!").status_code == 302
    assert _audits(org, "user.create")


@pytest.mark.parametrize("form, field, message", [
    ({"email": "not-an-email", "password": "a long password!", "role": "finance"}, "email", "email address"),
    ({"email": "x@example.com", "password": "short", "role": "finance"}, "password", "12 to 200"),
    ({"email": "x@example.com", "password": "a long password!", "role": "owner"}, "role", "Unknown role"),
])
def test_bad_user_input_saves_nothing(org, users, login, form, field, message):
    client = login(users["admin"])
    response = post(client, "/admin/users", form)
    assert response.status_code == 400
    assert message in _field_error(response.get_data(as_text=True), field)
    assert _count(User, User.org_id == org.id) == 3


def test_duplicate_email_is_refused_even_across_organizations(org, users, other_users, login):
    client = login(users["admin"])
    response = post(client, "/admin/users", {"email": other_users["finance"].email.upper(),
                                             "password": "a long password!", "role": "developer"})
    assert response.status_code == 400
    assert "already exists" in _field_error(response.get_data(as_text=True), "email")


from tests.dashboard_helpers import other_org, other_users  # noqa: E402,F401


def test_change_role_and_unknown_role(org, users, login):
    client = login(users["admin"])
    dev = users["developer"]
    assert post(client, f"/admin/users/{dev.id}/role", {"role": "finance"}).status_code == 302
    assert db.session.get(User, dev.id).role == "finance"
    response = post(client, f"/admin/users/{dev.id}/role", {"role": "superuser"})
    assert response.status_code == 400 and "Unknown role" in response.get_data(as_text=True)
    db.session.remove()
    assert db.session.get(User, dev.id).role == "finance"


def test_the_last_admin_cannot_be_demoted_or_deactivated(org, users, login):
    client = login(users["admin"])
    admin_id = users["admin"].id
    response = post(client, f"/admin/users/{admin_id}/role", {"role": "developer"})
    assert response.status_code == 400 and "last admin" in response.get_data(as_text=True)
    response = post(client, f"/admin/users/{admin_id}/active")
    assert response.status_code == 400 and "last admin" in response.get_data(as_text=True)
    db.session.remove()
    me = db.session.get(User, admin_id)
    assert me.role == "admin" and me.is_active
    second = make_user(org, "admin")
    assert post(client, f"/admin/users/{second.id}/active").status_code == 302  # another admin: fine
    db.session.remove()
    assert not db.session.get(User, second.id).is_active


# -- gateway keys -----------------------------------------------------------------------------------
def test_new_key_is_shown_once_and_works(client, org, users, login):
    admin = login(users["admin"])
    response = post(admin, "/keys", {"name": "ci pipeline", "scope": "inference"})
    assert response.status_code == 201
    key = re.search(r'id="new-key">([^<]+)<', response.get_data(as_text=True)).group(1)
    assert key.startswith("kw-")
    assert key not in admin.get("/keys").get_data(as_text=True)
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert _audits(org, "key.create")


def test_developer_manages_only_their_own_inference_keys(org, users, login):
    other_dev = make_user(org, "developer")
    theirs, _ = gateway_key_for(org, other_dev, name="someone else's")
    admins, _ = gateway_key_for(org, users["admin"], scope="management", name="admin mgmt")
    dev = login(users["developer"])
    response = post(dev, "/keys", {"name": "sneaky", "scope": "management"})
    assert response.status_code == 400 and "inference keys only" in response.get_data(as_text=True)
    assert post(dev, "/keys", {"name": "mine", "scope": "inference"}).status_code == 201
    listing = dev.get("/keys").get_data(as_text=True)
    assert "mine" in listing and "someone else" not in listing and "admin mgmt" not in listing
    assert post(dev, f"/keys/{theirs.id}/revoke").status_code == 403
    assert post(dev, f"/keys/{admins.id}/revoke").status_code == 403
    db.session.remove()
    assert db.session.get(ApiKey, theirs.id).revoked_at is None


def test_revoked_key_stops_working(client, org, users, login):
    row, key = gateway_key_for(org, users["developer"])
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/models", headers=headers).status_code == 200
    assert post(login(users["developer"]), f"/keys/{row.id}/revoke").status_code == 302
    assert client.get("/v1/models", headers=headers).status_code == 401


def test_bad_key_form_saves_nothing(org, users, login):
    client = login(users["admin"])
    response = post(client, "/keys", {"name": "", "scope": "root"})
    html = response.get_data(as_text=True)
    assert response.status_code == 400 and "Give the key a name" in html and "Unknown scope" in html
    assert _count(ApiKey, ApiKey.org_id == org.id) == 0


# -- prices --------------------------------------------------------------------------------------------
def _price_form(**overrides) -> dict:
    tomorrow = (utcnow() + timedelta(days=1)).date().isoformat()
    return {"provider": "openai", "model": "gpt-4o", "input": "2.00", "output": "8.00", "cached_input": "",
            "cache_write": "", "reasoning": "", "effective_from": tomorrow, "source": "", **overrides}


def test_new_price_version_closes_the_previous_one(org, users, login):
    client = login(users["admin"])
    before = db.session.scalar(select(Price).where(Price.provider == "openai", Price.model == "gpt-4o"))
    old_input = before.input_per_mtok
    response = post(client, "/admin/prices", _price_form())
    assert response.status_code == 302
    db.session.remove()
    versions = list(db.session.scalars(select(Price).where(Price.provider == "openai", Price.model == "gpt-4o")
                                       .order_by(Price.effective_from)))
    assert len(versions) == 2
    assert versions[0].input_per_mtok == old_input  # never edited in place
    assert versions[0].effective_to == versions[1].effective_from
    assert versions[1].input_per_mtok == Decimal("2.00") and versions[1].effective_to is None
    page = client.get("/admin/prices/openai/gpt-4o").get_data(as_text=True)
    assert "in force" in page and "$2.00" in page
    assert _audits(org, "price.version")


@pytest.mark.parametrize("overrides, field, message", [
    ({"input": "two"}, "input", "is not a number"), ({"output": "-1"}, "output", "zero or more"),
    ({"cached_input": "0.0000001"}, "cached_input", "6 decimal places"),
    ({"effective_from": "2026-13-45"}, "effective_from", "is not a date"),
    ({"effective_from": "2020-01-01"}, "effective_from", "cannot start in the past"),
    ({"provider": "Open AI"}, "provider", "lowercase"),
])
def test_bad_price_input_saves_nothing(org, users, login, overrides, field, message):
    client = login(users["admin"])
    count = _count(Price)
    response = post(client, "/admin/prices", _price_form(**overrides))
    assert response.status_code == 400
    assert message in _field_error(response.get_data(as_text=True), field)
    assert _count(Price) == count
    assert _count(Price, Price.effective_to.is_not(None)) == 0


def test_a_second_version_on_the_same_day_is_refused(org, users, login):
    client = login(users["admin"])
    assert post(client, "/admin/prices", _price_form()).status_code == 302
    response = post(client, "/admin/prices", _price_form(input="3.00"))
    assert response.status_code == 400 and "must start after it" in response.get_data(as_text=True)


def test_audit_log_lists_changes_with_who_made_them(org, users, login):
    client = login(users["admin"])
    post(client, "/credits/grant", {"amount": "5"})
    html = client.get("/admin/audit").get_data(as_text=True)
    assert "credits.grant" in html and users["admin"].email in html and "UTC" in html
