"""Gateway keys: admins manage all of them; developers create and revoke their own inference keys."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import select

from app import db
from app.cli import create_key
from app.dashboard.access import KEY_HOLDERS, audit, org_id, owned, roles
from app.dashboard.forms import KeyForm, choices
from app.gateway import auth as gateway_auth
from app.models import ApiKey, User
from app.types import utcnow

bp = Blueprint("keys", __name__, url_prefix="/keys")


def _visible():
    query = select(ApiKey).where(ApiKey.org_id == org_id())
    if current_user.role != "admin":
        query = query.where(ApiKey.user_id == current_user.id)
    return query.order_by(ApiKey.revoked_at.is_not(None), ApiKey.created_at.desc())


def _page(form: KeyForm, status: int = 200, created: tuple[ApiKey, str] | None = None):
    session = db.session()
    keys = list(session.scalars(_visible()))
    owners = {u.id: u.email for u in session.scalars(select(User).where(User.org_id == org_id()))}
    if current_user.role != "admin":
        form.scope.choices = choices([("inference", "inference")])
    return render_template("keys/index.html", keys=keys, owners=owners, form=form, created=created), status


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
    if current_user.role != "admin" and form.scope.data != "inference":
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
        row.revoked_at = utcnow()
        audit(session, "key.revoke", f"revoked {row.scope} key '{row.name}' ({row.prefix}…)",
              {"key_id": row.id, "prefix": row.prefix})
        session.commit()
        # This worker forgets it now; other workers' caches expire within POLICY_CACHE_SECONDS.
        gateway_auth.forget_cache()
        flash(f"Revoked key '{row.name}'.", "success")
    return redirect(url_for("keys.index"))
