"""commit_events: the one way usage events reach the database, whichever writer calls it.

A batch commits in one transaction (app.billing.batch). When the database
refuses it, the failure is classified (app.billing.quarantine.classify):

- transient (unreachable, a serialization failure, a deadlock, a lock or
  statement timeout, a schema not migrated yet): nothing is decided about the
  events; the exception goes back to the caller, which retries the same
  events later. Replays are idempotent (the request id is unique).
- data (a value too long, a NUL, a missing organization or key, a value the
  driver cannot adapt, a violated constraint): the batch is split in halves,
  each committed on its own, until every refused event stands alone; those go
  to the quarantine (app.billing.quarantine), the others are recorded exactly
  as if they had come alone. One organization's bad row never holds back
  another's billing, and the writer never stops on it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.billing import quarantine
from app.billing.batch import write_batch
from app.billing.codec import decode
from app.billing.events import UsageEvent
from app.db import session_scope
from app.models import UsageRecord
from app.models.usage import QuarantinedEvent

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    recorded: int = 0  # newly recorded (a request id already recorded counts as done, not here)
    quarantined: list[str] = field(default_factory=list)  # quarantine keys


def _store(events: list[UsageEvent]) -> int:
    with session_scope() as session:
        return write_batch(session, events)


def commit_events(events: list[UsageEvent], store: Callable[[list[UsageEvent]], int] = _store) -> Outcome:
    """Record the events; quarantine the ones refused for a data reason. Raises only for a transient failure."""
    outcome = Outcome()
    parts = [list(events)]
    while parts:
        part = parts.pop()
        try:
            outcome.recorded += store(part)
        except Exception as exc:
            if quarantine.classify(exc) == quarantine.TRANSIENT:
                raise
            if len(part) == 1:
                if quarantine.quarantine(part[0], exc):
                    outcome.quarantined.append(quarantine.quarantine_key(part[0].request_id))
                continue
            if len(part) == len(events):
                log.warning("usage batch of %d refused (%s); isolating the events at fault",
                            len(part), " ".join(quarantine.describe(exc)))
            half = len(part) // 2
            parts += [part[half:], part[:half]]  # first half first
    return outcome


@dataclass
class RetryResult:
    recorded: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def retry_quarantined(org_id: int | None = None, ids: list[int] | None = None) -> RetryResult:
    """Run pending quarantined events through commit_events again; those now recorded leave the quarantine."""
    result = RetryResult()
    with session_scope() as session:
        rows = [(row.id, row.request_id, row.event) for row in quarantine.pending(session, org_id, ids)]
    for row_id, key, text in rows:
        try:
            event = decode(text)
        except (ValueError, TypeError, KeyError):
            result.unreadable.append(key)
            continue
        commit_events([event])
        with session_scope() as session:
            if _is_recorded(session, event):
                quarantine.resolve(session, session.get(QuarantinedEvent, row_id),
                                   quarantine.RECORDED, "recorded by retry")
                result.recorded.append(key)
            else:
                result.refused.append(key)
    return result


def _is_recorded(session: Session, event: UsageEvent) -> bool:
    return quarantine.plain_request_id(event.request_id) and session.scalar(
        select(UsageRecord.id).where(UsageRecord.request_id == event.request_id)) is not None
