"""Invoice content: sections, rounding, credits summary, UTC month boundaries, exports."""
from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

from app import db
from app.billing import invoicing
from app.billing.invoicing import invoice_view
from tests.test_billing_support import grant, month_start, period_ago, record, usage_event


def view(org, period):
    db.session.remove()
    return invoice_view(db.session(), org.id, period)


def test_draft_has_every_section_split_by_who_pays(org):
    at = month_start(1) + timedelta(days=3)
    grant(org.id, "50", at=month_start(2))
    record(usage_event(org.id, model="gpt-4o", cost="1.004", at=at))
    record(usage_event(org.id, model="gpt-4o", cost="1.004", at=at, reason="rate_limit"))
    record(usage_event(org.id, credential="byok", provider="anthropic", model="claude-sonnet-4-5", cost="2.5",
                       at=at, label="team-a"))
    record(usage_event(org.id, credential="byok", provider="openai", model="gpt-4o", cost="0.333", at=at))
    record(usage_event(org.id, credential="byok", provider="openai", model="my-finetune", cost=None, at=at))
    v = view(org, period_ago(1))

    assert v.status == "draft" and v.number is None
    assert [(x.provider, x.model, x.requests, x.amount) for x in v.shared_lines] == [
        ("openai", "gpt-4o", 2, Decimal("2.01"))]  # 2.008 rounded once for the line, not 1.00 + 1.00
    assert [(g.provider, g.subtotal, g.platform_fee) for g in v.byok_groups] == [
        ("anthropic", Decimal("2.50"), 0), ("openai", Decimal("0.33"), 0)]
    assert [(x.reason, x.requests, x.amount) for x in v.fallback_lines] == [("rate_limit", 1, Decimal("1.00"))]
    assert [(x.credential, x.model, x.amount) for x in v.unpriced_lines] == [("byok", "my-finetune", None)]
    assert v.shared_total == Decimal("2.01")
    assert v.byok_total == Decimal("2.83")
    assert v.total_spend == Decimal("4.84")
    assert (v.opening_balance, v.grants, v.credits_used, v.closing_balance) == (
        Decimal("50"), Decimal("0"), Decimal("2.01"), Decimal("47.99"))


def test_credit_summary_carries_closing_into_next_opening(instant, org):
    grant(org.id, "10", at=month_start(2) + timedelta(days=1))
    record(usage_event(org.id, cost="1.234", at=month_start(2) + timedelta(days=2)))
    grant(org.id, "5", at=month_start(1) + timedelta(days=1))
    record(usage_event(org.id, cost="0.5", at=month_start(1) + timedelta(days=2)))
    before, after = view(org, period_ago(2)), view(org, period_ago(1))
    assert (before.opening_balance, before.grants, before.credits_used) == (0, Decimal("10"), Decimal("1.23"))
    assert before.closing_balance == after.opening_balance == Decimal("8.77")
    assert after.closing_balance == Decimal("8.77") + 5 - Decimal("0.50")


def test_month_boundaries_are_utc(instant, org):
    boundary = month_start(1)
    record(usage_event(org.id, credential="byok", cost="1", at=boundary - timedelta(microseconds=1)))
    record(usage_event(org.id, credential="byok", cost="2", at=boundary))
    assert view(org, period_ago(2)).total_spend == Decimal("1.00")
    assert view(org, period_ago(1)).total_spend == Decimal("2.00")


def test_failed_requests_without_usage_are_not_invoice_lines(org):
    failed = usage_event(org.id, cost=None, status="error", prompt=0, completion=0, at=month_start(1))
    failed.cost_status = "none"  # no attempt was served: nothing to price
    record(failed)
    grant(org.id, "1")
    record(usage_event(org.id, cost="0.2", at=month_start(1)))
    v = view(org, period_ago(1))
    assert [x.requests for x in v.shared_lines] == [1]
    assert v.unpriced_lines == [] and v.total_spend == Decimal("0.20")


def test_csv_escapes_formula_cells_from_model_names_and_labels(org):
    at = month_start(1)
    for evil in ("=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)"):
        record(usage_event(org.id, credential="byok", provider="openai", model=evil, cost="0.1", at=at))
    text = invoicing.to_csv(view(org, period_ago(1)))
    rows = list(csv.reader(io.StringIO(text)))
    models = [r[2] for r in rows if r[0] == "byok"]
    assert sorted(models) == sorted(["'+1+1", "'-2+3", "'=HYPERLINK(\"http://x\")", "'@SUM(A1)"])
    for row in rows:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@")) or is_plain_number(cell), cell
    assert ["summary", "", "", "total_spend", "", "", "", "", "0.40"] in rows


def is_plain_number(cell: str) -> bool:
    try:
        Decimal(cell)
    except ArithmeticError:
        return False
    return True


def test_csv_keeps_negative_amounts_numeric():
    from app.csvfile import safe_cell

    assert safe_cell(Decimal("-0.40")) == "-0.40"
    assert safe_cell("-0.40") == "-0.40"
    assert safe_cell("-2+3") == "'-2+3"
    assert safe_cell("=1") == "'=1"


def test_json_money_is_strings_and_unpriced_is_null(org):
    at = month_start(1)
    record(usage_event(org.id, credential="byok", model="gpt-4o", cost="0.125", at=at))
    record(usage_event(org.id, credential="byok", model="nope", cost=None, at=at))
    data = invoicing.to_json(view(org, period_ago(1)))
    assert data["byok"]["providers"][0]["subtotal"] == "0.13"  # half-up: 0.125 -> 0.13
    assert data["byok"]["providers"][0]["platform_fee"] == "0.00"
    assert data["unpriced"][0]["amount"] is None and data["unpriced"][0]["flag"]
    assert data["summary"]["total_spend"] == "0.13"
    assert data["status"] == "draft" and data["number"] is None


def test_price_change_moves_no_past_record_or_invoice(app, org):
    from sqlalchemy import select

    from app.billing.pricing import import_catalog, load_catalog, price_book
    from app.models import UsageRecord
    from tests.test_billing_support import price_id

    old_price = price_id("openai", "gpt-4o-mini")
    ev = usage_event(org.id, credential="byok", cost="0.0004500000", at=month_start(1))
    ev.price_id = old_price
    record(ev)
    draft_before = view(org, period_ago(1))
    catalog = load_catalog()
    for entry in catalog["models"]:
        if entry["model"] == "gpt-4o-mini":
            entry["input"], entry["output"] = "15.00", "60.00"
    with db.session_scope() as session:
        assert import_catalog(session, catalog, effective_from=month_start(1) - timedelta(days=1)) >= 1
    price_book().invalidate()
    db.session.remove()
    stored = db.session.scalar(select(UsageRecord).where(UsageRecord.request_id == ev.request_id))
    assert stored.price_id == old_price and stored.cost == Decimal("0.00045")
    assert view(org, period_ago(1)).byok_total == draft_before.byok_total
    assert price_book().lookup("openai", "gpt-4o-mini").input == Decimal("15.00")
