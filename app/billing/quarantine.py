"""The usage quarantine: events the database refused for a reason in their data, out of the writer's way.

A quarantined event is not billed until someone retries it (after fixing the
cause) or discards it; `billing check` fails while any is pending. Its
shared-pool credit hold is given back in the transaction that quarantines
it, and only a hold still open on the ledger is ever released, so neither a
retry nor the stale-hold sweep can release it twice.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError, StatementError
from sqlalchemy.orm import Session

from app.billing import ledger
from app.billing.codec import encode_for_keeping
from app.billing.events import UsageEvent
from app.billing.money import ZERO
from app.db import session_scope
from app.models import AuditLog, CreditEntry, Organization, UsageRecord
from app.models.usage import QuarantinedEvent
from app.types import utcnow

log = logging.getLogger(__name__)

PENDING, RECORDED, DISCARDED = "pending", "recorded", "discarded"
_PLAIN_ID = re.compile(r"[A-Za-z0-9_.:-]{1,40}")
_QUOTE = re.compile(r"['\"`]")
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_BIGINT = 2**63


def plain_request_id(value: object) -> bool:
    """A request id the database can look up as it is (the gateway's own are always such)."""
    return isinstance(value, str) and _PLAIN_ID.fullmatch(value) is not None


def quarantine_key(request_id: object) -> str:
    """The quarantine's key for an event: its request id, or a digest when the id itself is unusable."""
    if plain_request_id(request_id):
        return request_id  # type: ignore[return-value]
    return "bad-" + hashlib.sha256(repr(request_id).encode("ascii", "backslashreplace")).hexdigest()[:40]


def _org_id(value: object) -> int | None:
    return value if type(value) is int and -_BIGINT <= value < _BIGINT else None


def sanitize(text: str, limit: int = 200) -> str:
    """One line of printable ASCII, bounded."""
    return _NOT_PRINTABLE.sub("?", text)[:limit]


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


def describe(exc: BaseException) -> tuple[str, str]:
    """(error class, error text) without any value of the refused row.

    PostgreSQL: the SQLSTATE, the condition and the schema names the server
    reports; never its message or DETAIL, which quote values. Otherwise the
    first line of the driver's or Python's message, cut at its first quote
    (values are quoted there), and a codec error's reason alone.
    """
    cause = getattr(exc, "orig", None) or exc
    state = getattr(cause, "sqlstate", None)
    if state:
        diag = getattr(cause, "diag", None)
        names = [f"{label} {value}" for label, attr in
                 (("table", "table_name"), ("column", "column_name"), ("constraint", "constraint_name"))
                 if (value := getattr(diag, attr, None))]
        text = " ".join([state, type(cause).__name__, *names])
    elif isinstance(cause, UnicodeError):
        text = f"{type(cause).__name__}: {getattr(cause, 'reason', '')}"
    else:
        head, *quoted = _QUOTE.split((str(cause).splitlines() or [""])[0], maxsplit=1)
        text = f"{type(cause).__name__}: {head}{'...' if quoted else ''}"
    return sanitize(type(exc).__name__, 64), sanitize(text)


def quarantine(event: UsageEvent, exc: BaseException) -> bool:
    """Keep a refused event and give back its credit hold, in one transaction; False if it was recorded after all.

    Should giving the hold back fail too, the event is kept without it (the
    stale-hold sweep returns it within the hour): the quarantine must always
    be writable.
    """
    error_class, error = describe(exc)
    try:
        with session_scope() as session:
            kept = store(session, event, error_class, error, release=True)
    except Exception as release_failed:
        if classify(release_failed) == TRANSIENT:
            raise
        log.error("usage quarantine: credit hold of %s not released (%s); the stale-hold sweep will",
                  quarantine_key(event.request_id), describe(release_failed)[1])
        with session_scope() as session:
            kept = store(session, event, error_class, error, release=False)
    if kept:
        log.error("usage record %s quarantined (%s: %s); see `manage.py usage quarantine list`",
                  quarantine_key(event.request_id), error_class, error)
    return kept


def store(session: Session, event: UsageEvent, error_class: str, error: str, release: bool) -> bool:
    assert isinstance(event, UsageEvent)  # its fields are metadata only: never a credential
    key = quarantine_key(event.request_id)
    if plain_request_id(event.request_id) and session.scalar(
            select(UsageRecord.id).where(UsageRecord.request_id == event.request_id)) is not None:
        return False  # a duplicate of a record another writer committed meanwhile: nothing was lost
    row = session.scalar(select(QuarantinedEvent).where(QuarantinedEvent.request_id == key))
    now = utcnow()
    if row is None:
        session.add(QuarantinedEvent(request_id=key, org_id=_org_id(event.org_id), status=PENDING,
                                     error_class=error_class, error=error, event=encode_for_keeping(event),
                                     failures=1, quarantined_at=now, last_failed_at=now, resolution=""))
    else:  # replayed from a journal, or retried and refused again
        row.failures += 1
        row.error_class, row.error, row.last_failed_at = error_class, error, now
    if release:
        _release_hold(session, event)
    return True


def _release_hold(session: Session, event: UsageEvent) -> None:
    """Release the hold the ledger has for this request, for the amount the ledger holds (not the event's claim)."""
    org_id = _org_id(event.org_id)
    if org_id is None or not plain_request_id(event.request_id):
        return  # no hold can exist under such an organization or request id
    if event.request_id not in ledger.open_holds(session, org_id, [event.request_id]):
        return
    held = -session.scalar(select(func.sum(CreditEntry.amount)).where(
        CreditEntry.org_id == org_id, CreditEntry.kind == "reservation", CreditEntry.request_id == event.request_id))
    ledger.settle(session, org_id, event.request_id, held, ZERO)


@dataclass
class QuarantineSummary:
    """What is pending in the quarantine: the dashboard and `billing check` show this."""

    count: int = 0
    oldest: datetime | None = None
    by_org: dict[int | None, int] = field(default_factory=dict)


def quarantine_summary(session: Session, org_id: int | None = None) -> QuarantineSummary:
    """Pending quarantined events, of one organization or of all."""
    q = QuarantinedEvent
    stmt = select(q.org_id, func.count(), func.min(q.quarantined_at)).where(q.status == PENDING).group_by(q.org_id)
    if org_id is not None:
        stmt = stmt.where(q.org_id == org_id)
    summary = QuarantineSummary()
    for org, count, oldest in session.execute(stmt):
        summary.by_org[org] = count
        summary.count += count
        summary.oldest = oldest if summary.oldest is None else min(summary.oldest, oldest)
    return summary


def pending(session: Session, org_id: int | None = None, ids: list[int] | None = None,
            limit: int | None = None) -> list[QuarantinedEvent]:
    """Pending quarantined events, oldest first."""
    q = QuarantinedEvent
    stmt = select(q).where(q.status == PENDING).order_by(q.quarantined_at, q.id)
    if org_id is not None:
        stmt = stmt.where(q.org_id == org_id)
    if ids is not None:
        stmt = stmt.where(q.id.in_(ids))
    return list(session.scalars(stmt.limit(limit)))


def resolve(session: Session, row: QuarantinedEvent, status: str, resolution: str) -> None:
    row.status, row.resolved_at, row.resolution = status, utcnow(), sanitize(resolution, 300)


def discard(session: Session, row: QuarantinedEvent, operator: str, reason: str) -> None:
    """Give up on an event for good: it is never billed. The row stays, with who and why, and the audit log says so."""
    resolve(session, row, DISCARDED, f"discarded by {operator}: {reason}")
    summary = f"discarded quarantined usage event {row.request_id}"
    detail = {"quarantine_id": row.id, "request_id": row.request_id, "operator": sanitize(operator, 64),
              "reason": sanitize(reason, 200), "error": row.error}
    if row.org_id is not None and session.get(Organization, row.org_id) is not None:
        session.add(AuditLog(org_id=row.org_id, user_id=None, action="usage.quarantine.discard",
                             summary=summary, detail=detail))
    log.warning("usage quarantine: %s by %s: %s", summary, detail["operator"], detail["reason"])
