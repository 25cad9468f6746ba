"""Keys follow their owner: deactivating a user or lowering their role disables the keys it no longer entitles."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app import db
from app.models import ApiKey, AuditLog, User
from tests.dashboard_helpers import gateway_key_for, login, make_user, post, users  # noqa: F401  (fixtures)
from tests.factories import grant, issue_key
from tests.helpers import chat, records


def shared_chat(client, key: str):
    """A shared-pool request, paid from the organization's credits."""
    return chat(client, key)


def api_usage(client, key: str):
    return client.get("/api/v1/usage", headers={"Authorization": f"Bearer {key}"})


def revoked(key_id: int) -> bool:
    db.session.remove()
    return db.session.get(ApiKey, key_id).revoked_at is not None


@pytest.fixture
def admin(users, login, org):
    grant(org, "10")  # so a shared-pool request that is let through succeeds
    return login(users["admin"])


def test_a_deactivated_users_keys_stop_at_once_shared_pool_and_credits_included(client, org, users, admin):
    row, key = gateway_key_for(org, users["developer"])
    assert shared_chat(client, key).status_code == 200
    assert post(admin, f"/admin/users/{users['developer'].id}/active").status_code == 302
    response = shared_chat(client, key)
    assert response.status_code == 401 and response.json["error"]["code"] == "invalid_api_key"
    assert len(records()) == 1  # the refused request reached neither a provider nor the credits
    assert revoked(row.id)


def test_an_admin_demoted_to_developer_loses_management_keys_but_keeps_inference_keys(client, org, users, admin):
    second_admin = make_user(org, "admin")
    mgmt, mgmt_key = gateway_key_for(org, second_admin, scope="management")
    inference, inference_key = gateway_key_for(org, second_admin, scope="inference")
    assert api_usage(client, mgmt_key).status_code == 200
    assert post(admin, f"/admin/users/{second_admin.id}/role", {"role": "developer"}).status_code == 302
    assert api_usage(client, mgmt_key).status_code == 401
    assert shared_chat(client, inference_key).status_code == 200
    assert revoked(mgmt.id) and not revoked(inference.id)


@pytest.mark.parametrize("old, new, lost", [
    ("admin", "finance", {"inference", "management"}),
    ("developer", "finance", {"inference"}),
    ("admin", "developer", {"management"}),
    ("developer", "admin", set()),
])
def test_each_role_change_revokes_exactly_what_the_new_role_may_not_hold(org, users, admin, old, new, lost):
    user = make_user(org, old)
    held = ("inference", "management") if old == "admin" else ("inference",)  # what the dashboard lets each create
    keys = {scope: gateway_key_for(org, user, scope=scope)[0] for scope in held}
    post(admin, f"/admin/users/{user.id}/role", {"role": new})
    assert {scope for scope, row in keys.items() if revoked(row.id)} == lost


def test_each_revocation_is_audited_with_the_key_prefix_and_the_reason(org, users, admin):
    a, _ = gateway_key_for(org, users["developer"], name="one")
    b, _ = gateway_key_for(org, users["developer"], name="two")
    post(admin, f"/admin/users/{users['developer'].id}/active")
    db.session.remove()
    rows = list(db.session.scalars(select(AuditLog).where(AuditLog.action == "key.revoke")))
    assert {r.detail["prefix"] for r in rows} == {a.prefix, b.prefix}
    assert {r.detail["reason"] for r in rows} == {"owner deactivated"}
    assert all(r.user_id == users["admin"].id and r.detail["prefix"] in r.summary for r in rows)


def test_keys_without_an_owner_and_other_users_keys_are_unaffected(client, org, users, admin):
    org_key = issue_key(org)  # created by the CLI: no owner
    other, other_key = gateway_key_for(org, users["admin"])
    post(admin, f"/admin/users/{users['developer'].id}/active")
    assert shared_chat(client, org_key).status_code == 200
    assert shared_chat(client, other_key).status_code == 200


def test_reactivation_does_not_bring_revoked_keys_back(client, org, users, admin):
    row, key = gateway_key_for(org, users["developer"])
    post(admin, f"/admin/users/{users['developer'].id}/active")
    post(admin, f"/admin/users/{users['developer'].id}/active")
    db.session.remove()
    assert db.session.get(User, users["developer"].id).is_active
    assert revoked(row.id) and shared_chat(client, key).status_code == 401


def test_the_gateway_checks_the_owner_even_when_the_key_row_was_not_revoked(client, org, users, admin):
    """Defence in depth: an account changed outside the dashboard (SQL, a script) still stops its keys."""
    dev_key = gateway_key_for(org, users["developer"])[1]
    mgmt_key = gateway_key_for(org, users["admin"], scope="management")[1]
    assert shared_chat(client, dev_key).status_code == 200 and api_usage(client, mgmt_key).status_code == 200
    with db.session_scope() as s:
        s.get(User, users["developer"].id).is_active = False
        s.get(User, users["admin"].id).role = "finance"
    assert shared_chat(client, dev_key).status_code == 401
    assert api_usage(client, mgmt_key).status_code == 401


def test_this_worker_forgets_a_cached_key_when_its_owner_is_deactivated(client, org, users, admin, app):
    app.config["POLICY_CACHE_SECONDS"] = 300.0
    _, key = gateway_key_for(org, users["developer"])
    assert shared_chat(client, key).status_code == 200  # now cached for 5 minutes
    post(admin, f"/admin/users/{users['developer'].id}/active")
    assert shared_chat(client, key).status_code == 401


def test_the_pages_say_why_a_key_was_revoked(org, users, admin):
    gateway_key_for(org, users["developer"], name="dev laptop")
    post(admin, f"/admin/users/{users['developer'].id}/active")
    keys_page = admin.get("/keys").get_data(as_text=True)
    row = re.search(r"<tr[^>]*>(?:(?!</tr>).)*dev laptop.*?</tr>", keys_page, re.S).group(0)
    assert "revoked: owner deactivated" in row
    users_page = admin.get("/admin/users").get_data(as_text=True)
    email = re.escape(users["developer"].email)
    row = re.search(rf'<tr[^>]*data-user="{email}".*?</tr>', users_page, re.S).group(0)
    assert "1 key revoked: owner deactivated" in row


def test_the_confirmation_says_the_keys_go_too(org, users, admin):
    gateway_key_for(org, users["developer"])
    response = post(admin, f"/admin/users/{users['developer'].id}/active", follow_redirects=True)
    assert "revoked 1 gateway key" in response.get_data(as_text=True)
