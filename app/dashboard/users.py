"""Admin › Users: create with a password, change role, deactivate; the last admin always stays."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import db
from app.dashboard.access import ADMIN, audit, org_id, owned, roles
from app.dashboard.forms import CreateUserForm, RoleForm
from app.models import ROLES, User
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
    users = list(db.session.scalars(select(User).where(User.org_id == org_id()).order_by(User.email)))
    return render_template("admin/users.html", users=users, form=form or CreateUserForm(), roles=ROLES,
                           row_errors=row_errors or {}), status


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
    session.commit()
    flash(f"{user.email} is now {user.role}.", "success")
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
    session.commit()
    flash(f"{action.capitalize()} {user.email}.", "success")
    return redirect(url_for("users.index"))
