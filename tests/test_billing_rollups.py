"""Rollups in the same transaction as the records, `rollups rebuild`, and `billing check` (invoice == usage == ledger)."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import delete, func, select, text, update

from app import db
from app.billing import metering
from app.billing.check import run_checks
from app.models import CreditAccount, Invoice, UsageRecord, UsageRollup
from tests.factories import OrganizationFactory
from tests.test_billing_support import grant, month_start, period_ago, record, run_cli, usage_event


def rollup_totals(org_id: int) -> tuple:
    with db.session_scope() as session:
        return tuple(session.execute(select(
            func.count(), func.sum(UsageRollup.requests), func.sum(UsageRollup.prompt_tokens),
            func.sum(UsageRollup.cost), func.sum(UsageRollup.charged)).where(UsageRollup.org_id == org_id)).one())


def seed_traffic(org) -> None:
    grant(org.id, "20", at=month_start(2))
    for i in range(6):
        at = month_start(1) + timedelta(days=i % 3, hours=i)
        record(usage_event(org.id, cost=f"0.01{i}", at=at, reason="rate_limit" if i == 2 else ""))
        record(usage_event(org.id, credential="byok", provider="anthropic", model="claude-haiku-4-5",
                           cost=f"0.2{i}", at=at, label="team-a"))
    record(usage_event(org.id, credential="byok", model="private", cost=None, at=month_start(1)))
    record(usage_event(org.id, cost="0.5", at=month_start(0)))


def test_record_and_rollup_commit_or_roll_back_together(app, org):
    event = usage_event(org.id, credential="byok", cost="1")
    with pytest.raises(RuntimeError):
        with db.session_scope() as session:
            metering.write(session, event)
            raise RuntimeError("the transaction fails after the record was written")
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(UsageRecord)) == 0
        assert session.scalar(select(func.count()).select_from(UsageRollup)) == 0
    record(event)
    assert rollup_totals(org.id)[:3] == (1, 1, 1000)
    assert record(event) is False  # a replay of the same request id adds nothing
    assert rollup_totals(org.id)[:3] == (1, 1, 1000)


def test_rebuild_reproduces_the_maintained_rollups(instant, app, org):
    seed_traffic(org)
    maintained = rollup_totals(org.id)
    with db.session_scope() as session:
        session.execute(update(UsageRollup).values(requests=UsageRollup.requests + 5))
        session.execute(delete(UsageRollup).where(UsageRollup.credential == "byok", UsageRollup.cost_status == "priced"))
    assert rollup_totals(org.id) != maintained
    result = run_cli(app, "rollups", "rebuild", "--org", org.slug)
    assert result.exit_code == 0, result.output
    assert rollup_totals(org.id) == maintained


def test_rebuild_since_leaves_earlier_days_alone(app, org):
    seed_traffic(org)
    first_day = month_start(1).date()
    with db.session_scope() as session:
        session.execute(update(UsageRollup).where(UsageRollup.day == first_day).values(requests=99))
    since = (first_day + timedelta(days=1)).isoformat()
    assert run_cli(app, "rollups", "rebuild", "--since", since).exit_code == 0
    with db.session_scope() as session:
        assert set(session.scalars(select(UsageRollup.requests).where(UsageRollup.day == first_day))) == {99}
    assert run_cli(app, "rollups", "rebuild").exit_code == 0
    assert run_cli(app, "billing", "check").exit_code == 0


def test_rebuild_rejects_bad_input_in_one_line(app, org):
    for args in (["--org", "nope"], ["--since", "yesterday"]):
        result = run_cli(app, "rollups", "rebuild", *args)
        assert result.exit_code != 0 and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_billing_check_passes_on_honest_data_with_a_finalized_invoice(instant, app, org):
    seed_traffic(org)
    OrganizationFactory()  # an org with nothing at all is fine too
    assert run_cli(app, "invoices", "finalize", "--period", period_ago(1)).exit_code == 0
    result = run_cli(app, "billing", "check")
    assert result.exit_code == 0, result.output
    with db.session_scope() as session:
        assert run_checks(session) == []
        inv = session.scalar(select(Invoice))
        assert inv.total_spend == sum((line.amount for line in inv.lines if line.section in ("shared", "byok")),
                                      Decimal(0))


@pytest.mark.parametrize("tamper, expected", [
    ("UPDATE usage_rollups SET prompt_tokens = prompt_tokens + 1 WHERE credential = 'byok'", "rollup differs"),
    ("DELETE FROM usage_rollups WHERE cost_status = 'unpriced'", "records missing from rollups"),
    ("UPDATE credit_accounts SET reserved = reserved + 1", "reserved"),
    ("UPDATE usage_records SET charged = 0 WHERE credential = 'shared'", "settlements"),
])
def test_billing_check_names_each_mismatch_and_exits_non_zero(app, org, tamper, expected):
    seed_traffic(org)
    assert run_cli(app, "billing", "check").exit_code == 0
    with db.session_scope() as session:
        session.execute(text(tamper))
    result = run_cli(app, "billing", "check")
    assert result.exit_code != 0
    assert expected in result.output and org.slug in result.output, result.output


def test_billing_check_catches_balance_not_equal_to_entries(app, org):
    seed_traffic(org)
    with db.session_scope() as session:
        session.execute(update(CreditAccount).values(balance=CreditAccount.balance + Decimal("0.01")))
    result = run_cli(app, "billing", "check")
    assert result.exit_code != 0 and "sum of entries" in result.output


def test_billing_check_catches_usage_written_into_a_finalized_period(app, org):
    seed_traffic(org)
    assert run_cli(app, "invoices", "finalize", "--period", period_ago(1), "--org", org.slug).exit_code == 0
    with db.session_scope() as session:  # what the period lock prevents: a record landing in a closed month
        session.execute(update(UsageRecord).where(UsageRecord.billing_period == period_ago(0))
                        .values(billing_period=period_ago(1)))
    assert run_cli(app, "rollups", "rebuild").exit_code == 0
    result = run_cli(app, "billing", "check")
    assert result.exit_code != 0 and "!= usage of the period" in result.output
