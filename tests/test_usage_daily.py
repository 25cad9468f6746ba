"""usage_daily, the dashboard's coarse summary: always equal to the raw records, whoever wrote them."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from decimal import Decimal

import pytest
from sqlalchemy import delete, select, text, update

from app import db
from app.billing import ledger, metering
from app.billing.batch import write_batch
from app.billing.check import run_checks
from app.models import UsageDaily, UsageRecord
from app.security import new_request_id
from tests.factories import grant
from simulators.server import Fault
from tests.helpers import byok, chat
from tests.test_billing_rollups import seed_traffic
from tests.test_billing_support import month_start, run_cli, usage_event

USER_KEY = "sk-user-key-daily-summary"
SUMMED = ("requests", "errors", "fallbacks", "unpriced_requests", "prompt_tokens", "completion_tokens",
          "cached_tokens", "cache_write_tokens", "reasoning_tokens", "latency_ms_total", "cost", "charged",
          "reason_requests", "reason_charged")


def expected_summary() -> dict[tuple, tuple]:
    """The summary computed in Python from every raw record (independent of the SQL that maintains it)."""
    db.session.remove()
    out: dict[tuple, list] = defaultdict(lambda: [0] * 10 + [Decimal(0), Decimal(0), 0, Decimal(0)])
    for r in db.session.scalars(select(UsageRecord)):
        key = (r.org_id, r.created_at.date(), r.billing_period, r.provider, r.model, r.credential, r.cost_status)
        with_reason = r.fallback_reason != ""
        added = (1, int(r.status != "ok"), int(r.fallback), int(r.cost_status == "unpriced"), r.prompt_tokens,
                 r.completion_tokens, r.cached_tokens, r.cache_write_tokens, r.reasoning_tokens, r.latency_ms,
                 r.cost or Decimal(0), r.charged, int(with_reason), r.charged if with_reason else Decimal(0))
        out[key] = [a + b for a, b in zip(out[key], added)]
    return {k: tuple(v) for k, v in out.items()}


def stored_summary() -> dict[tuple, tuple]:
    db.session.remove()
    return {(d.org_id, d.day, d.billing_period, d.provider, d.model, d.credential, d.cost_status):
            tuple(getattr(d, name) for name in SUMMED) for d in db.session.scalars(select(UsageDaily))}


def assert_summary_matches_records() -> None:
    want = expected_summary()
    assert want, "the test needs some records"
    assert stored_summary() == want
    with db.session_scope() as session:
        assert run_checks(session) == []


def test_gateway_traffic_keeps_the_summary_equal_to_the_records(client, org, gateway_key, fake_openai):
    grant(org, "10")
    fake_openai.on_key("sk-rate-limited", Fault("status", 429))
    responses = [
        chat(client, gateway_key),  # shared pool
        chat(client, gateway_key, byok_conf=byok(USER_KEY, label="team-a")),  # BYOK
        chat(client, gateway_key, byok_conf=byok(USER_KEY, label="team-b")),  # same summary row, another label
        chat(client, gateway_key, byok_conf=byok("sk-rate-limited")),  # BYOK 429 -> fallback onto credits
        chat(client, gateway_key, stream=True, byok_conf=byok(USER_KEY)),
        chat(client, gateway_key, model="openai/no-such-model-xyz"),  # an error is recorded too
    ]
    assert [r.status_code for r in responses[:5]] == [200] * 5
    for r in responses:
        r.get_data()  # a stream is recorded once it has been read to the end
    assert_summary_matches_records()
    summary = stored_summary()
    byok_row = next(v for k, v in summary.items() if k[5] == "byok" and k[6] == "priced")
    assert byok_row[0] == 3  # three BYOK requests under two labels collapse into one summary row
    shared = [v for k, v in summary.items() if k[5] == "shared" and k[6] == "priced"]
    assert sum(v[12] for v in shared) == 1 and sum(v[13] for v in shared) > 0  # the fallback and its credits


def test_batch_writer_and_a_capped_charge_keep_the_summary_exact(app, org):
    grant(org, "0.05")
    events = [usage_event(org.id, cost="0.01", reserved="0.01"),
              usage_event(org.id, cost="0.01", reserved="0.01", reason="rate_limit"),
              usage_event(org.id, credential="byok", cost="0.30", label="team-a"),
              usage_event(org.id, credential="byok", cost=None),
              usage_event(org.id, cost="0.02", status="error", prompt=0, completion=0),
              # More than the balance left: the charge is capped when settled, after the rollups were written.
              usage_event(org.id, cost="0.50", charge="7.50", reason="timeout")]
    for e in events:
        if e.reserved > 0:
            assert ledger.reserve(e.org_id, e.request_id, e.reserved)
    with db.session_scope() as session:
        assert write_batch(session, events) == len(events)
    capped = db.session.scalar(select(UsageRecord.charged).where(UsageRecord.request_id == events[-1].request_id))
    assert Decimal(0) < capped < Decimal("7.50")
    assert_summary_matches_records()
    reason_charged = sum((v[13] for v in stored_summary().values()), Decimal(0))
    assert reason_charged == Decimal("0.01") + capped
    with db.session_scope() as session:  # a replay adds nothing
        assert write_batch(session, [replace(e, attempts=list(e.attempts)) for e in events]) == 0
    assert_summary_matches_records()


def test_row_by_row_and_batch_writers_build_the_same_summary(app, org):
    from tests.factories import OrganizationFactory

    other = OrganizationFactory()
    events = [usage_event(org.id, credential="byok", cost="0.1", label=label, reason=reason)
              for label in ("", "a", "b") for reason in ("", "rate_limit")]
    events += [usage_event(org.id, cost=None), usage_event(org.id, model="gpt-4o", cost="0.25")]
    for e in events:
        with db.session_scope() as session:
            metering.write(session, e)
    with db.session_scope() as session:
        write_batch(session, [replace(e, request_id=new_request_id(), org_id=other.id, attempts=list(e.attempts))
                              for e in events])
    rows = stored_summary()
    mine = {k[1:]: v for k, v in rows.items() if k[0] == org.id}
    theirs = {k[1:]: v for k, v in rows.items() if k[0] == other.id}
    assert mine == theirs and len(mine) == 3
    assert_summary_matches_records()


def test_rollups_rebuild_restores_a_damaged_summary(app, org):
    seed_traffic(org)
    assert_summary_matches_records()
    with db.session_scope() as session:
        session.execute(update(UsageDaily).values(requests=UsageDaily.requests + 3))
        session.execute(delete(UsageDaily).where(UsageDaily.credential == "byok"))
        session.add(UsageDaily(org_id=org.id, day=month_start(3).date(), billing_period="2000-01", provider="x",
                               model="y", credential="shared", cost_status="priced", requests=1))
    assert stored_summary() != expected_summary()
    result = run_cli(app, "rollups", "rebuild")
    assert result.exit_code == 0, result.output
    assert_summary_matches_records()


def test_rebuild_of_one_org_leaves_the_other_orgs_summary_alone(app, org):
    from tests.factories import OrganizationFactory

    other = OrganizationFactory()
    seed_traffic(org)
    seed_traffic(other)
    with db.session_scope() as session:
        session.execute(update(UsageDaily).where(UsageDaily.org_id == other.id).values(errors=77))
    assert run_cli(app, "rollups", "rebuild", "--org", org.slug).exit_code == 0
    assert {v[1] for k, v in stored_summary().items() if k[0] == other.id} == {77}
    assert run_cli(app, "rollups", "rebuild").exit_code == 0
    assert_summary_matches_records()


@pytest.mark.parametrize("tamper, expected", [
    ("UPDATE usage_daily SET completion_tokens = completion_tokens + 1 WHERE credential = 'byok'",
     "daily summary differs from records"),
    ("UPDATE usage_daily SET reason_requests = 0", "reason_requests 0 != 1"),
    ("DELETE FROM usage_daily WHERE cost_status = 'unpriced'", "records missing from the daily summary"),
    ("UPDATE usage_daily SET model = 'ghost-model' WHERE cost_status = 'unpriced'", "daily summary without records"),
])
def test_billing_check_names_a_tampered_summary_row(app, org, tamper, expected):
    seed_traffic(org)
    assert run_cli(app, "billing", "check").exit_code == 0
    with db.session_scope() as session:
        session.execute(text(tamper))
    result = run_cli(app, "billing", "check")
    assert result.exit_code != 0
    assert expected in result.output and org.slug in result.output, result.output
    assert "rollup differs" not in result.output  # the fine rollups were not touched


def test_migration_fills_the_summary_from_existing_rollups(app, org):
    """What 0004 runs on an upgraded database: the summary built from the stored rollups equals the records."""
    from alembic.script import ScriptDirectory

    from app.migrate import alembic_config

    seed_traffic(org)
    with db.session_scope() as session:
        session.execute(delete(UsageDaily))
    fill = ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision("0004").module.FILL
    with db.session_scope() as session:
        session.execute(text(fill))
    assert_summary_matches_records()
