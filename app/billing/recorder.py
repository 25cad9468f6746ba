"""commit_events: the one way usage events reach the database, whichever writer calls it.

A batch commits in one transaction (app.billing.batch). When the database
refuses it, the failure is classified:

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
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError, StatementError
from sqlalchemy.orm import Session

from app.billing import quarantine
from app.billing.batch import write_batch
from app.billing.codec import decode
from app.billing.events import UsageEvent
from app.db import session_scope
from app.models import UsageRecord
from app.models.usage import QuarantinedEvent

log = logging.getLogger(__name__)

TRANSIENT, DATA = "transient", "data"
# SQLSTATE classes that describe the row rather than the database: 22 data exception, 23 integrity violation.
_ROW_STATES = ("22", "23")


def classify(exc: BaseException) -> str:
    """TRANSIENT (retry the same events later) or DATA (something in the events themselves)."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return TRANSIENT
        state = getattr(exc.orig, "sqlstate", None)
        if state:
            return DATA if state[:2] in _ROW_STATES else TRANSIENT
        # No SQLSTATE: SQLite, or psycopg refusing a value before sending it (a NUL, a type it cannot adapt).
        return DATA if isinstance(exc, (DataError, IntegrityError, ProgrammingError)) else TRANSIENT
    if isinstance(exc, StatementError):
        return DATA  # a column type refused a value while binding it
    if isinstance(exc, (TypeError, ValueError, ArithmeticError, AttributeError, LookupError)):
        return DATA  # building rows from the event failed, or the driver could not encode a value
    return TRANSIENT


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
            if classify(exc) == TRANSIENT:
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
