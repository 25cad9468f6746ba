"""Admin › Users: create with a password, change role, deactivate; the last admin always stays."""
from __future__ import annotations

from collections import Counter
from typing import Any

from flask import Blueprint, flash, redirect, render_template, url_for
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import db
from app.dashboard.access import ADMIN, audit, org_id, owned, roles
from app.dashboard.forms import CreateUserForm, RoleForm
from app.dashboard.keys import revocation_reasons, revoke_unentitled
from app.gateway import auth as gateway_auth
from app.models import ROLES, ApiKey, User
from app.security import hash_password

bp = Blueprint("users", __name__, url_prefix="/admin/users")


def create_user(session: Session, org: int, email: str, role: str, password: str) -> User:
    """A dashboard user (also used by seeding); raises ValueError for an unknown role."""
    if role not in ROLES:
        raise ValueError(f"unknown role '{role}'")
    user = User(org_id=org, email=email.strip().lower(), role=role, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


def other_active_admins(session: Session, user: User) -> int:
    """Active admins of the user's organization besides the user, rows locked so two demotions cannot race."""
    ids = session.scalars(
        select(User.id).where(User.org_id == user.org_id, User.role == "admin", User.is_active.is_(True),
                              User.id != user.id).with_for_update()
    ).all()
    return len(ids)


def _page(form: CreateUserForm | None = None, status: int = 200, row_errors: dict[int, str] | None = None):
    session = db.session()
    users = list(session.scalars(select(User).where(User.org_id == org_id()).order_by(User.email)))
    return render_template("admin/users.html", users=users, form=form or CreateUserForm(), roles=ROLES,
                           row_errors=row_errors or {}, keys=_key_summary(session)), status


def _key_summary(session: Session) -> dict[int, dict[str, Any]]:
    """Per user: live keys, and keys revoked because of a change to the user, counted by reason."""
    reasons = revocation_reasons(session, org_id())
    out: dict[int, dict[str, Any]] = {}
    for key_id, user_id, revoked_at in session.execute(
            select(ApiKey.id, ApiKey.user_id, ApiKey.revoked_at)
            .where(ApiKey.org_id == org_id(), ApiKey.user_id.is_not(None))):
        entry = out.setdefault(user_id, {"live": 0, "revoked": Counter()})
        if revoked_at is None:
            entry["live"] += 1
        elif key_id in reasons:
            entry["revoked"][reasons[key_id]] += 1
    return out


@bp.get("")
@roles(*ADMIN)
def index():
    return _page()


@bp.post("")
@roles(*ADMIN)
def create():
    form = CreateUserForm()
    if not form.validate_on_submit():
        return _page(form, 400)
    session = db.session()
    if session.scalar(select(User.id).where(User.email == form.email.data)) is not None:
        form.email.errors = ["A user with this email already exists."]
        return _page(form, 400)
    try:
        user = create_user(session, org_id(), form.email.data, form.role.data, form.password.data)
        audit(session, "user.create", f"created {user.role} {user.email}", {"user_id": user.id, "role": user.role})
        session.commit()
    except IntegrityError:  # the same email created concurrently
        session.rollback()
        form.email.errors = ["A user with this email already exists."]
        return _page(form, 400)
    flash(f"Created {user.email} ({user.role}).", "success")
    return redirect(url_for("users.index"))


@bp.post("/<int:user_id>/role")
@roles(*ADMIN)
def change_role(user_id: int):
    session = db.session()
    user = owned(User, user_id)
    form = RoleForm()
    if not form.validate_on_submit():
        return _page(status=400, row_errors={user.id: "; ".join(form.role.errors) or "Invalid form."})
    if user.role == form.role.data:
        return redirect(url_for("users.index"))
    if user.role == "admin" and user.is_active and other_active_admins(session, user) == 0:
        session.rollback()
        return _page(status=400, row_errors={user.id: "This is the last admin: make someone else admin first."})
    old = user.role
    user.role = form.role.data
    audit(session, "user.role", f"{user.email}: {old} → {user.role}", {"user_id": user.id, "from": old, "to": user.role})
    lost = revoke_unentitled(session, user)
    session.commit()
    _after_revocation(f"{user.email} is now {user.role}", lost)
    return redirect(url_for("users.index"))


@bp.post("/<int:user_id>/active")
@roles(*ADMIN)
def toggle_active(user_id: int):
    session = db.session()
    user = owned(User, user_id)
    if user.is_active and user.role == "admin" and other_active_admins(session, user) == 0:
        session.rollback()
        return _page(status=400, row_errors={user.id: "This is the last admin: it cannot be deactivated."})
    user.is_active = not user.is_active
    action = "reactivated" if user.is_active else "deactivated"
    audit(session, "user.active", f"{action} {user.email}", {"user_id": user.id, "active": user.is_active})
    # Reactivation brings no key back: a revoked key stays revoked, the user creates new ones.
    lost = revoke_unentitled(session, user)
    session.commit()
    _after_revocation(f"{action.capitalize()} {user.email}", lost)
    return redirect(url_for("users.index"))


def _after_revocation(done: str, lost: list) -> None:
    if lost:
        # This worker forgets the keys now; every other worker within POLICY_CACHE_SECONDS.
        gateway_auth.forget_cache()
        names = ", ".join(f"{k.prefix}…" for k in lost)
        done += f"; revoked {len(lost)} gateway key{'s' if len(lost) > 1 else ''} it no longer entitles ({names})"
    flash(done + ".", "success")
