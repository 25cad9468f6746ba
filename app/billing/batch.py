"""Store many usage events in one transaction, with the same result as metering.write for each.

The journaled writer commits events in batches; doing a batch row by row
would cost five to seven statements per request. Here a batch costs a fixed
handful: one duplicate check, one period lookup per organization and month,
one locked credit settlement per organization, bulk inserts of records,
attempts and ledger entries, one upsert per distinct rollup row and per
distinct daily summary row, and one last-used update per gateway key.
"""
from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from app.billing import ledger, metering
from app.billing.events import UsageEvent
from app.billing.money import ZERO
from app.models import UsageAttempt, UsageRecord


def write_batch(session: Session, events: list[UsageEvent]) -> int:
    """Store the events not yet recorded (by request id); returns how many were new."""
    fresh = _new_events(session, events)
    if not fresh:
        return 0
    for org_id in sorted({e.org_id for e in fresh}):
        metering.lock_org_for_recording(session, org_id)
    periods = {key: metering.open_period(session, key[0], fresh_at)
               for key, fresh_at in _period_keys(fresh).items()}
    # Charges are written as asked and settled last (see _settle_last).
    rows = [_record_row(e, periods[(e.org_id, e.created_at.year, e.created_at.month)], e.charge if e.charge > 0 else ZERO)
            for e in fresh]
    ids = session.execute(
        insert(UsageRecord).returning(UsageRecord.id, sort_by_parameter_order=True), rows
    ).scalars().all()
    attempts = [_attempt_row(record_id, i, a) for record_id, e in zip(ids, fresh) for i, a in enumerate(e.attempts)]
    if attempts:
        session.execute(insert(UsageAttempt), attempts)
    metering.upsert_rollups(session, _rollups(rows))
    last_used: dict[int, Any] = {}
    for e in fresh:
        if e.api_key_id is not None and (e.api_key_id not in last_used or e.created_at > last_used[e.api_key_id]):
            last_used[e.api_key_id] = e.created_at
    for api_key_id in sorted(last_used):
        metering._touch_key(session, api_key_id, last_used[api_key_id])
    _settle_last(session, fresh, rows)
    return len(fresh)


def _settle_last(session: Session, events: list[UsageEvent], rows: list[dict[str, Any]]) -> None:
    """Settle credits at the very end of the batch, then correct the rare charge the balance capped.

    The correction goes through metering.upsert_rollups, so the rollup and the
    daily summary both get the same delta.

    Settling locks the organization's credit account row until commit. Done
    last, the lock is held for a few statements instead of the whole batch,
    so the reservations that shared-pool requests make on the response path
    do not queue behind the batch writer.
    """
    charged = _settle(session, events)
    for row in rows:
        actual = charged.get(row["request_id"], ZERO)
        if actual == row["charged"]:
            continue
        delta = actual - row["charged"]
        session.execute(update(UsageRecord).where(UsageRecord.request_id == row["request_id"]).values(charged=actual))
        values, counts = metering.rollup_row(SimpleNamespace(**row))
        zero = {name: (ZERO if isinstance(value, Decimal) else 0) for name, value in counts.items()}
        metering.upsert_rollups(session, [(values, {**zero, "charged": delta})])
        row["charged"] = actual


def _new_events(session: Session, events: list[UsageEvent]) -> list[UsageEvent]:
    unique: dict[str, UsageEvent] = {}
    for e in events:
        unique.setdefault(e.request_id, e)
    seen: set[str] = set()
    ids = list(unique)
    for start in range(0, len(ids), 500):
        seen.update(session.scalars(
            select(UsageRecord.request_id).where(UsageRecord.request_id.in_(ids[start:start + 500]))))
    return [e for rid, e in unique.items() if rid not in seen]


def _period_keys(events: list[UsageEvent]) -> dict[tuple[int, int, int], Any]:
    """One representative timestamp per (org, year, month): the open period depends on nothing else."""
    keys: dict[tuple[int, int, int], Any] = {}
    for e in events:
        keys.setdefault((e.org_id, e.created_at.year, e.created_at.month), e.created_at)
    return keys


def _settle(session: Session, events: list[UsageEvent]) -> dict[str, Any]:
    by_org: dict[int, list[UsageEvent]] = defaultdict(list)
    for e in events:
        if e.reserved > 0 or e.charge > 0:
            by_org[e.org_id].append(e)
    charged: dict[str, Any] = {}
    for org_id in sorted(by_org):
        items = by_org[org_id]
        for e, amount in zip(items, ledger.settle_events(session, org_id, items)):
            charged[e.request_id] = amount
    return charged


def _record_row(e: UsageEvent, period: str, charged: Any) -> dict[str, Any]:
    return dict(
        request_id=e.request_id, org_id=e.org_id, api_key_id=e.api_key_id, provider=e.provider, model=e.model,
        credential=e.credential, byok_label=e.label, fallback=e.fallback, fallback_reason=e.fallback_reason,
        fallback_refused=e.fallback_refused, status=e.status, http_status=e.http_status,
        error_class=e.error_class, stream=e.stream, prompt_tokens=e.prompt_tokens,
        completion_tokens=e.completion_tokens, cached_tokens=e.cached_tokens,
        cache_write_tokens=e.cache_write_tokens, reasoning_tokens=e.reasoning_tokens,
        tokens_source=e.tokens_source, cost=e.cost, cost_status=e.cost_status, charged=charged,
        price_id=e.price_id, attempts_count=len(e.attempts), latency_ms=e.latency_ms, ttft_ms=e.ttft_ms,
        billing_period=period, created_at=e.created_at,
    )


def _attempt_row(record_id: int, seq: int, a) -> dict[str, Any]:
    return dict(record_id=record_id, seq=seq, provider=a.provider, model=a.model, credential=a.credential,
                byok_label=a.label, http_status=a.http_status, error_class=a.error_class, outcome=a.outcome,
                latency_ms=a.latency_ms)


def _rollups(rows: list[dict[str, Any]]) -> list[tuple[dict, dict]]:
    """Sum the records' rollup counts per dimension row, in a stable order (no lock-order deadlocks)."""
    summed: dict[tuple, tuple[dict, dict]] = {}
    for row in rows:
        values, counts = metering.rollup_row(SimpleNamespace(**row))
        key = tuple(sorted((k, str(v)) for k, v in values.items()))
        if key in summed:
            total = summed[key][1]
            for name, value in counts.items():
                total[name] = total[name] + value
        else:
            summed[key] = (values, dict(counts))
    return [summed[key] for key in sorted(summed)]
