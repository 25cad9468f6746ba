"""Usage: one record per gateway request, one row per upstream attempt, daily rollups, and the quarantine."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Boolean, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.types import Money, UTCDateTime, utcnow


class UsageRecord(Base):
    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_org_created", "org_id", "created_at", "id"),
        Index("ix_usage_records_org_period", "org_id", "billing_period"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    # The gateway's own request id, never the provider's: the idempotency key of recording.
    request_id: Mapped[str] = mapped_column(String(40), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True)
    provider: Mapped[str] = mapped_column(String(32), default="")
    model: Mapped[str] = mapped_column(String(128), default="")
    credential: Mapped[str] = mapped_column(String(8), default="shared")  # byok | shared
    byok_label: Mapped[str] = mapped_column(String(64), default="")
    fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    fallback_reason: Mapped[str] = mapped_column(String(32), default="")
    fallback_refused: Mapped[str] = mapped_column(String(32), default="")
    status: Mapped[str] = mapped_column(String(8), default="ok")  # ok | error
    http_status: Mapped[int] = mapped_column(Integer, default=200)
    error_class: Mapped[str] = mapped_column(String(32), default="")
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0)
    tokens_source: Mapped[str] = mapped_column(String(10), default="reported")  # reported | estimated | none
    cost: Mapped[Decimal | None] = mapped_column(Money, nullable=True)  # provider list price; None if unpriced
    cost_status: Mapped[str] = mapped_column(String(10), default="priced")  # priced | unpriced | none
    charged: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))  # credits debited (shared only)
    price_id: Mapped[int | None] = mapped_column(ForeignKey("prices.id"), nullable=True)
    attempts_count: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    ttft_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    billing_period: Mapped[str] = mapped_column(String(7))  # YYYY-MM of the open period it landed in
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    attempts: Mapped[list["UsageAttempt"]] = relationship(
        back_populates="record", order_by="UsageAttempt.seq", cascade="all, delete-orphan"
    )


class UsageAttempt(Base):
    __tablename__ = "usage_attempts"
    __table_args__ = (UniqueConstraint("record_id", "seq"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("usage_records.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    credential: Mapped[str] = mapped_column(String(8))
    byok_label: Mapped[str] = mapped_column(String(64), default="")
    http_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_class: Mapped[str] = mapped_column(String(32), default="")
    outcome: Mapped[str] = mapped_column(String(16))  # ok | failed | skipped
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)

    record: Mapped[UsageRecord] = relationship(back_populates="attempts")


class UsageSummary:
    """What the rollups and the daily summary share: the common dimensions and what a row adds up."""

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    day: Mapped[date] = mapped_column(Date)
    billing_period: Mapped[str] = mapped_column(String(7))
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(128))
    credential: Mapped[str] = mapped_column(String(8))
    # priced | unpriced | none: unpriced usage must never be summed into a priced line.
    cost_status: Mapped[str] = mapped_column(String(10), default="priced")
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    fallbacks: Mapped[int] = mapped_column(BigInteger, default=0)
    unpriced_requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms_total: Mapped[int] = mapped_column(BigInteger, default=0)
    cost: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))  # priced records only
    charged: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))


class UsageRollup(UsageSummary, Base):
    """Per org × UTC day × provider × model × credential × key × label × fallback reason."""

    __tablename__ = "usage_rollups"
    __table_args__ = (
        UniqueConstraint(
            "org_id", "day", "provider", "model", "credential", "api_key_id", "byok_label", "fallback_reason",
            "billing_period", "cost_status", name="uq_usage_rollups_dims",
        ),
        Index("ix_usage_rollups_org_day", "org_id", "day"),
        Index("ix_usage_rollups_org_period", "org_id", "billing_period"),
    )

    # 0 rather than NULL so the unique constraint holds on every backend.
    api_key_id: Mapped[int] = mapped_column(Integer, default=0)
    byok_label: Mapped[str] = mapped_column(String(64), default="")
    fallback_reason: Mapped[str] = mapped_column(String(32), default="")


class UsageDaily(UsageSummary, Base):
    """Per org × UTC day × provider × model × credential × cost status: the dashboard's coarse summary.

    Kept in the same transaction as usage_rollups. It drops the key, label and
    fallback-reason dimensions (about twenty times fewer rows), so pages that
    never filter or group by them read far less; the two columns about
    fallback reasons keep the fallback figures exact without the reason itself.
    """

    __tablename__ = "usage_daily"
    __table_args__ = (
        UniqueConstraint("org_id", "day", "provider", "model", "credential", "billing_period", "cost_status",
                         name="uq_usage_daily_dims"),
        Index("ix_usage_daily_org_day", "org_id", "day"),
        Index("ix_usage_daily_org_period", "org_id", "billing_period"),
    )

    # Records that carry a fallback reason: the overview's fallback rate and fallback cost need them.
    reason_requests: Mapped[int] = mapped_column(BigInteger, default=0)
    reason_charged: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))


class QuarantinedEvent(Base):
    """A usage event the database refused for a reason in its data, kept to inspect, retry or discard.

    Every column is built so that this row can always be written, whatever was
    wrong with the event: no foreign key (the organization may be what is
    missing), a request id reduced to bounded printable ASCII, an error text
    without any value of the row, and the event as escaped JSON text.
    """

    __tablename__ = "usage_quarantine"
    __table_args__ = (Index("ix_usage_quarantine_status_org", "status", "org_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    # The event's request id when it is a plain one, else a digest of it: one row per event, replays included.
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    status: Mapped[str] = mapped_column(String(10), default="pending")  # pending | recorded | discarded
    error_class: Mapped[str] = mapped_column(String(64), default="")
    error: Mapped[str] = mapped_column(String(200), default="")  # SQLSTATE and condition, or a redacted first line
    event: Mapped[str] = mapped_column(Text)  # app.billing.codec's JSON line: control characters escaped
    failures: Mapped[int] = mapped_column(Integer, default=1)
    quarantined_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_failed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    resolution: Mapped[str] = mapped_column(String(300), default="")  # how it left the quarantine, by whom, why
