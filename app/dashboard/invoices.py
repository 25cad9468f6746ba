"""Invoices: list, detail, printable view, CSV, finalize (admin, finance) and void (admin)."""
from __future__ import annotations

from flask import Blueprint, Response, abort, flash, redirect, render_template, url_for
from flask_login import current_user

from app import csvfile, db, params
from app.billing import invoicing
from app.billing.periods import current_period
from app.dashboard.access import ADMIN, FINANCE, org_id, roles
from app.dashboard.forms import VoidForm

bp = Blueprint("invoices", __name__, url_prefix="/invoices")


def _view(period: str):
    # A period that has not started has no invoice, even a draft (and 9999-12 would end past the calendar).
    if params.period(period) is None or period > current_period():
        abort(404)
    return invoicing.invoice_view(db.session(), org_id(), period)


def _by_number(number: str):
    view = invoicing.invoice_view_by_number(db.session(), org_id(), number) if params.invoice_number(number) else None
    if view is None:
        abort(404)
    return view


def _can_finalize(view) -> bool:
    return (current_user.role in FINANCE and view.status in ("draft", "void")
            and view.period < current_period())


def _detail(view, void_form: VoidForm | None = None, status: int = 200, by_number: bool = False):
    return render_template("invoices/detail.html", view=view, void_form=void_form or VoidForm(),
                           can_finalize=_can_finalize(view), by_number=by_number,
                           can_void=current_user.role in ADMIN and view.status == "finalized"), status


@bp.get("")
@roles(*FINANCE)
def index():
    return render_template("invoices/index.html", invoices=invoicing.list_invoices(db.session(), org_id()),
                           current=current_period())


@bp.get("/<period>")
@roles(*FINANCE)
def detail(period: str):
    return _detail(_view(period))


@bp.get("/number/<number>")
@roles(*FINANCE)
def by_number(number: str):
    return _detail(_by_number(number), by_number=True)


@bp.get("/<period>/print")
@roles(*FINANCE)
def printable(period: str):
    return render_template("invoices/print.html", view=_view(period))


@bp.get("/number/<number>/print")
@roles(*FINANCE)
def printable_by_number(number: str):
    return render_template("invoices/print.html", view=_by_number(number))


def _csv(view) -> Response:
    return csvfile.attachment(invoicing.to_csv(view), f"invoice_{view.number or 'draft'}_{view.period}.csv")


@bp.get("/<period>/invoice.csv")
@roles(*FINANCE)
def csv_download(period: str):
    return _csv(_view(period))


@bp.get("/number/<number>/invoice.csv")
@roles(*FINANCE)
def csv_by_number(number: str):
    return _csv(_by_number(number))


@bp.get("/<period>/finalize")
@roles(*FINANCE)
def confirm_finalize(period: str):
    view = _view(period)
    if not _can_finalize(view):
        flash(_why_not_final(view), "error")
        return redirect(url_for("invoices.detail", period=period))
    return render_template("invoices/finalize.html", view=view)


def _why_not_final(view) -> str:
    if view.status == "finalized":
        return f"{view.period} is already finalized as {view.number}."
    return f"{view.period} is still open; it can be finalized after the month ends (UTC)."


@bp.post("/<period>/finalize")
@roles(*FINANCE)
def finalize(period: str):
    _view(period)  # 404 for a malformed period
    session = db.session()
    try:
        invoice = invoicing.finalize(session, org_id(), period, user_id=current_user.id)
        session.commit()
    except invoicing.InvoiceError as exc:
        session.rollback()
        flash(f"Not finalized: {exc}.", "error")
        return redirect(url_for("invoices.detail", period=period))
    flash(f"Finalized {period} as invoice {invoice.number}. It can no longer change.", "success")
    return redirect(url_for("invoices.detail", period=period))


@bp.post("/number/<number>/void")
@roles(*ADMIN)
def void(number: str):
    view = _by_number(number)
    form = VoidForm()
    if not form.validate_on_submit():
        return _detail(view, form, 400, by_number=True)
    session = db.session()
    try:
        invoicing.void(session, view.number, form.reason.data, user_id=current_user.id, org_id=org_id())
        session.commit()
    except invoicing.InvoiceError as exc:
        session.rollback()
        form.reason.errors = [str(exc)]
        return _detail(view, form, 400, by_number=True)
    flash(f"Voided invoice {number}. Finalize the period again to issue a corrected invoice.", "success")
    return redirect(url_for("invoices.by_number", number=number))
