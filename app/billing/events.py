"""What the gateway hands billing for each request: a UsageEvent with its AttemptEvents (metadata only, never a key)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

from app.billing.money import ZERO
from app.types import utcnow


@dataclass(slots=True)
class AttemptEvent:
    provider: str
    model: str
    credential: str
    label: str
    outcome: str  # ok | failed
    http_status: int | None = None
    error_class: str = ""
    latency_ms: int = 0


@dataclass(slots=True)
class UsageEvent:
    request_id: str
    org_id: int
    api_key_id: int | None
    provider: str
    model: str
    credential: str  # byok | shared
    status: str  # ok | error
    http_status: int
    created_at: datetime = field(default_factory=utcnow)
    label: str = ""
    fallback: bool = False
    fallback_reason: str = ""
    fallback_refused: str = ""
    error_class: str = ""
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    tokens_source: str = "reported"  # reported | estimated | none
    cost: Decimal | None = None  # provider list price; None when unpriced
    cost_status: str = "priced"  # priced | unpriced | none
    charge: Decimal = ZERO  # what the shared pool should debit (0 for BYOK)
    reserved: Decimal = ZERO  # the reservation to release
    price_id: int | None = None
    latency_ms: int = 0
    ttft_ms: int | None = None
    attempts: list[AttemptEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Its UTC month and day decide the record's period and rollup row: any other offset would move them.
        if self.created_at.tzinfo is None:
            raise ValueError("UsageEvent.created_at must be timezone-aware")
        self.created_at = self.created_at.astimezone(timezone.utc)
