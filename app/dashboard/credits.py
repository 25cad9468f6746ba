"""Credits: balance, reserved, the ledger, and grants (admin)."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from app import db
from app.billing import ledger
from app.dashboard.access import ADMIN, FINANCE, audit, before_id, org_id, roles
from app.dashboard.formatting import usd
from app.dashboard.forms import GrantForm
from app.models import CreditEntry, User

bp = Blueprint("credits", __name__, url_prefix="/credits")
PAGE_SIZE = 100


def _page(form: GrantForm, status: int = 200):
    session = db.session()
    balance, reserved = ledger.balance_of(session, org_id())
    where = [CreditEntry.org_id == org_id()]
    before = before_id(request.args)
    if before is not None:
        where.append(CreditEntry.id < before)
    entries = list(session.scalars(select(CreditEntry).where(*where).order_by(CreditEntry.id.desc())
                                   .limit(PAGE_SIZE + 1)))
    more = len(entries) > PAGE_SIZE
    entries = entries[:PAGE_SIZE]
    users = {u.id: u.email for u in session.scalars(select(User).where(User.org_id == org_id()))}
    return render_template("credits/index.html", balance=balance, reserved=reserved, entries=entries, users=users,
                           form=form, next_before=entries[-1].id if more else None), status


@bp.get("")
@roles(*FINANCE)
def index():
    return _page(GrantForm())


@bp.post("/grant")
@roles(*ADMIN)
def grant():
    form = GrantForm()
    if not form.validate_on_submit():
        return _page(form, 400)
    session = db.session()
    amount = form.amount.parsed
    entry = ledger.grant(session, org_id(), amount, note=form.note.data or "", user_id=current_user.id)
    audit(session, "credits.grant", f"granted {usd(amount)}",
          {"amount": str(amount), "note": form.note.data or "", "balance_after": str(entry.balance_after)})
    session.commit()
    flash(f"Granted {usd(amount)}. The balance is now {usd(entry.balance_after)}.", "success")
    return redirect(url_for("credits.index"))
