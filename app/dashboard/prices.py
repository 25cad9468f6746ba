"""Admin › Prices: the catalog in force, every version, and new versions (never an edit in place)."""
from __future__ import annotations

from datetime import datetime, time, timezone

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import db
from app.billing.pricing import price_book
from app.dashboard.access import ADMIN, audit, roles
from app.dashboard.forms import MODEL_NAME, PROVIDER_ID, PriceForm
from app.models import Price
from app.types import utcnow

bp = Blueprint("prices", __name__, url_prefix="/admin/prices")
OPTIONAL = ("cached_input", "cache_write", "reasoning")


def add_version(session: Session, form: PriceForm) -> Price | None:
    """Close the open version and add the new one; None (with the field error set) if the date is not after it."""
    start = datetime.combine(form.effective_from.parsed, time.min, tzinfo=timezone.utc)
    if start.date() < utcnow().date():
        form.effective_from.errors = ["A new version cannot start in the past: records already priced keep their price."]
        return None
    provider, model = form.provider.data, form.model.data
    current = session.scalars(
        select(Price).where(Price.provider == provider, Price.model == model, Price.effective_to.is_(None))
        .order_by(Price.effective_from.desc()).with_for_update()
    ).first()
    if current is not None:
        if current.effective_from >= start:
            form.effective_from.errors = [
                f"The version in force starts {current.effective_from:%Y-%m-%d}; a new one must start after it."]
            return None
        current.effective_to = start
    row = Price(provider=provider, model=model, input_per_mtok=form.input.parsed, output_per_mtok=form.output.parsed,
                cached_input_per_mtok=form.cached_input.parsed, cache_write_per_mtok=form.cache_write.parsed,
                reasoning_per_mtok=form.reasoning.parsed, effective_from=start, source=form.source.data or "dashboard")
    session.add(row)
    session.flush()
    return row


def may_edit_prices() -> bool:
    """The catalog is shared by every organization: PRICE_ADMIN_ORGS names whose admins may change it.

    Empty (the default) suits the usual self-hosted case, one company with
    several organizations: every admin may. A multi-tenant installation names
    the operator's own organization, and other admins see the catalog read-only.
    """
    allowed = {s.strip() for s in current_app.config.get("PRICE_ADMIN_ORGS", "").split(",") if s.strip()}
    return not allowed or current_user.organization.slug in allowed


def _page(form: PriceForm, status: int = 200):
    rows = list(db.session.scalars(select(Price).where(Price.effective_to.is_(None))
                                   .order_by(Price.provider, Price.model)))
    return render_template("admin/prices.html", prices=rows, form=form, can_edit=may_edit_prices()), status


@bp.get("")
@roles(*ADMIN)
def index():
    form = PriceForm(formdata=None, provider=request.args.get("provider", ""), model=request.args.get("model", ""))
    return _page(form)


@bp.post("")
@roles(*ADMIN)
def create():
    if not may_edit_prices():
        abort(403)
    form = PriceForm()
    if not form.validate_on_submit():
        return _page(form, 400)
    session = db.session()
    row = add_version(session, form)
    if row is None:
        session.rollback()
        return _page(form, 400)
    audit(session, "price.version", f"{row.provider}/{row.model}: new price from {row.effective_from:%Y-%m-%d}",
          {"price_id": row.id, "input": str(row.input_per_mtok), "output": str(row.output_per_mtok),
           "effective_from": row.effective_from.isoformat()})
    session.commit()
    price_book().invalidate()
    flash(f"Added a price version for {row.provider}/{row.model} from {row.effective_from:%Y-%m-%d} UTC.", "success")
    return redirect(url_for("prices.versions", provider=row.provider, model=row.model))


@bp.get("/<provider>/<path:model>")
@roles(*ADMIN)
def versions(provider: str, model: str):
    if not (PROVIDER_ID.fullmatch(provider) and MODEL_NAME.fullmatch(model)):
        abort(404)  # no price can have this name: the form refuses it
    rows = list(db.session.scalars(select(Price).where(Price.provider == provider, Price.model == model)
                                   .order_by(Price.effective_from.desc())))
    if not rows:
        abort(404)
    return render_template("admin/price_versions.html", provider=provider, model=model, versions=rows)
