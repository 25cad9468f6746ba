"""Consolidated monthly invoices: a live draft from rollups, or the stored, immutable finalized one.

Pipeline: usage records -> rollups (same transaction) -> aggregated rows ->
priced lines, each rounded once (half-up, to cents) -> totals as sums of the
rounded lines. A finalized invoice is read back from its stored lines and is
never recomputed. See docs/billing.md for the rules.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Iterable, NamedTuple

from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.billing.invoice_export import to_csv, to_json  # noqa: F401  (part of this module's interface)
from app.billing.metering import lock_org_for_closing
from app.billing.money import ZERO, round_line_half_up
from app.billing.periods import PeriodError, bounds, current_period, parse_period
from app.models import AuditLog, CreditEntry, FinalizedPeriod, Invoice, InvoiceCounter, InvoiceLine, UsageRollup
from app.types import utcnow


class InvoiceError(Exception):
    """A refused invoice operation; the message is fit to show a finance user as is."""


@dataclass
class Line:
    provider: str = ""
    model: str = ""
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    amount: Decimal | None = ZERO  # rounded to cents; None: unpriced, never $0
    unrounded: Decimal | None = ZERO
    reason: str = ""  # fallback lines: the BYOK error class that caused the fallback
    credential: str = ""  # unpriced lines: who would pay


@dataclass
class ByokGroup:
    provider: str
    lines: list[Line]
    subtotal: Decimal
    platform_fee: Decimal = ZERO


@dataclass
class InvoiceView:
    org_id: int
    period: str
    status: str  # draft | finalized | void
    number: str | None
    finalized_at: datetime | None
    void_reason: str
    shared_lines: list[Line] = field(default_factory=list)
    byok_groups: list[ByokGroup] = field(default_factory=list)
    fallback_lines: list[Line] = field(default_factory=list)
    unpriced_lines: list[Line] = field(default_factory=list)
    shared_total: Decimal = ZERO
    byok_total: Decimal = ZERO
    total_spend: Decimal = ZERO
    opening_balance: Decimal = ZERO
    grants: Decimal = ZERO
    credits_used: Decimal = ZERO
    closing_balance: Decimal = ZERO
    voided_at: datetime | None = None
    currency: str = "USD"


@dataclass(frozen=True)
class InvoiceSummary:
    org_id: int
    period: str
    status: str
    number: str | None
    total_spend: Decimal
    finalized_at: datetime | None


class UsageRow(NamedTuple):
    """Rollups of one period summed per (credential, provider, model, fallback reason, cost status)."""

    credential: str
    provider: str
    model: str
    reason: str
    cost_status: str
    requests: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost: Decimal
    charged: Decimal


# -- composing lines (pure) ----------------------------------------------------------
def compose(view: InvoiceView, rows: Iterable[UsageRow]) -> InvoiceView:
    """Fill the view's lines and usage totals from aggregated rows; each line rounded once."""
    shared: dict[tuple, Line] = {}
    byok: dict[tuple, Line] = {}
    fallback: dict[tuple, Line] = {}
    unpriced: dict[tuple, Line] = {}
    for r in rows:
        if r.cost_status == "unpriced":
            _add(unpriced, (r.credential, r.provider, r.model), r, None, credential=r.credential)
        elif r.cost_status != "priced":
            continue  # failed before any provider served it: no tokens, no cost
        elif r.credential == "shared":
            _add(shared, (r.provider, r.model), r, r.charged)
            if r.reason:
                _add(fallback, (r.reason,), r, r.charged, reason=r.reason)
        else:
            _add(byok, (r.provider, r.model), r, r.cost)
    for line in (*shared.values(), *byok.values(), *fallback.values()):
        line.amount = round_line_half_up(line.unrounded)
    view.shared_lines = [shared[k] for k in sorted(shared)]
    view.fallback_lines = [fallback[k] for k in sorted(fallback)]
    view.unpriced_lines = [unpriced[k] for k in sorted(unpriced)]
    view.byok_groups = group_byok([byok[k] for k in sorted(byok)])
    view.shared_total = sum((line.amount for line in view.shared_lines), ZERO)
    view.byok_total = sum((g.subtotal for g in view.byok_groups), ZERO)
    view.total_spend = view.shared_total + view.byok_total
    return view


