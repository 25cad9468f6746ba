"""Usage figures for the dashboard, from the rollup tables (never a scan of raw records).

Two tables hold the same figures: usage_daily (org × day × provider × model ×
credential × cost status) and usage_rollups, which also splits them by
gateway key, BYOK label and fallback reason. A query reads the summary unless
it filters or groups by one of those three (`source`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select, type_coerce
from sqlalchemy.orm import Session

from app.billing.money import ZERO
from app.models import UsageDaily, UsageRollup
from app.types import Money

R = UsageRollup
S = UsageDaily
# Each dimension by column name, read from whichever table the query uses.
DIMENSIONS = {
    "day": ("day",),
    "provider": ("provider",),
    "model": ("provider", "model"),
    "credential": ("credential",),
    "key": ("api_key_id",),
    "label": ("byok_label",),
    "fallback_reason": ("fallback_reason",),
}
FINE_ONLY = ("key", "label", "fallback_reason")
METRICS = ("requests", "errors", "error_rate", "fallbacks", "prompt_tokens", "completion_tokens", "tokens",
           "avg_latency_ms", "byok_cost", "shared_charged", "spend", "unpriced_requests")


def _money_sum(expr) -> Any:
    return type_coerce(func.coalesce(func.sum(expr), 0), Money())


def metric_columns(t=S) -> list:
    """The aggregate columns every query shares, labelled by metric name, over table t."""
    byok = t.credential == "byok"
    zero = type_coerce(0, Money())
    if t is S:
        fallback_charged, fallback_requests = t.reason_charged, t.reason_requests
    else:
        with_reason = t.fallback_reason != ""
        fallback_charged = case((with_reason, t.charged), else_=zero)
        fallback_requests = case((with_reason, t.requests), else_=0)
    return [
        func.sum(t.requests).label("requests"),
        func.sum(t.errors).label("errors"),
        func.sum(t.fallbacks).label("fallbacks"),
        func.sum(t.unpriced_requests).label("unpriced_requests"),
        func.sum(t.prompt_tokens).label("prompt_tokens"),
        func.sum(t.completion_tokens).label("completion_tokens"),
        func.sum(t.latency_ms_total).label("latency_ms_total"),
        # BYOK traffic is paid to the provider at list price; shared traffic costs the credits charged.
        _money_sum(case((byok, t.cost), else_=zero)).label("byok_cost"),
        _money_sum(t.charged).label("shared_charged"),
        _money_sum(fallback_charged).label("fallback_charged"),
        # Requests that set out on a BYOK key: served BYOK, or moved onto the pool by a fallback.
        func.sum(case((byok, t.requests), else_=fallback_requests)).label("byok_attempted"),
    ]


MONEY_FIELDS = ("byok_cost", "shared_charged", "fallback_charged")


@dataclass
class Totals:
    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    unpriced_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms_total: int = 0
    byok_cost: Decimal = ZERO
    shared_charged: Decimal = ZERO
    fallback_charged: Decimal = ZERO
    byok_attempted: int = 0
    key: tuple = field(default_factory=tuple)

    @classmethod
    def of(cls, row: Any, key: tuple = ()) -> "Totals":
        m = row._mapping
        values: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if name == "key":
                continue
            value = m[name]
            if name in MONEY_FIELDS:
                values[name] = value if value is not None else ZERO
            else:  # PostgreSQL's SUM(bigint) is numeric: counts come back as Decimal
                values[name] = int(value or 0)
        return cls(**values, key=key)

    @property
    def tokens(self) -> int:
        return int(self.prompt_tokens or 0) + int(self.completion_tokens or 0)

    @property
    def spend(self) -> Decimal:
        return self.byok_cost + self.shared_charged

    @property
    def error_rate(self) -> Decimal | None:
        return Decimal(self.errors) / Decimal(self.requests) if self.requests else None

    @property
    def fallback_rate(self) -> Decimal | None:
        """Share of BYOK-bound requests that moved onto shared credits."""
        return Decimal(self.fallbacks) / Decimal(self.byok_attempted) if self.byok_attempted else None

    @property
    def avg_latency_ms(self) -> int | None:
        return int(self.latency_ms_total) // int(self.requests) if self.requests else None

    def value(self, metric: str) -> Any:
        return getattr(self, metric)

    @classmethod
    def sum(cls, rows: list["Totals"]) -> "Totals":
        """The total of grouped rows, without another query."""
        total = cls()
        for t in rows:
            for name in cls.__dataclass_fields__:
                if name != "key":
                    setattr(total, name, getattr(total, name) + getattr(t, name))
        return total


@dataclass
class UsageFilter:
    start: date
    end: date
    provider: str = ""
    model: str = ""
    credential: str = ""
    api_key_id: int | None = None
    label: str = ""

    def source(self, group: str | None = None):
        """The summary table, unless the grouping or a filter needs a key, label or fallback reason."""
        if group in FINE_ONLY or self.api_key_id is not None or self.label:
            return R
        return S

    def clauses(self, org_id: int, t) -> list:
        """The WHERE clauses over table t (the summary has no key or label column: see `source`)."""
        where = [t.org_id == org_id, t.day >= self.start, t.day <= self.end]
        if self.provider:
            where.append(t.provider == self.provider)
        if self.model:
            where.append(t.model == self.model)
        if self.credential:
            where.append(t.credential == self.credential)
        if self.api_key_id is not None:
            where.append(t.api_key_id == self.api_key_id)
        if self.label:
            where.append(t.byok_label == self.label)
        return where


def totals(session: Session, where: list, t=S) -> Totals:
    return Totals.of(session.execute(select(*metric_columns(t)).where(*where)).one())


def grouped(session: Session, where: list, dimension: str, t=S) -> list[Totals]:
    dims = [getattr(t, name) for name in DIMENSIONS[dimension]]
    rows = session.execute(select(*dims, *metric_columns(t)).where(*where).group_by(*dims))
    return [Totals.of(row, tuple(row[: len(dims)])) for row in rows]


def sort_rows(rows: list[Totals], metric: str, descending: bool) -> list[Totals]:
    if metric == "name":
        return sorted(rows, key=lambda t: tuple(str(k) for k in t.key), reverse=descending)
    # None (no requests, no rate) sorts last in either direction.
    present = [t for t in rows if t.value(metric) is not None]
    missing = [t for t in rows if t.value(metric) is None]
    return sorted(present, key=lambda t: t.value(metric), reverse=descending) + missing


def daily_totals(session: Session, where: list, t=S) -> dict[tuple[date, str], Totals]:
    """Totals per (UTC day, credential kind): one scan serves a chart and any window inside it."""
    rows = session.execute(select(t.day, t.credential, *metric_columns(t)).where(*where)
                           .group_by(t.day, t.credential))
    return {(row.day, row.credential): Totals.of(row) for row in rows}


def chart_series(daily: dict[tuple[date, str], Totals], start: date, end: date,
                 metric: str = "spend") -> tuple[list[date], dict[str, list]]:
    """One value per UTC day and credential kind, zero-filled, for a stacked chart."""
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    series: dict[str, list] = {"byok": [ZERO] * len(days), "shared": [ZERO] * len(days)}
    index = {d: i for i, d in enumerate(days)}
    for (day, credential), t in daily.items():
        i = index.get(day)
        if i is None or credential not in series:
            continue
        series[credential][i] = {"spend": t.spend, "requests": Decimal(t.requests), "tokens": Decimal(t.tokens)}[metric]
    return days, series


def daily_by_credential(session: Session, where: list, start: date, end: date,
                        metric: str = "spend", t=S) -> tuple[list[date], dict[str, list]]:
    return chart_series(daily_totals(session, where, t), start, end, metric)


def filter_options(session: Session, org_id: int, start: date, end: date) -> dict[str, list[str]]:
    """Providers, models and labels seen in the date range, for the filter dropdowns (one query)."""
    rows = session.execute(select(R.provider, R.model, R.byok_label)
                           .where(R.org_id == org_id, R.day >= start, R.day <= end)
                           .group_by(R.provider, R.model, R.byok_label)).all()
    return {"provider": sorted({r.provider for r in rows}), "model": sorted({r.model for r in rows}),
            "label": sorted({r.byok_label for r in rows if r.byok_label})}
