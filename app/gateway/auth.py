"""Gateway-key authentication, with a short per-worker cache so a hot key costs no query."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from app import db
from app.gateway.errors import AuthenticationFailed, PermissionDenied
from app.gateway.policy import FallbackPolicy
from app.models import ApiKey, Organization, User
from app.security import hash_gateway_key


@dataclass(frozen=True, slots=True)
class Caller:
    api_key_id: int
    org_id: int
    scope: str
    policy: FallbackPolicy
    markup_percent: Decimal


# Which roles may hold a key of each scope. A key is as good as its owner: a deactivated
# owner, or one whose role no longer allows the scope, makes it refuse (keys without an owner,
# issued from the CLI for the organization, answer to no user).
SCOPE_HOLDERS = {"inference": ("admin", "developer"), "management": ("admin",)}


def may_hold(role: str, scope: str) -> bool:
    return role in SCOPE_HOLDERS.get(scope, ())


_cache: dict[str, tuple[float, Caller | None]] = {}
_lock = threading.Lock()


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(header: str | None, scope: str, config: dict[str, Any]) -> Caller:
    token = bearer_token(header)
    if token is None:
        raise AuthenticationFailed("missing gateway API key: send 'Authorization: Bearer <key>'")
    digest = hash_gateway_key(token)
    ttl = float(config["POLICY_CACHE_SECONDS"])
    now = time.monotonic()
    hit = _cache.get(digest)
    if hit is not None and hit[0] > now:
        caller = hit[1]
    else:
        caller = _load(digest, bool(config["PLATFORM_FALLBACK_DEFAULT"]))
        with _lock:
            if len(_cache) > 10000:
                _cache.clear()
            _cache[digest] = (now + ttl, caller)
    if caller is None:
        raise AuthenticationFailed("invalid or revoked gateway API key")
    if caller.scope != scope:
        raise PermissionDenied(f"this gateway key has scope '{caller.scope}'; this endpoint needs '{scope}'")
    return caller


def _load(digest: str, platform_default: bool) -> Caller | None:
    # A short transaction of its own: the request session would otherwise hold a pooled
    # connection through the whole upstream call (and the credit reservation needs a second one).
    with db.session_scope() as session:
        row = session.execute(
            select(ApiKey.id, ApiKey.org_id, ApiKey.scope, ApiKey.revoked_at,
                   Organization.fallback_policy, Organization.shared_markup_percent,
                   User.is_active.label("owner_active"), User.role.label("owner_role"))
            .join(Organization, Organization.id == ApiKey.org_id)
            .outerjoin(User, User.id == ApiKey.user_id)
            .where(ApiKey.key_hash == digest)
        ).first()
    if row is None or row.revoked_at is not None:
        return None
    # Defence in depth: the dashboard revokes these keys when the owner changes, but an account
    # changed any other way (SQL, a script) must not leave them working.
    if row.owner_role is not None and not (row.owner_active and may_hold(row.owner_role, row.scope)):
        return None
    return Caller(row.id, row.org_id, row.scope, FallbackPolicy.from_json(row.fallback_policy, platform_default),
                  row.shared_markup_percent or Decimal(0))


def forget_cache() -> None:
    """Drop cached keys and policies (tests, and after admin changes in this worker)."""
    with _lock:
        _cache.clear()