def _add(target: dict, key: tuple, r: UsageRow, amount: Decimal | None, **extra) -> None:
    line = target.get(key)
    if line is None:
        provider, model = (r.provider, r.model) if len(key) > 1 else ("", "")
        line = target[key] = Line(provider, model, amount=None if amount is None else ZERO,
                                  unrounded=None if amount is None else ZERO, **extra)
    line.requests += r.requests
    line.input_tokens += r.input_tokens
    line.output_tokens += r.output_tokens
    line.cached_tokens += r.cached_tokens
    if amount is not None:
        line.unrounded += amount


def group_byok(lines: list[Line]) -> list[ByokGroup]:
    by_provider: dict[str, list[Line]] = defaultdict(list)
    for line in lines:
        by_provider[line.provider].append(line)
    return [ByokGroup(p, ls, sum((x.amount for x in ls), ZERO)) for p, ls in sorted(by_provider.items())]


# -- reading ---------------------------------------------------------------------------
def usage_rows(session: Session, org_id: int, period: str) -> list[UsageRow]:
    r = UsageRollup
    stmt = (
        select(r.credential, r.provider, r.model, r.fallback_reason, r.cost_status, func.sum(r.requests),
               func.sum(r.prompt_tokens), func.sum(r.completion_tokens), func.sum(r.cached_tokens),
               func.sum(r.cost), func.sum(r.charged))
        .where(r.org_id == org_id, r.billing_period == period)
        .group_by(r.credential, r.provider, r.model, r.fallback_reason, r.cost_status)
    )
    return [UsageRow(*row[:5], *(int(v or 0) for v in row[5:9]), money_sum(row[9]), money_sum(row[10]))
            for row in session.execute(stmt)]


def money_sum(value) -> Decimal:
    """A SUM over a Money column (the SQL sum skips the type's result processing on SQLite)."""
    if value is None:
        return ZERO
    if isinstance(value, Decimal):
        return value
    return Decimal(int(value)).scaleb(-10)


def draft_view(session: Session, org_id: int, period: str) -> InvoiceView:
    view = compose(InvoiceView(org_id, period, "draft", None, None, ""), usage_rows(session, org_id, period))
    _credits(session, view)
    return view


def _credits(session: Session, view: InvoiceView) -> None:
    """Credits as billed: grants and adjustments by date, usage as the rounded shared lines of each period."""
    start, end = bounds(view.period)
    kinds = CreditEntry.kind.in_(("grant", "adjustment"))
    granted = select(
        func.sum(case((CreditEntry.created_at < start, CreditEntry.amount), else_=None)),
        func.sum(case((CreditEntry.created_at >= start, CreditEntry.amount), else_=None)),
    ).where(CreditEntry.org_id == view.org_id, kinds, CreditEntry.created_at < end)
    before, during = session.execute(granted).one()
    view.opening_balance = money_sum(before) - charged_before(session, view.org_id, view.period)
    view.grants = money_sum(during)
    view.credits_used = view.shared_total
    view.closing_balance = view.opening_balance + view.grants - view.credits_used


def charged_before(session: Session, org_id: int, period: str) -> Decimal:
    r = UsageRollup
    stmt = (
        select(func.sum(r.charged))
        .where(r.org_id == org_id, r.billing_period < period, r.credential == "shared", r.cost_status == "priced")
        .group_by(r.billing_period, r.provider, r.model)
    )
    return sum((round_line_half_up(money_sum(v)) for v in session.scalars(stmt)), ZERO)


def stored_invoice(session: Session, org_id: int, period: str) -> Invoice | None:
    """The finalized invoice of the period, or else its latest void one."""
    return session.scalars(
        select(Invoice).where(Invoice.org_id == org_id, Invoice.period == period, Invoice.status != "draft")
        .order_by((Invoice.status == "finalized").desc(), Invoice.id.desc())
    ).first()


