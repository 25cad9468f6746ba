"""Prepaid credits: an append-only ledger and a per-organization balance kept beside it."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.types import Money, UTCDateTime, utcnow

ENTRY_KINDS = ("grant", "reservation", "settlement", "release", "adjustment")


class CreditAccount(Base):
    """The running balance, updated with a conditional UPDATE so it can never go negative."""

    __tablename__ = "credit_accounts"
    __table_args__ = (
        CheckConstraint("balance >= 0", name="balance_not_negative"),
        CheckConstraint("reserved >= 0", name="reserved_not_negative"),
    )

    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    # Available balance == sum of all ledger entries (reservations included).
    balance: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    # Sum of open reservations, for display: already subtracted from balance.
    reserved: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CreditEntry(Base):
    __tablename__ = "credit_entries"
    __table_args__ = (
        Index("ix_credit_entries_org_created", "org_id", "created_at"),
        Index("ix_credit_entries_request", "request_id"),
        Index("ix_credit_entries_org_kind_created", "org_id", "kind", "created_at"),
        Index("ix_credit_entries_org_id", "org_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    kind: Mapped[str] = mapped_column(String(16))
    # Signed: grants and releases positive, reservations and settlements negative.
    amount: Mapped[Decimal] = mapped_column(Money)
    request_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # For display in ledger pages; recomputable from the entries.
    balance_after: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    sequence: Mapped[int] = mapped_column(Integer, default=0)
