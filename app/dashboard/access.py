"""Who may open what: role checks, organization scoping and the audit trail."""
from __future__ import annotations

from functools import wraps
from typing import Any, Callable, TypeVar

from flask import abort, current_app
from flask_login import current_user
from sqlalchemy.orm import Session

from app import db
from app.gateway.auth import SCOPE_HOLDERS
from app.models import ROLES, AuditLog
from app.params import MAX_ROW_ID, row_id

EVERYONE = ROLES
FINANCE = ("admin", "finance")
ADMIN = ("admin",)
# Who may hold a key of any scope (the gateway refuses a key its owner may no longer hold).
KEY_HOLDERS = tuple(dict.fromkeys(role for holders in SCOPE_HOLDERS.values() for role in holders))

T = TypeVar("T")


def roles(*allowed: str) -> Callable:
    """Require a signed-in user with one of these roles: anonymous → login page, other roles → 403."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any):
            if not current_user.is_authenticated:
                return current_app.login_manager.unauthorized()
            if current_user.role not in allowed:
                abort(403)
            return view(*args, **kwargs)

        guarded.allowed_roles = allowed  # type: ignore[attr-defined]
        return guarded

    return decorate


def org_id() -> int:
    return current_user.org_id


def owned(model: type[T], object_id: Any) -> T:
    """The object with this id in the caller's organization; another organization's answers 404."""
    if isinstance(object_id, int) and not 1 <= object_id <= MAX_ROW_ID:
        abort(404)  # no such row, and SQLite cannot even bind a number this large
    obj = db.session.get(model, object_id)
    if obj is None or getattr(obj, "org_id", None) != current_user.org_id:
        abort(404)
    return obj


def before_id(args) -> int | None:
    """The `before` cursor of a list paged by id (newest first): None for the first page, 400 if not an id."""
    raw = args.get("before", "")
    if not raw:
        return None
    value = row_id(raw)
    if value is None:
        abort(400, description="query parameter 'before' must be a row id from a page link (a whole number)")
    return value


def audit(session: Session, action: str, summary: str, detail: dict[str, Any] | None = None) -> None:
    """Record who changed what, in the same transaction as the change."""
    session.add(AuditLog(org_id=current_user.org_id, user_id=current_user.id, action=action,
                         summary=summary, detail=detail or {}))
