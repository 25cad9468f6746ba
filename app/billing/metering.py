"""The one seam that takes every usage record: `record(event)`.

The writer stores the record, its attempts, the daily rollup and summary and the credit
settlement in one transaction, keyed by the gateway's request id so a replay
never bills twice. Recording never fails a client response.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.billing import ledger
from app.billing.events import AttemptEvent, UsageEvent  # noqa: F401  (the seam's vocabulary, re-exported)
from app.billing.money import ZERO
from app.billing.periods import next_period, period_of
from app.models import ApiKey, FinalizedPeriod, Organization, UsageAttempt, UsageDaily, UsageRecord, UsageRollup

log = logging.getLogger(__name__)


_writer: Callable[[UsageEvent], None] | None = None


def configure(app) -> None:
    """sync: one transaction per record (tests read the DB right after a request); journal: for `serve`."""
    global _writer
    if _writer is not None and hasattr(_writer, "close"):
        _writer.close()
    if app.config["METERING_MODE"] == "journal":
        from app.billing.journal import JournalWriter

        _writer = JournalWriter.for_app(app)
    else:
        _writer = write_now


def flush(timeout: float = 30.0) -> bool:
    """Wait until every record taken so far is in the database (journal mode); True when drained."""
    drain = getattr(_writer, "flush", None)
    return drain(timeout) if drain is not None else True


def set_writer(writer: Callable[[UsageEvent], None]) -> None:
    """Swap the writer (the journaled, batched writer plugs in here)."""
    global _writer
    _writer = writer


def record(event: UsageEvent) -> None:
    """Take one usage record. Never raises into the response path."""
    try:
        (_writer or write_now)(event)
    except Exception:
        log.exception("usage record %s could not be written", event.request_id)


def write_now(event: UsageEvent) -> None:
    """Sync mode: the writers' own path (a refused event is quarantined, not raised), for one event."""
    from app.billing.recorder import commit_events

    commit_events([event])


def write(session: Session, event: UsageEvent) -> bool:
    """Store one event; returns False if its request id was already recorded (idempotent replay)."""
    lock_org_for_recording(session, event.org_id)
    if session.scalar(select(UsageRecord.id).where(UsageRecord.request_id == event.request_id)) is not None:
        return False
    period = open_period(session, event.org_id, event.created_at)
    record_row = UsageRecord(
        request_id=event.request_id, org_id=event.org_id, api_key_id=event.api_key_id,
        provider=event.provider, model=event.model, credential=event.credential, byok_label=event.label,
        fallback=event.fallback, fallback_reason=event.fallback_reason, fallback_refused=event.fallback_refused,
        status=event.status, http_status=event.http_status, error_class=event.error_class, stream=event.stream,
        prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens,
        cached_tokens=event.cached_tokens, cache_write_tokens=event.cache_write_tokens,
        reasoning_tokens=event.reasoning_tokens, tokens_source=event.tokens_source, cost=event.cost,
        cost_status=event.cost_status, charged=ZERO, price_id=event.price_id,
        attempts_count=len(event.attempts), latency_ms=event.latency_ms, ttft_ms=event.ttft_ms,
        billing_period=period, created_at=event.created_at,
    )
    record_row.attempts = [
        UsageAttempt(seq=i, provider=a.provider, model=a.model, credential=a.credential, byok_label=a.label,
                     http_status=a.http_status, error_class=a.error_class, outcome=a.outcome,
                     latency_ms=a.latency_ms)
        for i, a in enumerate(event.attempts)
    ]
    try:
        with session.begin_nested():
            session.add(record_row)
            session.flush()
    except IntegrityError:
        # Another writer stored the same request id between our check and insert.
        return False
    if event.reserved > 0 or event.charge > 0:
        record_row.charged = ledger.settle(session, event.org_id, event.request_id, event.reserved, event.charge)
    add_to_rollup(session, record_row)
    if event.api_key_id is not None:
        _touch_key(session, event.api_key_id, event.created_at)
    return True


