"""Sign-in: scrypt hashes, one generic failure message, a throttle shared through the database, rotation."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app import db
from app.dashboard import auth
from app.models import LoginThrottle, User
from app.types import utcnow
from tests.dashboard_helpers import PASSWORD, csrf_token, login, make_user, post, sign_in, users  # noqa: F401


def _throttle(email: str) -> LoginThrottle | None:
    db.session.remove()
    return db.session.scalar(select(LoginThrottle).where(LoginThrottle.email == email))


def test_each_role_signs_in_and_lands_on_the_overview(app, users):
    for role, user in users.items():
        client = app.test_client()
        response = sign_in(client, user.email)
        assert response.status_code == 302 and response.headers["Location"].endswith("/")
        page = client.get("/").get_data(as_text=True)
        assert user.email in page and f"role-{role}" in page


def test_passwords_are_stored_as_scrypt_hashes(app, users):
    stored = db.session.get(User, users["admin"].id).password_hash
    assert stored.startswith("scrypt:") and PASSWORD not in stored


def test_wrong_password_and_unknown_email_get_the_same_generic_message(app, users):
    wrong = sign_in(app.test_client(), users["admin"].email, "not the password")
    unknown = sign_in(app.test_client(), "nobody@example.com", "whatever password")
    assert wrong.status_code == unknown.status_code == 401
    assert auth.FAILED in wrong.get_data(as_text=True)
    assert auth.FAILED in unknown.get_data(as_text=True)
    assert "not the password" not in wrong.get_data(as_text=True)


def test_deactivated_user_cannot_sign_in_and_loses_the_session(app, org, users, login):
    client = login(users["developer"])
    with db.session_scope() as s:
        s.get(User, users["developer"].id).is_active = False
    assert client.get("/").status_code == 302  # the existing session ends
    assert sign_in(app.test_client(), users["developer"].email).status_code == 401


def test_account_locks_after_repeated_failures_even_for_the_right_password(app, users):
    email = users["finance"].email
    for _ in range(auth.FREE_FAILURES):
        assert sign_in(app.test_client(), email, "bad password").status_code == 401
    row = _throttle(email)
    assert row.failures == auth.FREE_FAILURES and row.locked_until > utcnow()
    response = sign_in(app.test_client(), email, PASSWORD)
    assert response.status_code == 401 and auth.FAILED in response.get_data(as_text=True)


def test_lock_expires_and_success_clears_the_counter(app, users):
    email = users["finance"].email
    for _ in range(auth.FREE_FAILURES):
        sign_in(app.test_client(), email, "bad password")
    with db.session_scope() as s:  # the lock window has passed
        s.get(LoginThrottle, email).locked_until = utcnow() - timedelta(seconds=1)
    assert sign_in(app.test_client(), email).status_code == 302
    row = _throttle(email)
    assert row.failures == 0 and row.locked_until is None


def test_lock_grows_with_further_failures_up_to_the_cap():
    assert auth.lock_for(auth.FREE_FAILURES - 1) is None
    assert auth.lock_for(auth.FREE_FAILURES) == auth.FIRST_LOCK
    assert auth.lock_for(auth.FREE_FAILURES + 1) == auth.FIRST_LOCK * 2
    assert auth.lock_for(auth.FREE_FAILURES + 30) == auth.MAX_LOCK


def test_throttle_lives_in_the_database_shared_by_every_worker(app, users):
    """Two app instances stand for two workers: failures counted by one lock the account for the other."""
    from app import create_app

    email = users["admin"].email
    second_worker = create_app(dict(app.config))
    for i in range(auth.FREE_FAILURES):
        worker = app if i % 2 else second_worker
        sign_in(worker.test_client(), email, "bad password")
    assert _throttle(email).failures == auth.FREE_FAILURES
    assert sign_in(second_worker.test_client(), email).status_code == 401


def test_session_is_rotated_at_sign_in(app, users):
    client = app.test_client()
    anonymous_token = csrf_token(client, "/login")
    with client.session_transaction() as s:
        s["planted"] = "by an attacker"
    assert sign_in(client, users["admin"].email).status_code == 302
    with client.session_transaction() as s:
        assert "planted" not in s
    assert csrf_token(client, "/usage") != anonymous_token


def test_session_cookie_flags(app, users):
    app.config["SESSION_COOKIE_SECURE"] = True
    client = app.test_client()
    token = csrf_token(client, "/login")
    response = client.post("/login", data={"email": users["admin"].email, "password": PASSWORD, "csrf_token": token},
                           base_url="https://localhost", headers={"Referer": "https://localhost/login"})
    assert response.status_code == 302
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("session="))
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Lax" in cookie


def test_next_parameter_cannot_redirect_off_site(app, users):
    client = app.test_client()
    token = csrf_token(client, "/login")
    response = client.post("/login?next=https://evil.example/x",
                           data={"email": users["admin"].email, "password": PASSWORD, "csrf_token": token})
    assert response.headers["Location"] == "/"
    client = app.test_client()
    token = csrf_token(client, "/login")
    response = client.post("/login?next=/usage", data={"email": users["admin"].email, "password": PASSWORD,
                                                        "csrf_token": token})
    assert response.headers["Location"] == "/usage"


def test_sign_out_needs_a_post_with_csrf_and_ends_the_session(app, users, login):
    client = login(users["admin"])
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400  # no CSRF token
    assert post(client, "/logout").status_code == 302
    assert client.get("/").status_code == 302


def test_inactive_user_created_inactive_cannot_sign_in(app, org):
    user = make_user(org, "admin", active=False)
    assert sign_in(app.test_client(), user.email).status_code == 401
