"""Finalizing and voiding: gapless numbers, immutability in the database, late records, the period lock."""
from __future__ import annotations

import re
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from app import db
from app.billing import invoicing, metering
from app.billing.invoicing import InvoiceError, finalize, invoice_view, void
from app.billing.periods import next_period
from app.models import FinalizedPeriod, Invoice, InvoiceLine, UsageRecord
from tests import clock
from tests.factories import OrganizationFactory
from tests.test_billing_support import grant, month_start, period_ago, record, run_cli, usage_event


def nth_number(n: int) -> str:
    """The n-th invoice number of the year the invoice is finalized in (the frozen clock's)."""
    return f"KW-{clock.now().year}-{n:06d}"


def close(org_id: int, period: str, **kw) -> Invoice:
    with db.session_scope() as session:
        return finalize(session, org_id, period, **kw)


def view(org_id: int, period: str):
    db.session.remove()
    return invoice_view(db.session(), org_id, period)


def seed(org) -> None:
    grant(org.id, "100", at=month_start(3))
    at = month_start(1) + timedelta(days=2)
    record(usage_event(org.id, model="gpt-4o", cost="1.005", at=at))
    record(usage_event(org.id, model="gpt-4o", cost="0.5", at=at, reason="timeout"))
    record(usage_event(org.id, credential="byok", provider="anthropic", model="claude-haiku-4-5", cost="3.333",
                       at=at))
    record(usage_event(org.id, credential="byok", model="unknown-model", cost=None, at=at))


def test_finalize_stores_lines_and_totals_equal_to_the_draft(org):
    seed(org)
    draft = view(org.id, period_ago(1))
    inv = close(org.id, period_ago(1))
    assert inv.number == nth_number(1)
    final = view(org.id, period_ago(1))
    assert final.status == "finalized" and final.number == inv.number and final.finalized_at is not None
    for name in ("shared_total", "byok_total", "total_spend", "opening_balance", "grants", "credits_used",
                 "closing_balance"):
        assert getattr(final, name) == getattr(draft, name), name
    assert invoicing.to_json(final)["shared"] == invoicing.to_json(draft)["shared"]
    assert invoicing.to_json(final)["byok"] == invoicing.to_json(draft)["byok"]
    assert invoicing.to_json(final)["fallback"] == invoicing.to_json(draft)["fallback"]
    assert [x.model for x in final.unpriced_lines] == ["unknown-model"]
    assert final.unpriced_lines[0].amount is None


def test_late_record_goes_to_the_next_open_period_and_the_invoice_does_not_move(instant, org):
    seed(org)
    inv = close(org.id, period_ago(1))
    late = usage_event(org.id, credential="byok", model="gpt-4o", cost="7", at=month_start(1) + timedelta(days=9))
    record(late)
    db.session.remove()
    stored = db.session.scalar(select(UsageRecord).where(UsageRecord.request_id == late.request_id))
    assert stored.billing_period == period_ago(0)
    assert view(org.id, period_ago(1)).total_spend == inv.total_spend
    assert view(org.id, period_ago(0)).byok_total == Decimal("7.00")


def test_late_record_skips_every_finalized_month(instant, org):
    for months_ago in (2, 1):
        record(usage_event(org.id, credential="byok", cost="1", at=month_start(months_ago)))
        close(org.id, period_ago(months_ago))
    late = usage_event(org.id, credential="byok", cost="1", at=month_start(2) + timedelta(days=1))
    record(late)
    with db.session_scope() as session:
        assert session.scalar(select(UsageRecord.billing_period)
                              .where(UsageRecord.request_id == late.request_id)) == period_ago(0)


def test_current_month_is_refused_unless_allowed_and_twice_is_refused(instant, org):
    record(usage_event(org.id, credential="byok", cost="1"))
    with pytest.raises(InvoiceError, match="still open"):
        close(org.id, period_ago(0))
    with pytest.raises(InvoiceError, match="not started"):
        close(org.id, next_period(period_ago(0)))
    close(org.id, period_ago(0), allow_open=True)
    with pytest.raises(InvoiceError, match="already finalized"):
        close(org.id, period_ago(0), allow_open=True)


def test_numbers_are_gapless_across_orgs_refusals_and_rollbacks(org):
    other = OrganizationFactory()
    assert close(org.id, period_ago(2)).number == nth_number(1)
    with pytest.raises(InvoiceError):
        close(org.id, period_ago(2))
    with db.session_scope() as session:  # a finalize whose transaction rolls back takes no number
        finalize(session, other.id, period_ago(2))
        session.rollback()
    assert close(other.id, period_ago(2)).number == nth_number(2)
    assert close(org.id, period_ago(1)).number == nth_number(3)
    with db.session_scope() as session:
        numbers = sorted(session.scalars(select(Invoice.number)))
    assert numbers == [nth_number(n) for n in (1, 2, 3)]


