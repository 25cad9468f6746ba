"""Versioned list prices per provider and model, in USD per million tokens."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Date, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.types import Money, UTCDateTime, utcnow


class Price(Base):
    """One version of a model's price; a change adds a row, nothing is edited in place."""

    __tablename__ = "prices"
    __table_args__ = (Index("ix_prices_lookup", "provider", "model", "effective_from"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    input_per_mtok: Mapped[Decimal] = mapped_column(Money)
    output_per_mtok: Mapped[Decimal] = mapped_column(Money)
    cached_input_per_mtok: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    cache_write_per_mtok: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    reasoning_per_mtok: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    effective_to: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    source: Mapped[str] = mapped_column(String(300), default="")
    source_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
