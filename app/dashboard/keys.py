"""Gateway keys: admins manage all of them; developers create and revoke their own inference keys."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import db
from app.cli import create_key
from app.dashboard.access import KEY_HOLDERS, audit, org_id, owned, roles
from app.dashboard.forms import KeyForm, choices
from app.gateway import auth as gateway_auth
from app.models import SCOPES, ApiKey, AuditLog, User
from app.types import utcnow

bp = Blueprint("keys", __name__, url_prefix="/keys")


OWNER_DEACTIVATED = "owner deactivated"


def revoke_key(session: Session, row: ApiKey, reason: str = "") -> None:
    """Revoke in the caller's transaction, audited with the key's prefix (and why, when it was not by hand)."""
    row.revoked_at = utcnow()
    summary = f"revoked {row.scope} key '{row.name}' ({row.prefix}…)" + (f": {reason}" if reason else "")
    detail = {"key_id": row.id, "prefix": row.prefix, **({"reason": reason} if reason else {})}
    audit(session, "key.revoke", summary, detail)


def revoke_unentitled(session: Session, user: User) -> list[ApiKey]:
    """Revoke the user's live keys that their state (active, role) no longer entitles."""
    live = session.scalars(select(ApiKey).where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
                           .order_by(ApiKey.id).with_for_update())
    lost = [k for k in live if not (user.is_active and gateway_auth.may_hold(user.role, k.scope))]
    reason = f"owner is now {user.role}" if user.is_active else OWNER_DEACTIVATED
    for row in lost:
        revoke_key(session, row, reason)
    return lost


def revocation_reasons(session: Session, org: int) -> dict[int, str]:
    """Key id → why it was revoked, for keys revoked because of their owner (from the audit trail)."""
    rows = session.scalars(select(AuditLog.detail).where(AuditLog.org_id == org, AuditLog.action == "key.revoke"))
    return {d["key_id"]: d["reason"] for d in rows if isinstance(d, dict) and d.get("reason") and "key_id" in d}


def _visible():
    query = select(ApiKey).where(ApiKey.org_id == org_id())
    if current_user.role != "admin":
        query = query.where(ApiKey.user_id == current_user.id)
    return query.order_by(ApiKey.revoked_at.is_not(None), ApiKey.created_at.desc())


def _page(form: KeyForm, status: int = 200, created: tuple[ApiKey, str] | None = None):
    session = db.session()
    keys = list(session.scalars(_visible()))
    owners = {u.id: u.email for u in session.scalars(select(User).where(User.org_id == org_id()))}
    form.scope.choices = choices([(s, s) for s in SCOPES if gateway_auth.may_hold(current_user.role, s)])
    return render_template("keys/index.html", keys=keys, owners=owners, form=form, created=created,
                           reasons=revocation_reasons(session, org_id())), status


@bp.get("")
@roles(*KEY_HOLDERS)
def index():
    return _page(KeyForm())


@bp.post("")
@roles(*KEY_HOLDERS)
def create():
    form = KeyForm()
    if not form.validate_on_submit():
        return _page(form, 400)
    if not gateway_auth.may_hold(current_user.role, form.scope.data):
        form.scope.errors = ["Developers can create inference keys only."]
        return _page(form, 400)
    session = db.session()
    row, key = create_key(session, org_id(), form.name.data.strip(), form.scope.data, user_id=current_user.id)
    audit(session, "key.create", f"created {row.scope} key '{row.name}' ({row.prefix}…)",
          {"key_id": row.id, "scope": row.scope, "prefix": row.prefix})
    session.commit()
    # The key is shown in this response only: it is stored as a hash and never rendered again.
    return _page(KeyForm(formdata=None), 201, created=(row, key))


@bp.post("/<int:key_id>/revoke")
@roles(*KEY_HOLDERS)
def revoke(key_id: int):
    row = owned(ApiKey, key_id)
    if current_user.role != "admin" and (row.user_id != current_user.id or row.scope != "inference"):
        abort(403)
    if row.revoked_at is None:
        session = db.session()
        revoke_key(session, row)
        session.commit()
        # This worker forgets it now; other workers' caches expire within POLICY_CACHE_SECONDS.
        gateway_auth.forget_cache()
        flash(f"Revoked key '{row.name}'.", "success")
    return redirect(url_for("keys.index"))