def test_void_then_correction_gets_a_new_number(org):
    seed(org)
    first = close(org.id, period_ago(1))
    with pytest.raises(InvoiceError, match="reason"):
        with db.session_scope() as session:
            void(session, first.number, "  ")
    with db.session_scope() as session:
        void(session, first.number, "wrong customer reference")
    voided = view(org.id, period_ago(1))
    assert voided.status == "void" and voided.void_reason == "wrong customer reference"
    assert voided.total_spend == first.total_spend  # a void changes nothing but its status
    with pytest.raises(InvoiceError, match="only a finalized"):
        with db.session_scope() as session:
            void(session, first.number, "again")
    second = close(org.id, period_ago(1))
    assert second.number == nth_number(2)
    assert view(org.id, period_ago(1)).number == second.number
    with db.session_scope() as session:
        assert session.scalar(select(FinalizedPeriod.invoice_id)
                              .where(FinalizedPeriod.org_id == org.id)) == second.id
    summaries = invoicing.list_invoices(db.session(), org.id)
    assert [(s.period, s.status, s.number) for s in summaries] == [
        (period_ago(1), "finalized", second.number), (period_ago(1), "void", first.number)]


@pytest.mark.parametrize("statement", [
    "UPDATE invoices SET total_spend = 0 WHERE id = :id",
    "UPDATE invoices SET status = 'draft' WHERE id = :id",
    "DELETE FROM invoices WHERE id = :id",
    "UPDATE invoice_lines SET amount = 0 WHERE invoice_id = :id",
    "DELETE FROM invoice_lines WHERE invoice_id = :id",
    "INSERT INTO invoice_lines (invoice_id, position, section, provider, model, reason, credential, requests, "
    "input_tokens, output_tokens, cached_tokens) VALUES (:id, 99, 'shared', 'x', 'y', '', '', 1, 0, 0, 0)",
])
def test_database_refuses_to_change_a_finalized_invoice(org, statement):
    seed(org)
    inv = close(org.id, period_ago(1))
    with pytest.raises(DBAPIError, match="immutable"):
        with db.session_scope() as session:
            session.execute(text(statement), {"id": inv.id})
    with db.session_scope() as session:
        void(session, inv.number, "test")
    with pytest.raises(DBAPIError, match="immutable"):  # a void invoice is frozen too
        with db.session_scope() as session:
            session.execute(text(statement), {"id": inv.id})
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(InvoiceLine)
                              .where(InvoiceLine.invoice_id == inv.id)) == 4  # shared, byok, fallback, unpriced


def test_finalize_waits_for_a_record_in_flight_and_includes_it(app, org):
    """The period lock: a record being written when finalize starts is on the invoice, never after it."""
    event = usage_event(org.id, credential="byok", cost="4", at=month_start(1))
    writer = db.session_scope()
    session = writer.__enter__()
    metering.write(session, event)  # locked, written, not yet committed
    done: dict = {}

    def finalize_now():
        with app.app_context():
            try:
                done["invoice"] = close(org.id, period_ago(1))
            except Exception as exc:  # pragma: no cover - reported below
                done["error"] = exc

    thread = threading.Thread(target=finalize_now)
    thread.start()
    thread.join(timeout=0.5)
    still_waiting = thread.is_alive()
    writer.__exit__(None, None, None)  # commit the record
    thread.join(timeout=30)
    assert "error" not in done, done.get("error")
    assert still_waiting, "finalize did not wait for the record being written"
    assert done["invoice"].byok_total == Decimal("4.00")


def test_cli_finalize_and_void(app, org):
    seed(org)
    bad = run_cli(app, "invoices", "finalize", "--period", "2026-13")
    assert bad.exit_code != 0 and "--period" in bad.output and "Traceback" not in bad.output
    ok = run_cli(app, "invoices", "finalize", "--period", period_ago(1), "--org", org.slug)
    assert ok.exit_code == 0, ok.output
    number = re.search(r"KW-\d{4}-\d{6}", ok.output).group(0)
    again = run_cli(app, "invoices", "finalize", "--period", period_ago(1), "--org", org.slug)
    assert again.exit_code != 0 and "already finalized" in again.output
    missing = run_cli(app, "invoices", "void", "--number", "KW-1999-000001", "--reason", "x")
    assert missing.exit_code != 0 and "no invoice" in missing.output
    voided = run_cli(app, "invoices", "void", "--number", number, "--reason", "duplicate")
    assert voided.exit_code == 0 and number in voided.output
