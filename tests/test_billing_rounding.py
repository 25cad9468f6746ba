"""Rounding: each line once, half-up to cents; totals are sums of rounded lines; tiny costs accumulate exactly."""
from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select

from app import db
from app.billing.invoicing import InvoiceView, UsageRow, compose
from app.billing.money import round_line_half_up
from app.billing.rollups import rebuild
from app.models import UsageRecord, UsageRollup
from app.types import utcnow

TINY = Decimal("0.0000001")
COSTS = st.decimals(min_value=0, max_value=Decimal("10000"), places=10)
ROWS = st.lists(st.builds(
    UsageRow, credential=st.sampled_from(["shared", "byok"]), provider=st.sampled_from(["openai", "anthropic"]),
    model=st.sampled_from(["a", "b", "c"]), reason=st.sampled_from(["", "", "rate_limit", "timeout"]),
    cost_status=st.sampled_from(["priced", "priced", "priced", "unpriced", "none"]),
    requests=st.integers(1, 1000), input_tokens=st.integers(0, 10**9), output_tokens=st.integers(0, 10**9),
    cached_tokens=st.integers(0, 10**6), cost=COSTS, charged=COSTS), max_size=30)


def test_half_up_is_the_rule():
    assert round_line_half_up(Decimal("0.005")) == Decimal("0.01")
    assert round_line_half_up(Decimal("0.015")) == Decimal("0.02")  # banker's rounding would give 0.02 too
    assert round_line_half_up(Decimal("0.025")) == Decimal("0.03")  # ...but 0.02 here
    assert round_line_half_up(Decimal("0.0049999999")) == Decimal("0.00")


@settings(max_examples=300, deadline=None)
@given(rows=ROWS)
def test_totals_are_sums_of_lines_each_rounded_once(rows):
    view = compose(InvoiceView(1, "2026-10", "draft", None, None, ""), rows)
    priced = [r for r in rows if r.cost_status == "priced"]
    lines = view.shared_lines + [x for g in view.byok_groups for x in g.lines]
    for line in lines + view.fallback_lines:
        assert line.amount == round_line_half_up(line.unrounded)
        assert abs(line.amount - line.unrounded) <= Decimal("0.005")
    assert view.shared_total == sum((x.amount for x in view.shared_lines), Decimal(0))
    for group in view.byok_groups:
        assert group.subtotal == sum((x.amount for x in group.lines), Decimal(0)) and group.platform_fee == 0
    assert view.total_spend == view.shared_total + view.byok_total
    assert sum((x.unrounded for x in view.shared_lines), Decimal(0)) == sum(
        (r.charged for r in priced if r.credential == "shared"), Decimal(0))
    assert sum((x.unrounded for x in lines), Decimal(0)) == sum(
        (r.charged if r.credential == "shared" else r.cost for r in priced), Decimal(0))
    assert sum(x.requests for x in view.unpriced_lines) == sum(r.requests for r in rows if r.cost_status == "unpriced")
    assert all(x.amount is None for x in view.unpriced_lines)
    # the fallback section explains part of the shared charge; it is never added on top
    assert sum((x.unrounded for x in view.fallback_lines), Decimal(0)) <= sum(
        (x.unrounded for x in view.shared_lines), Decimal(0))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3_000_000), units=st.integers(1, 10**6))
def test_accumulating_tiny_costs_is_exact(n, units):
    cost = Decimal(units).scaleb(-10)  # any multiple of the 1e-10 money quantum
    total = Decimal(0)
    for _ in range(min(n, 2000)):
        total += cost
    assert total == cost * min(n, 2000)
    assert (cost * n).quantize(Decimal("1e-10")) == cost * n  # no digits lost at 28 significant digits


def test_two_million_tenth_microdollar_calls_sum_exactly():
    total = Decimal(0)
    for _ in range(2_000_000):
        total += TINY
    assert total == Decimal("0.2")


def test_database_sums_a_hundred_thousand_tiny_costs_exactly(app, org):
    now = utcnow()
    rows = [dict(request_id=f"gen-tiny{i:08d}", org_id=org.id, provider="openai", model="gpt-4o-mini",
                 credential="byok", cost=TINY, charged=Decimal(0), cost_status="priced", billing_period=f"{now:%Y-%m}",
                 created_at=now, prompt_tokens=1, completion_tokens=1) for i in range(100_000)]
    with db.session_scope() as session:
        session.execute(insert(UsageRecord), rows)
    rebuild([org.id])
    with db.session_scope() as session:
        assert session.scalar(select(func.sum(UsageRollup.cost)).where(UsageRollup.org_id == org.id)) == Decimal("0.01")
        assert session.scalar(select(func.sum(UsageRecord.cost))) == Decimal("0.01")