def invoice_view(session: Session, org_id: int, period: str) -> InvoiceView:
    parse_period(period)
    stored = stored_invoice(session, org_id, period)
    return stored_view(stored) if stored is not None else draft_view(session, org_id, period)


def invoice_view_by_number(session: Session, org_id: int, number: str) -> InvoiceView | None:
    stored = session.scalar(select(Invoice).where(Invoice.org_id == org_id, Invoice.number == number))
    return stored_view(stored) if stored is not None and stored.status != "draft" else None


def stored_view(inv: Invoice) -> InvoiceView:
    view = InvoiceView(
        inv.org_id, inv.period, inv.status, inv.number, inv.finalized_at, inv.void_reason,
        shared_total=_cents(inv.shared_total), byok_total=_cents(inv.byok_total),
        total_spend=_cents(inv.total_spend), opening_balance=inv.opening_balance, grants=inv.grants,
        credits_used=_cents(inv.credits_used), closing_balance=inv.closing_balance, voided_at=inv.voided_at,
        currency=inv.currency,
    )
    sections: dict[str, list[Line]] = defaultdict(list)
    for row in inv.lines:
        sections[row.section].append(Line(
            row.provider, row.model, row.requests, row.input_tokens, row.output_tokens, row.cached_tokens,
            _cents(row.amount), row.unrounded_amount, row.reason, row.credential))
    view.shared_lines, view.fallback_lines = sections["shared"], sections["fallback"]
    view.unpriced_lines, view.byok_groups = sections["unpriced"], group_byok(sections["byok"])
    return view


def _cents(value: Decimal | None) -> Decimal | None:
    return None if value is None else round_line_half_up(value)


def list_invoices(session: Session, org_id: int) -> list[InvoiceSummary]:
    """Every period with usage or a stored invoice, newest first; a draft where nothing is stored."""
    summaries = [
        InvoiceSummary(org_id, i.period, i.status, i.number, _cents(i.total_spend), i.finalized_at)
        for i in session.scalars(select(Invoice).where(Invoice.org_id == org_id, Invoice.status != "draft"))
    ]
    stored = {s.period for s in summaries}
    for period, total in draft_totals(session, org_id).items():
        if period not in stored:
            summaries.append(InvoiceSummary(org_id, period, "draft", None, total, None))
    order = {"draft": 0, "finalized": 1, "void": 2}
    summaries.sort(key=lambda s: (s.period, -order[s.status], s.number or ""), reverse=True)
    return summaries


def draft_totals(session: Session, org_id: int) -> dict[str, Decimal]:
    """Total spend per period with usage: rounded lines summed, in one grouped query."""
    r = UsageRollup
    amount = case((r.credential == "shared", r.charged), else_=r.cost)
    stmt = (
        select(r.billing_period, func.sum(amount)).where(r.org_id == org_id, r.cost_status != "none")
        .group_by(r.billing_period, r.credential, r.provider, r.model, r.cost_status)
        .having(func.sum(r.requests) > 0)
    )
    totals: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for period, value in session.execute(stmt):
        totals[period] += round_line_half_up(money_sum(value))
    return dict(totals)


