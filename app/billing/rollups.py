"""Rebuild the daily usage rollups and their daily summary from the raw usage records, one UTC day per transaction."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Callable, Iterable

from sqlalchemy import Integer, case, delete, func, literal, select
from sqlalchemy.orm import Session

from app.billing.metering import lock_org_for_closing
from app.db import session_scope
from app.models import Organization, UsageDaily, UsageRecord, UsageRollup

COUNTS = ("requests", "errors", "fallbacks", "unpriced_requests", "prompt_tokens", "completion_tokens",
          "cached_tokens", "cache_write_tokens", "reasoning_tokens", "latency_ms_total", "cost", "charged")
DIMS = ("org_id", "billing_period", "provider", "model", "credential", "api_key_id", "byok_label",
        "fallback_reason", "cost_status")
DAILY_DIMS = ("org_id", "day", "billing_period", "provider", "model", "credential", "cost_status")
DAILY_COUNTS = COUNTS + ("reason_requests", "reason_charged")


def flag(condition) -> "case":
    return case((condition, 1), else_=0)


def aggregate_records(start: datetime, end: datetime, org_ids: list[int] | None):
    """SELECT of the rollup rows (DIMS + COUNTS, without the day) for records in [start, end)."""
    r = UsageRecord
    dims = [r.org_id, r.billing_period, r.provider, r.model, r.credential,
            func.coalesce(r.api_key_id, literal(0, Integer)), r.byok_label, r.fallback_reason, r.cost_status]
    counts = [
        func.count(), func.sum(flag(r.status != "ok")), func.sum(flag(r.fallback.is_(True))),
        func.sum(flag(r.cost_status == "unpriced")), func.sum(r.prompt_tokens), func.sum(r.completion_tokens),
        func.sum(r.cached_tokens), func.sum(r.cache_write_tokens), func.sum(r.reasoning_tokens),
        func.sum(r.latency_ms), func.coalesce(func.sum(r.cost), 0), func.sum(r.charged),
    ]
    stmt = select(*dims, *counts).where(r.created_at >= start, r.created_at < end)
    if org_ids is not None:
        stmt = stmt.where(r.org_id.in_(org_ids))
    return stmt.group_by(*dims)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=timezone.utc)
    return start, start + timedelta(days=1)


def days_to_rebuild(session: Session, org_ids: list[int] | None, since: date | None) -> list[date]:
    """Every day from `since` (or the first record, rollup or summary row) to the last of them."""
    queries = [select(func.min(UsageRecord.created_at), func.max(UsageRecord.created_at)),
               select(func.min(UsageRollup.day), func.max(UsageRollup.day)),
               select(func.min(UsageDaily.day), func.max(UsageDaily.day))]
    if org_ids is not None:
        queries = [q.where(table.org_id.in_(org_ids))
                   for q, table in zip(queries, (UsageRecord, UsageRollup, UsageDaily))]
    bounds = [session.execute(q).one() for q in queries]
    as_day = [lambda v: v and v.date(), lambda v: v, lambda v: v]
    firsts = [d for (first, _), f in zip(bounds, as_day) if (d := f(first)) is not None]
    lasts = [d for (_, last), f in zip(bounds, as_day) if (d := f(last)) is not None]
    if not firsts:
        return []
    first = max(since, min(firsts)) if since else min(firsts)
    last = max(lasts)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def rebuild_day(session: Session, day: date, org_ids: list[int] | None) -> int:
    """Replace one day's rollups and summary with the aggregate of its records; returns the rollup rows written."""
    locked = org_ids if org_ids is not None else list(session.scalars(select(Organization.id).order_by(Organization.id)))
    for org_id in sorted(locked):
        lock_org_for_closing(session, org_id)  # no record of these orgs commits mid-rebuild
    for table in (UsageRollup, UsageDaily):
        wipe = delete(table).where(table.day == day)
        if org_ids is not None:
            wipe = wipe.where(table.org_id.in_(org_ids))
        session.execute(wipe)
    start, end = day_bounds(day)
    source = aggregate_records(start, end, org_ids).add_columns(literal(day).label("day"))
    result = session.execute(UsageRollup.__table__.insert().from_select([*DIMS, *COUNTS, "day"], source))
    # The summary of the day is the sum of the rollups just written, in the same transaction.
    session.execute(UsageDaily.__table__.insert().from_select([*DAILY_DIMS, *DAILY_COUNTS],
                                                              daily_from_rollups(day, org_ids)))
    return max(result.rowcount or 0, 0)


def daily_from_rollups(day: date, org_ids: list[int] | None):
    """SELECT of the usage_daily rows (DAILY_DIMS + DAILY_COUNTS) of one day, from its rollups."""
    u = UsageRollup
    dims = [getattr(u, name) for name in DAILY_DIMS]
    with_reason = u.fallback_reason != ""
    sums = [func.sum(getattr(u, name)) for name in COUNTS]
    sums += [func.sum(case((with_reason, u.requests), else_=0)),
             func.sum(case((with_reason, u.charged), else_=literal(0, u.charged.type)))]
    stmt = select(*dims, *sums).where(u.day == day)
    if org_ids is not None:
        stmt = stmt.where(u.org_id.in_(org_ids))
    return stmt.group_by(*dims)


def rebuild(org_ids: list[int] | None = None, since: date | None = None,
            progress: Callable[[list[date]], Iterable[date]] = lambda days: days) -> tuple[int, int]:
    """Rebuild day by day, one committed transaction each; returns (days, rollup rows written)."""
    with session_scope() as session:
        days = days_to_rebuild(session, org_ids, since)
    rows = 0
    for day in progress(days):
        with session_scope() as session:
            rows += rebuild_day(session, day, org_ids)
    return len(days), rows
