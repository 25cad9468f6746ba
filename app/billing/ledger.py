"""Prepaid credits as a ledger. The balance moves only by conditional UPDATEs, so it never goes negative.

Entries are signed: grant +, reservation -, release +, settlement -, adjustment ±.
The account's balance always equals the sum of its entries.
"""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.billing.money import ZERO
from app.db import get_engine, hold_engine
from app.models import CreditAccount, CreditEntry
from app.types import utcnow


def ensure_account(session: Session, org_id: int) -> None:
    if session.get(CreditAccount, org_id) is None:
        session.add(CreditAccount(org_id=org_id, balance=ZERO, reserved=ZERO))
        session.flush()


def _move(session: Session, org_id: int, delta: Decimal, reserved_delta: Decimal = ZERO,
          floor: Decimal = ZERO) -> Decimal | None:
    """Add delta to the balance if it stays >= floor; returns the new balance, or None if refused."""
    stmt = (
        update(CreditAccount)
        .where(CreditAccount.org_id == org_id)
        .values(balance=CreditAccount.balance + delta, reserved=CreditAccount.reserved + reserved_delta,
                updated_at=utcnow())
        .returning(CreditAccount.balance)
    )
    if delta < 0:
        stmt = stmt.where(CreditAccount.balance + delta >= floor)
    return session.execute(stmt).scalar_one_or_none()


def _entry(session: Session, org_id: int, kind: str, amount: Decimal, balance_after: Decimal,
           request_id: str | None = None, note: str = "", user_id: int | None = None) -> CreditEntry:
    entry = CreditEntry(org_id=org_id, kind=kind, amount=amount, balance_after=balance_after,
                        request_id=request_id, note=note, user_id=user_id)
    session.add(entry)
    return entry


def grant(session: Session, org_id: int, amount: Decimal, note: str = "", user_id: int | None = None) -> CreditEntry:
    if not isinstance(amount, Decimal) or amount <= 0:
        raise ValueError("a grant must be a positive Decimal")
    ensure_account(session, org_id)
    balance = _move(session, org_id, amount)
    return _entry(session, org_id, "grant", amount, balance, note=note, user_id=user_id)


def adjust(session: Session, org_id: int, amount: Decimal, note: str, user_id: int | None = None) -> CreditEntry | None:
    """A signed correction; a negative one is refused (None) if it would overdraw."""
    ensure_account(session, org_id)
    balance = _move(session, org_id, amount)
    if balance is None:
        return None
    return _entry(session, org_id, "adjustment", amount, balance, note=note, user_id=user_id)


# Older than this, a reservation without a release belongs to a request whose worker died.
STALE_RESERVATION_AGE = timedelta(hours=1)

# PostgreSQL: the whole reservation in one prepared statement and one round trip. Built once:
# this runs on the response path of every shared-pool call.
_RESERVE_PG = text("""
    WITH moved AS (
        UPDATE credit_accounts
           SET balance = balance - :amount, reserved = reserved + :amount, updated_at = :now
         WHERE org_id = :org_id AND balance - :amount >= 0
     RETURNING balance)
    INSERT INTO credit_entries (org_id, kind, amount, request_id, note, created_at, balance_after, sequence)
    SELECT :org_id, 'reservation', -:amount, :request_id, '', :now, balance, 0 FROM moved
    RETURNING id
""")


def reserve(org_id: int, request_id: str, amount: Decimal) -> bool:
    """Hold the worst case of a shared-pool call before it starts, committed at once; False if it can't."""
    if amount <= 0:
        return True
    engine = get_engine()
    now = utcnow()
    if engine.dialect.name == "postgresql":
        params = {"amount": amount, "now": now, "org_id": org_id, "request_id": request_id}
        for attempt in (1, 2):
            try:
                with hold_engine().connect() as conn:
                    return conn.execute(_RESERVE_PG, params).first() is not None
            except DBAPIError as exc:
                # A pooled connection the server dropped (a restart, a failover): once more on a fresh one.
                if attempt == 2 or not exc.connection_invalidated:
                    raise
    with engine.begin() as conn:  # SQLite has one writer at a time: two plain statements
        moved = conn.execute(
            update(CreditAccount.__table__)
            .where(CreditAccount.org_id == org_id, CreditAccount.balance - amount >= ZERO)
            .values(balance=CreditAccount.balance - amount, reserved=CreditAccount.reserved + amount, updated_at=now)
            .returning(CreditAccount.balance)
        ).scalar_one_or_none()
        if moved is None:
            return False
        conn.execute(insert(CreditEntry.__table__).values(
            org_id=org_id, kind="reservation", amount=-amount, request_id=request_id, note="", created_at=now,
            balance_after=moved, sequence=0))
    return True


