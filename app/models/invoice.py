"""Monthly invoices per organization; finalized ones are immutable in the database itself."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.types import Money, UTCDateTime, utcnow

INVOICE_STATUSES = ("draft", "finalized", "void")
LINE_SECTIONS = ("shared", "byok", "unpriced", "fallback")
_COUNT = BigInteger().with_variant(Integer, "sqlite")


class Invoice(Base):
    __tablename__ = "invoices"
    __table_args__ = (Index("ix_invoices_org_period", "org_id", "period"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    period: Mapped[str] = mapped_column(String(7))  # YYYY-MM, UTC
    status: Mapped[str] = mapped_column(String(10), default="finalized")
    number: Mapped[str | None] = mapped_column(String(20), unique=True, nullable=True)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    shared_total: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    byok_total: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    total_spend: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    opening_balance: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    grants: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    credits_used: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    closing_balance: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    finalized_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finalized_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    void_reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    lines: Mapped[list["InvoiceLine"]] = relationship(back_populates="invoice", order_by="InvoiceLine.position")


class InvoiceLine(Base):
    __tablename__ = "invoice_lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    section: Mapped[str] = mapped_column(String(10))
    provider: Mapped[str] = mapped_column(String(32), default="")
    model: Mapped[str] = mapped_column(String(128), default="")
    reason: Mapped[str] = mapped_column(String(32), default="")
    credential: Mapped[str] = mapped_column(String(8), default="")  # byok | shared, for unpriced lines
    # 64-bit: a month of one model can pass 2^31 tokens (SQLite integers are 64-bit already).
    requests: Mapped[int] = mapped_column(_COUNT, default=0)
    input_tokens: Mapped[int] = mapped_column(_COUNT, default=0)
    output_tokens: Mapped[int] = mapped_column(_COUNT, default=0)
    cached_tokens: Mapped[int] = mapped_column(_COUNT, default=0)
    unrounded_amount: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    amount: Mapped[Decimal | None] = mapped_column(Money, nullable=True)  # None for unpriced lines

    invoice: Mapped[Invoice] = relationship(back_populates="lines")


class InvoiceCounter(Base):
    """Gapless invoice numbering: one row per year, incremented in the finalizing transaction."""

    __tablename__ = "invoice_counters"

    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer, default=0)


class FinalizedPeriod(Base):
    """Which (org, month) is closed, so recording can route late records to the next open period."""

    __tablename__ = "finalized_periods"
    __table_args__ = (UniqueConstraint("org_id", "period"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    period: Mapped[str] = mapped_column(String(7))
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id"))
    note: Mapped[str] = mapped_column(Text, default="")