def lock_org_for_recording(session: Session, org_id: int) -> None:
    """Hold the org's period lock in shared mode until commit, before the open period is read.

    PostgreSQL: FOR KEY SHARE on the organization row. Recorders never block
    one another (nor the balance UPDATEs of the ledger); closing a period takes
    FOR UPDATE on the same row (lock_org_for_closing), so it waits for every
    recorder already past this point to commit, and recorders arriving later
    wait for it and then, in a fresh READ COMMITTED snapshot, see the new
    FinalizedPeriod row. SQLite: a no-op write takes the database's single
    write lock first, so the period is read inside the serialized write.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Organization.id).where(Organization.id == org_id).with_for_update(key_share=True))
    else:
        session.execute(text("UPDATE organizations SET id = id WHERE id = :org_id"), {"org_id": org_id})


def lock_org_for_closing(session: Session, org_id: int) -> None:
    """The exclusive side of lock_org_for_recording: no record of this org commits while it is held."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Organization.id).where(Organization.id == org_id).with_for_update())
    else:
        session.execute(text("UPDATE organizations SET id = id WHERE id = :org_id"), {"org_id": org_id})


def open_period(session: Session, org_id: int, at: datetime) -> str:
    """The month a record belongs to: its own (in UTC), or the next one not yet finalized."""
    period = period_of(at)
    closed = set(session.scalars(
        select(FinalizedPeriod.period).where(FinalizedPeriod.org_id == org_id, FinalizedPeriod.period >= period)
    ))
    while period in closed:
        period = next_period(period)
    return period


def add_to_rollup(session: Session, r: UsageRecord) -> None:
    """Upsert the record's counts into its rollup and daily summary rows, in the caller's transaction."""
    upsert_rollups(session, [rollup_row(r)])


def rollup_row(r: UsageRecord) -> tuple[dict, dict]:
    """The rollup dimensions of one record and the counts it adds (summed by the batch writer)."""
    values = dict(
        org_id=r.org_id, day=r.created_at.date(), billing_period=r.billing_period, provider=r.provider,
        model=r.model, credential=r.credential, api_key_id=r.api_key_id or 0, byok_label=r.byok_label,
        fallback_reason=r.fallback_reason, cost_status=r.cost_status,
    )
    counts = dict(
        requests=1, errors=int(r.status != "ok"), fallbacks=int(r.fallback),
        unpriced_requests=int(r.cost_status == "unpriced"), prompt_tokens=r.prompt_tokens,
        completion_tokens=r.completion_tokens, cached_tokens=r.cached_tokens,
        cache_write_tokens=r.cache_write_tokens, reasoning_tokens=r.reasoning_tokens,
        latency_ms_total=r.latency_ms, cost=r.cost or ZERO, charged=r.charged or ZERO,
    )
    return values, counts


def upsert_rollups(session: Session, rows: list[tuple[dict, dict]]) -> None:
    """Add each (dimensions, counts) pair to its rollup row and to its daily summary row.

    Rows must have distinct dimensions. Both tables move in the caller's
    transaction, so the summary never disagrees with the rollups; fine rows
    first, then summary rows, each in a stable order (no lock-order deadlocks).
    """
    _upsert(session, UsageRollup, rows)
    _upsert(session, UsageDaily, daily_rows(rows))


DAILY_DIMS = ("org_id", "day", "billing_period", "provider", "model", "credential", "cost_status")


def daily_rows(rows: list[tuple[dict, dict]]) -> list[tuple[dict, dict]]:
    """Rollup rows summed into their usage_daily rows, sorted by dimensions."""
    summed: dict[tuple, tuple[dict, dict]] = {}
    for values, counts in rows:
        dims = {name: values[name] for name in DAILY_DIMS}
        with_reason = values["fallback_reason"] != ""
        added = {**counts, "reason_requests": counts["requests"] if with_reason else 0,
                 "reason_charged": counts["charged"] if with_reason else ZERO}
        key = tuple(str(dims[name]) for name in DAILY_DIMS)
        if key in summed:
            total = summed[key][1]
            for name, value in added.items():
                total[name] = total[name] + value
        else:
            summed[key] = (dims, added)
    return [summed[key] for key in sorted(summed)]


def _upsert(session: Session, model, rows: list[tuple[dict, dict]]) -> None:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = model.__table__
    for values, counts in rows:
        stmt = insert(model).values(**values, **counts)
        stmt = stmt.on_conflict_do_update(
            index_elements=list(values),
            set_={name: table.c[name] + stmt.excluded[name] for name in counts},
        )
        session.execute(stmt)


def _touch_key(session: Session, api_key_id: int, at: datetime) -> None:
    """last_used_at with minute resolution, so busy keys are not rewritten on every request."""
    session.execute(
        update(ApiKey)
        .where(ApiKey.id == api_key_id, or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < at - timedelta(minutes=1)))
        .values(last_used_at=at)
    )