def settle(session: Session, org_id: int, request_id: str, reserved: Decimal, actual: Decimal) -> Decimal:
    """Release the reservation and debit the actual cost; returns what was actually charged.

    Should the actual cost exceed the reservation and the balance both (a
    provider ignoring max_tokens), the charge is capped at what is there:
    the balance never goes negative, and the shortfall stays visible as
    charged < cost on the usage record.
    """
    balance = None
    if reserved > 0 and request_id in open_holds(session, org_id, [request_id]):
        balance = _move(session, org_id, reserved, reserved_delta=-reserved)
        _entry(session, org_id, "release", reserved, balance, request_id=request_id)
    if actual <= 0:
        return ZERO
    balance = _move(session, org_id, -actual)
    charged = actual
    if balance is None:
        available = session.execute(
            select(CreditAccount.balance).where(CreditAccount.org_id == org_id).with_for_update()
        ).scalar_one_or_none() or ZERO
        charged = min(actual, available)
        if charged <= 0:
            return ZERO
        balance = _move(session, org_id, -charged)
    _entry(session, org_id, "settlement", -charged, balance, request_id=request_id)
    return charged


def settle_many(session: Session, org_id: int, items: list[tuple[str, Decimal, Decimal]]) -> list[Decimal]:
    """settle() for many (request_id, reserved, actual) of one organization: one locked read, one UPDATE.

    Entries, balances after each and the capping rule are exactly settle()'s,
    applied in order; the account row stays locked until the caller commits.
    """
    row = session.execute(
        select(CreditAccount.balance, CreditAccount.reserved).where(CreditAccount.org_id == org_id).with_for_update()
    ).one_or_none()
    if row is None:
        return [ZERO for _ in items]
    balance, reserved_total = row
    entries, charged = [], []
    holding = open_holds(session, org_id, [rid for rid, reserved, _ in items if reserved > 0])
    for request_id, reserved, actual in items:
        if reserved > 0 and request_id in holding:
            balance, reserved_total = balance + reserved, reserved_total - reserved
            entries.append(dict(kind="release", amount=reserved, balance_after=balance, request_id=request_id))
        take = min(actual, balance) if actual > 0 else ZERO
        if take > 0:
            balance -= take
            entries.append(dict(kind="settlement", amount=-take, balance_after=balance, request_id=request_id))
        charged.append(take if take > 0 else ZERO)
    if entries:
        session.execute(update(CreditAccount).where(CreditAccount.org_id == org_id)
                        .values(balance=balance, reserved=reserved_total, updated_at=utcnow()))
        session.execute(insert(CreditEntry), [{**e, "org_id": org_id, "note": ""} for e in entries])
    return charged


def settle_events(session: Session, org_id: int, events: list) -> list[Decimal]:
    """Settle the credit holds of one organization's usage events, in order: the recorder's one call into the ledger.

    Returns what each event was actually charged (see settle_many for the capping rule).
    """
    return settle_many(session, org_id, [(e.request_id, e.reserved, e.charge) for e in events])


def open_holds(session: Session, org_id: int, request_ids: list[str]) -> set[str]:
    """The request ids whose reservation is on the ledger and not yet released.

    A settlement releases only these: never a hold a stale sweep already gave
    back, nor one a database crash lost before it was flushed.
    """
    if not request_ids:
        return set()
    kinds: dict[str, set[str]] = {}
    for request_id, kind in session.execute(
        select(CreditEntry.request_id, CreditEntry.kind).where(
            CreditEntry.org_id == org_id, CreditEntry.kind.in_(("reservation", "release")),
            CreditEntry.request_id.in_(request_ids))
    ):
        kinds.setdefault(request_id, set()).add(kind)
    return {rid for rid, seen in kinds.items() if seen == {"reservation"}}


def release_stale(session: Session, older_than: timedelta = STALE_RESERVATION_AGE) -> int:
    """Give back reservations nobody settled: the request's worker died between reserve and record.

    A request lives at most a few attempt deadlines, so a reservation an hour
    old with no release is an orphan. Returns how many were released.
    """
    cutoff = utcnow() - older_than
    release = CreditEntry.__table__.alias("release_entry")
    stale = session.execute(
        select(CreditEntry.org_id, CreditEntry.request_id, CreditEntry.amount)
        # Only organizations holding anything can have an orphan: the index on (org, kind, created_at)
        # then serves this sweep, which every worker runs every 30 s, without scanning the whole ledger.
        .where(CreditEntry.org_id.in_(select(CreditAccount.org_id).where(CreditAccount.reserved > 0)),
               CreditEntry.kind == "reservation", CreditEntry.created_at < cutoff,
               ~select(release.c.id).where(release.c.kind == "release", release.c.org_id == CreditEntry.org_id,
                                           release.c.request_id == CreditEntry.request_id).exists())
        .order_by(CreditEntry.id)
    ).all()
    for org_id, request_id, amount in stale:
        held = -amount
        balance = _move(session, org_id, held, reserved_delta=-held)
        _entry(session, org_id, "release", held, balance, request_id=request_id,
               note="stale reservation released: the request was never recorded")
    return len(stale)


def balance_of(session: Session, org_id: int) -> tuple[Decimal, Decimal]:
    account = session.get(CreditAccount, org_id)
    if account is None:
        return ZERO, ZERO
    return account.balance, account.reserved


def ledger_sum(session: Session, org_id: int) -> Decimal:
    total = session.execute(select(func.sum(CreditEntry.amount)).where(CreditEntry.org_id == org_id)).scalar()
    return Decimal(total) if total is not None else ZERO
