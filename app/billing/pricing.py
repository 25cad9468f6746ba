"""Price versions: the shipped catalog, a per-worker price book, and the cost of one call."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.billing.money import COST_QUANTUM, MILLION, ZERO
from app.models import Price

CATALOG_PATH = os.path.join(os.path.dirname(__file__), "catalog.json")
PRICE_FIELDS = {
    "input": "input_per_mtok", "output": "output_per_mtok", "cached_input": "cached_input_per_mtok",
    "cache_write": "cache_write_per_mtok", "reasoning": "reasoning_per_mtok",
}


@dataclass(frozen=True, slots=True)
class PriceVersion:
    id: int
    provider: str
    model: str
    input: Decimal
    output: Decimal
    cached_input: Decimal | None
    cache_write: Decimal | None
    reasoning: Decimal | None
    effective_from: datetime
    source: str


def load_catalog(path: str = CATALOG_PATH) -> dict:
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ValueError(f"{path}: expected an object with a 'models' array")
    for i, entry in enumerate(data["models"]):
        for name in ("provider", "model", "input", "output"):
            if not entry.get(name):
                raise ValueError(f"{path}: models[{i}] is missing '{name}'")
        for name in PRICE_FIELDS:
            if entry.get(name) is not None:
                value = Decimal(str(entry[name]))
                if value < 0:
                    raise ValueError(f"{path}: models[{i}].{name} is negative")
    return data


def import_catalog(session: Session, data: dict, effective_from: datetime | None = None,
                   only_new: bool = False) -> int:
    """Add a price version for every catalog entry whose price differs from the one in force."""
    start = effective_from or _parse_ts(data.get("effective_from")) or datetime.now(timezone.utc)
    added = 0
    for entry in data["models"]:
        current = session.scalars(
            select(Price).where(Price.provider == entry["provider"], Price.model == entry["model"],
                                Price.effective_to.is_(None)).order_by(Price.effective_from.desc())
        ).first()
        values = {column: _dec(entry.get(key)) for key, column in PRICE_FIELDS.items()}
        if current is not None:
            if only_new or all(getattr(current, c) == v for c, v in values.items()):
                continue
            if current.effective_from >= start:
                raise ValueError(f"{entry['provider']}/{entry['model']}: a version already starts at or after {start:%Y-%m-%d}")
            current.effective_to = start
        session.add(Price(
            provider=entry["provider"], model=entry["model"], effective_from=start,
            source=entry.get("source", ""), source_date=_parse_date(entry.get("source_date")), **values,
        ))
        added += 1
    session.flush()
    _book.invalidate()
    return added


def cost_of(price: PriceVersion, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0,
            cache_write_tokens: int = 0, reasoning_tokens: int = 0) -> Decimal:
    """List-price cost of one call; prompt_tokens includes cached and cache-write tokens (OpenAI meaning)."""
    cached = min(cached_tokens, prompt_tokens)
    writes = min(cache_write_tokens, prompt_tokens - cached)
    fresh = prompt_tokens - cached - writes
    reasoning = min(reasoning_tokens, completion_tokens) if price.reasoning is not None else 0
    total = (
        fresh * price.input
        + cached * (price.cached_input if price.cached_input is not None else price.input)
        + writes * (price.cache_write if price.cache_write is not None else price.input)
        + (completion_tokens - reasoning) * price.output
        + reasoning * (price.reasoning or ZERO)
    )
    return (total / MILLION).quantize(COST_QUANTUM)


class PriceBook:
    """Every price version, held per worker and refreshed every few seconds (prices change rarely)."""

    def __init__(self, ttl: float = 30.0):
        self._ttl = ttl
        self._loaded_at: float | None = None
        self._versions: dict[tuple[str, str], list[PriceVersion]] = {}

    def invalidate(self) -> None:
        self._loaded_at = None

    def _refresh(self, session: Session) -> None:
        versions: dict[tuple[str, str], list[PriceVersion]] = {}
        for p in session.scalars(select(Price).order_by(Price.effective_from)):
            versions.setdefault((p.provider, p.model), []).append(PriceVersion(
                p.id, p.provider, p.model, p.input_per_mtok, p.output_per_mtok, p.cached_input_per_mtok,
                p.cache_write_per_mtok, p.reasoning_per_mtok, p.effective_from, p.source,
            ))
        self._versions = versions
        self._loaded_at = time.monotonic()

    def _ensure(self) -> None:
        if self._loaded_at is not None and time.monotonic() - self._loaded_at < self._ttl:
            return
        from app.db import session_scope

        # No lock around the query: a lock held across database I/O would stall a
        # gevent worker; two greenlets refreshing at once is harmless.
        with session_scope() as session:
            self._refresh(session)

    def lookup(self, provider: str, model: str, at: datetime | None = None) -> PriceVersion | None:
        self._ensure()
        at = at or datetime.now(timezone.utc)
        found = None
        for version in self._versions.get((provider, model), ()):
            if version.effective_from <= at:
                found = version
        return found

    def current(self) -> list[PriceVersion]:
        self._ensure()
        now = datetime.now(timezone.utc)
        return [v for key in sorted(self._versions) if (v := self.lookup(*key, at=now))]

    def providers_of(self, model: str) -> list[str]:
        self._ensure()
        return sorted(p for (p, m) in self._versions if m == model)


_book = PriceBook()


def price_book() -> PriceBook:
    return _book


def _dec(value) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _parse_ts(value) -> datetime | None:
    if not value:
        return None
    ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _parse_date(value) -> date | None:
    return date.fromisoformat(value) if value else None
