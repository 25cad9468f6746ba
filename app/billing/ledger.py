"""Prepaid credits as a ledger. The balance moves only by conditional UPDATEs, so it never goes negative.

Entries are signed: grant +, reservation -, release +, settlement -, adjustment ±.
The account's balance always equals the sum of its entries.
"""
from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.billing.money import ZERO
from app.db import session_scope
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


def reserve(org_id: int, request_id: str, amount: Decimal) -> bool:
    """Hold the worst case of a shared-pool call before it starts, in its own committed transaction."""
    if amount <= 0:
        return True
    with session_scope() as session:
        balance = _move(session, org_id, -amount, reserved_delta=amount)
        if balance is None:
            return False
        _entry(session, org_id, "reservation", -amount, balance, request_id=request_id)
    return True


def settle(session: Session, org_id: int, request_id: str, reserved: Decimal, actual: Decimal) -> Decimal:
    """Release the reservation and debit the actual cost; returns what was actually charged.

    Should the actual cost exceed the reservation and the balance both (a
    provider ignoring max_tokens), the charge is capped at what is there:
    the balance never goes negative, and the shortfall stays visible as
    charged < cost on the usage record.
    """
    balance = None
    if reserved > 0:
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


def balance_of(session: Session, org_id: int) -> tuple[Decimal, Decimal]:
    account = session.get(CreditAccount, org_id)
    if account is None:
        return ZERO, ZERO
    return account.balance, account.reserved


def ledger_sum(session: Session, org_id: int) -> Decimal:
    total = session.execute(select(func.sum(CreditEntry.amount)).where(CreditEntry.org_id == org_id)).scalar()
    return Decimal(total) if total is not None else ZERO