# -- finalizing and voiding ------------------------------------------------------------------
def finalize(session: Session, org_id: int, period: str, user_id: int | None = None,
             allow_open: bool = False, now: datetime | None = None) -> Invoice:
    """Close the period: gapless number, stored totals and lines, immutable from here on.

    `now` (default: the clock) decides which periods have ended, the number's year and finalized_at.
    """
    try:
        parse_period(period)
    except PeriodError as exc:
        raise InvoiceError(str(exc)) from None
    now = now or utcnow()
    if period > current_period(now):
        raise InvoiceError(f"period {period} has not started yet")
    if period == current_period(now) and not allow_open:
        raise InvoiceError(f"period {period} is still open; finalize it after the month ends (UTC)")
    lock_org_for_closing(session, org_id)
    done = stored_invoice(session, org_id, period)
    if done is not None and done.status == "finalized":
        raise InvoiceError(f"period {period} is already finalized as {done.number}")
    view = draft_view(session, org_id, period)
    inv = Invoice(
        org_id=org_id, period=period, status="draft", number=_next_number(session, now.year),
        shared_total=view.shared_total, byok_total=view.byok_total, total_spend=view.total_spend,
        opening_balance=view.opening_balance, grants=view.grants, credits_used=view.credits_used,
        closing_balance=view.closing_balance, summary={"rounding": "half-up per line, to cents"},
        void_reason="",
    )
    session.add(inv)
    session.flush()
    session.add_all(_line_rows(inv.id, view))
    session.flush()  # the lines must be in before the status leaves 'draft' (trigger of 0002)
    inv.status, inv.finalized_at, inv.finalized_by = "finalized", now, user_id
    closed = session.scalar(select(FinalizedPeriod).where(FinalizedPeriod.org_id == org_id,
                                                          FinalizedPeriod.period == period))
    if closed is None:
        session.add(FinalizedPeriod(org_id=org_id, period=period, invoice_id=inv.id, note=""))
    else:
        closed.invoice_id = inv.id
    session.add(AuditLog(org_id=org_id, user_id=user_id, action="invoice.finalize",
                         detail={"number": inv.number, "period": period}, summary=f"finalized {inv.number}"))
    session.flush()
    return inv


def _line_rows(invoice_id: int, view: InvoiceView) -> list[InvoiceLine]:
    sections = [("shared", view.shared_lines), ("byok", [x for g in view.byok_groups for x in g.lines]),
                ("fallback", view.fallback_lines), ("unpriced", view.unpriced_lines)]
    rows, position = [], 0
    for section, lines in sections:
        for x in lines:
            rows.append(InvoiceLine(
                invoice_id=invoice_id, position=position, section=section, provider=x.provider, model=x.model,
                reason=x.reason, credential=x.credential, requests=x.requests, input_tokens=x.input_tokens,
                output_tokens=x.output_tokens, cached_tokens=x.cached_tokens, unrounded_amount=x.unrounded,
                amount=x.amount))
            position += 1
    return rows


def _next_number(session: Session, year: int) -> str:
    """KW-YYYY-NNNNNN from the year's counter row, locked by the UPDATE until this transaction ends."""
    bump = (update(InvoiceCounter).where(InvoiceCounter.year == year)
            .values(last_number=InvoiceCounter.last_number + 1).returning(InvoiceCounter.last_number))
    for _ in range(3):
        number = session.execute(bump).scalar_one_or_none()
        if number is not None:
            return f"KW-{year:04d}-{number:06d}"
        try:
            with session.begin_nested():
                session.add(InvoiceCounter(year=year, last_number=0))
        except IntegrityError:
            pass  # another finalizer created the row first; bump it
    raise InvoiceError(f"could not allocate an invoice number for {year}")


def void(session: Session, number: str, reason: str, user_id: int | None = None,
         org_id: int | None = None) -> Invoice:
    """finalized -> void, the one change the database allows; a correction is a new invoice and number."""
    reason = (reason or "").strip()
    if not reason:
        raise InvoiceError("a void needs a reason")
    stmt = select(Invoice).where(Invoice.number == number)
    if org_id is not None:
        stmt = stmt.where(Invoice.org_id == org_id)
    inv = session.scalar(stmt)
    if inv is None:
        raise InvoiceError(f"no invoice numbered '{number[:40]}'")
    if inv.status != "finalized":
        raise InvoiceError(f"invoice {number} is {inv.status}; only a finalized invoice can be voided")
    inv.status, inv.voided_at, inv.void_reason = "void", utcnow(), reason[:2000]
    session.add(AuditLog(org_id=inv.org_id, user_id=user_id, action="invoice.void",
                         detail={"number": number, "reason": reason[:2000]}, summary=f"voided {number}"))
    session.flush()
    return inv
