"""Shared fixtures and helpers for the dashboard tests: users of each role, signed-in clients, usage."""
from __future__ import annotations

import re
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from app import db
from app.billing import metering
from app.billing.metering import AttemptEvent, UsageEvent
from app.cli import create_key
from app.models import ApiKey, User
from app.security import hash_password
from tests.clock import days_ago  # noqa: F401  (the dashboard tests' date helper)

PASSWORD = "correct horse battery staple"
ROLE_NAMES = ("admin", "finance", "developer")
_TOKEN = re.compile(r'name="csrf-token" content="([^"]+)"')
_HASH = None


def password_hash() -> str:
    """One scrypt hash for every test user: hashing is deliberately slow."""
    global _HASH
    if _HASH is None:
        _HASH = hash_password(PASSWORD)
    return _HASH


def make_user(org, role: str, email: str | None = None, active: bool = True) -> User:
    with db.session_scope() as s:
        user = User(org_id=org.id, email=email or f"{role}-{uuid.uuid4().hex[:6]}@{org.slug}.test", role=role,
                    password_hash=password_hash(), is_active=active)
        s.add(user)
        s.flush()
        s.expunge(user)
    return user


@pytest.fixture
def users(org) -> dict[str, User]:
    return {role: make_user(org, role) for role in ROLE_NAMES}


@pytest.fixture
def other_org(app):
    from tests.factories import OrganizationFactory

    return OrganizationFactory()


@pytest.fixture
def other_users(other_org) -> dict[str, User]:
    return {role: make_user(other_org, role) for role in ROLE_NAMES}


def csrf_token(client, path: str = "/login") -> str:
    page = client.get(path)
    match = _TOKEN.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path} ({page.status_code})"
    return match.group(1)


def sign_in(client, email: str, password: str = PASSWORD):
    token = csrf_token(client, "/login")
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token})


def post(client, url: str, data: dict[str, Any] | None = None, **kwargs):
    """POST a form with the session's CSRF token, as the browser would."""
    token = _session_token(client)
    return client.post(url, data={**(data or {}), "csrf_token": token}, **kwargs)


def _session_token(client) -> str:
    page = client.get("/login")  # signed in: redirects; the token lives in the session either way
    if page.status_code == 302:
        page = client.get("/usage")
    match = _TOKEN.search(page.get_data(as_text=True))
    assert match, "no CSRF token in the page"
    return match.group(1)


@pytest.fixture
def login(app):
    """login(user) -> a test client signed in as that user."""

    def _login(user: User):
        client = app.test_client()
        response = sign_in(client, user.email)
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
        return client

    return _login


def gateway_key_for(org, user: User | None = None, scope: str = "inference", name: str = "k") -> tuple[ApiKey, str]:
    with db.session_scope() as s:
        row, key = create_key(s, org.id, name, scope, user_id=user.id if user else None)
        s.flush()
        s.expunge(row)
    return row, key


def record(org, *, provider: str = "openai", model: str = "gpt-4o-mini", credential: str = "byok",
           status: str = "ok", http_status: int = 200, cost: str | None = "0.0100", charge: str = "0",
           prompt_tokens: int = 1000, completion_tokens: int = 200, label: str = "", fallback_reason: str = "",
           api_key_id: int | None = None, at: datetime | None = None, latency_ms: int = 300,
           attempts: list[AttemptEvent] | None = None, request_id: str | None = None) -> str:
    """Write one usage record through the real metering seam (record, attempts, rollup, settlement)."""
    rid = request_id or "gen-" + uuid.uuid4().hex[:24]
    stamp = {} if at is None else {"created_at": at}  # none given: stamped now, as the gateway does
    event = UsageEvent(
        request_id=rid, org_id=org.id, api_key_id=api_key_id, provider=provider, model=model,
        credential=credential, status=status, http_status=http_status, **stamp, label=label,
        fallback=bool(fallback_reason),
        fallback_reason=fallback_reason, error_class="" if status == "ok" else "server_error",
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        cost=None if cost is None else Decimal(cost), cost_status="unpriced" if cost is None else "priced",
        charge=Decimal(charge), latency_ms=latency_ms,
        attempts=attempts or [AttemptEvent(provider, model, credential, label, "ok" if status == "ok" else "failed",
                                           http_status, "" if status == "ok" else "server_error", latency_ms)],
    )
    with db.session_scope() as s:
        assert metering.write(s, event)
    return rid

