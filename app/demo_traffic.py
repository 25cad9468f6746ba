"""Synthetic gateway traffic for the demo: usage records shaped like the live recorder writes them.

Everything is generated in memory, in time order, from a seeded RNG: the
records with their attempts, and alongside them the credit-ledger entries
those records imply (settlements as `billing.ledger.settle` writes them, and
grants that keep the balance from ever going negative). The demo bulk-inserts
the rows and rebuilds the rollups from them with `billing.rollups`, so the
database is consistent without replaying 100,000 requests through the recorder.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Iterator

from app.billing.money import ZERO
from app.billing.pricing import PriceBook, cost_of


@dataclass(frozen=True)
class Workload:
    """One steady stream of requests: which key sends it, to which provider and model, paid how."""

    key: str
    provider: str
    model: str
    credential: str  # byok | shared
    weight: float
    prompt: int  # median prompt tokens
    completion: int  # median completion tokens
    label: str = ""
    stream: float = 0.3  # share of requests that stream
    cached: float = 0.0  # share of requests that hit the provider's prompt cache
    reasoning: bool = False


@dataclass(frozen=True)
class Incident:
    """A stretch of days (counted back from today) when one label's or provider's calls fail more."""

    org: str
    error: str
    rate: float
    first_day: int  # days before today
    days: int = 1
    label: str = ""
    provider: str = ""
    hours: tuple[int, int] = (0, 24)


@dataclass(frozen=True)
class OrgProfile:
    slug: str
    name: str
    share: float  # of all demo traffic
    initial_grant: Decimal
    monthly_grant: Decimal
    workloads: tuple[Workload, ...]
    keys: tuple[str, ...]


# upstream status of an attempt that failed with this class (None: no HTTP response), and the client's status
ERRORS: dict[str, tuple[int | None, int]] = {
    "rate_limit": (429, 429), "overloaded": (529, 503), "server_error": (500, 502), "timeout": (None, 504),
    "connection": (None, 502), "auth": (401, 401), "budget": (402, 402), "bad_request": (400, 400),
}
# DESIGN §2 defaults: these fall back to the shared pool; auth, budget and bad requests do not.
FALLS_BACK = {"rate_limit", "overloaded", "server_error", "timeout", "connection"}
BYOK_FAILURES = {"rate_limit": 0.016, "server_error": 0.005, "overloaded": 0.002, "timeout": 0.002,
                 "connection": 0.001, "auth": 0.001, "budget": 0.0004, "bad_request": 0.004}
SHARED_FAILURES = {"rate_limit": 0.004, "server_error": 0.003, "timeout": 0.001, "bad_request": 0.004}
WEEKDAY = (1.0, 1.06, 1.08, 1.04, 0.93, 0.36, 0.30)  # Monday first
HOURS = (0.25, 0.2, 0.18, 0.18, 0.22, 0.3, 0.5, 0.8, 1.2, 1.5, 1.6, 1.6, 1.45, 1.55, 1.7, 1.75, 1.65, 1.4,
         1.1, 0.85, 0.7, 0.55, 0.42, 0.32)  # UTC, Europe and US business hours overlapping
FAST = {"groq": 2, "gemini": 6, "vertex": 7, "mistral": 9, "deepseek": 14}  # ms per output token
HOUR_CUMULATIVE = [sum(HOURS[:i + 1]) for i in range(24)]
TOP_UP = Decimal("50.00")


# -- the two demo organizations ---------------------------------------------------------------
W = Workload
PROFILES = (
    OrgProfile("acme", "Acme Robotics", 0.6, Decimal("150.00"), Decimal("100.00"), (
        W("production-backend", "openai", "gpt-4o-mini", "byok", 24, 1400, 260, label="search", stream=0.2,
          cached=0.35),
        W("production-backend", "anthropic", "claude-sonnet-4-5", "byok", 15, 2600, 420, label="support-bot",
          stream=0.85, cached=0.5),
        W("production-backend", "openai", "ft:gpt-4o-mini:acme:triage", "byok", 2, 600, 12, label="triage"),
        W("production-backend", "mistral", "mistral-small-latest", "shared", 6, 900, 180),
        W("data-pipeline", "openai", "gpt-4.1-mini", "shared", 13, 3200, 320, stream=0.05),
        W("data-pipeline", "gemini", "gemini-2.5-flash", "shared", 11, 5200, 380, stream=0.05),
        W("data-pipeline", "bedrock", "anthropic.claude-3-5-haiku-20241022-v1:0", "byok", 8, 1800, 300,
          label="aws-batch"),
        W("data-pipeline", "anthropic", "claude-haiku-4-5", "shared", 5, 1500, 250, stream=0.4),
        W("dev-laptop", "openai", "o4-mini", "byok", 4, 2200, 900, label="research", stream=0.5, reasoning=True),
        W("dev-laptop", "deepseek", "deepseek-chat", "shared", 3, 1100, 500, stream=0.6),
        W("production-backend", "azure", "gpt-4o", "byok", 4, 1600, 350, label="azure-eu", stream=0.3),
    ), ("production-backend", "data-pipeline", "dev-laptop")),
    OrgProfile("globex", "Globex Analytics", 0.4, Decimal("60.00"), Decimal("0"), (
        W("web-app", "openai", "gpt-4o-mini", "shared", 25, 900, 200, stream=0.6),
        W("web-app", "gemini", "gemini-2.5-pro", "byok", 18, 4200, 600, label="analytics", stream=0.3),
        W("web-app", "openai", "gpt-5-mini", "byok", 14, 1200, 500, label="assistant", stream=0.7, reasoning=True),
        W("batch-jobs", "vertex", "gemini-2.5-flash", "byok", 15, 6000, 250, label="gcp-prod"),
        W("batch-jobs", "groq", "llama-3.3-70b-versatile", "shared", 10, 800, 150),
        W("web-app", "anthropic", "claude-sonnet-4-5", "shared", 8, 2000, 400, stream=0.8),
        W("batch-jobs", "xai", "grok-3-mini", "byok", 5, 700, 300, label="experiments", reasoning=True),
    ), ("web-app", "batch-jobs")),
)
INCIDENTS = (
    # The BYOK key behind "search" hits its own rate limit: traffic quietly moves onto credits (an alert).
    Incident("acme", "rate_limit", 0.35, first_day=3, days=4, label="search"),
    Incident("acme", "overloaded", 0.25, first_day=47, days=2, provider="anthropic"),
    Incident("globex", "overloaded", 0.2, first_day=47, days=2, provider="anthropic"),
    # Someone revoked the "research" key; its calls fail with 401 (auth failures don't fall back) until fixed.
    Incident("acme", "auth", 1.0, first_day=23, label="research", hours=(9, 15)),
    Incident("globex", "server_error", 0.15, first_day=12, provider="vertex", hours=(13, 17)),
)


@dataclass
class Traffic:
    """The generated rows, ready for bulk inserts, plus the totals they imply."""

    records: list[dict] = field(default_factory=list)
    attempts: list[dict] = field(default_factory=list)
    ledger: list[dict] = field(default_factory=list)
    balances: dict[int, Decimal] = field(default_factory=dict)
    key_last_used: dict[int, datetime] = field(default_factory=dict)


def day_counts(profiles: tuple[OrgProfile, ...], total: int, days: int, now: datetime,
               rng: random.Random) -> list[tuple[date, str, int]]:
    """Split `total` over (day, org): weekly rhythm, steady growth, day-to-day noise, today only so far."""
    today = now.date()
    elapsed = (now - datetime.combine(today, datetime.min.time(), timezone.utc)).total_seconds() / 86400
    cells = []
    for back in range(days - 1, -1, -1):
        day = today - timedelta(days=back)
        growth = 0.7 + 0.6 * (days - 1 - back) / max(days - 1, 1)
        part = _hours_share(elapsed) if back == 0 else 1.0
        for p in profiles:
            weight = p.share * WEEKDAY[day.weekday()] * growth * part * math.exp(rng.gauss(0, 0.12))
            cells.append((day, p.slug, weight))
    scale = total / sum(w for _, _, w in cells)
    exact = [(d, s, w * scale) for d, s, w in cells]
    counts = [int(x) for _, _, x in exact]
    # Largest remainders get the leftover requests, so the counts add up to exactly `total`.
    order = sorted(range(len(exact)), key=lambda i: exact[i][2] - counts[i], reverse=True)
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return [(d, s, n) for (d, s, _), n in zip(exact, counts)]


def _hours_share(elapsed_fraction: float) -> float:
    hours = elapsed_fraction * 24
    whole = int(hours)
    done = HOUR_CUMULATIVE[whole - 1] if whole else 0.0
    if whole < 24:
        done += HOURS[whole] * (hours - whole)
    return done / HOUR_CUMULATIVE[-1]


class Generator:
    """Builds the traffic for several organizations, day by day, in time order."""

    def __init__(self, rng: random.Random, book: PriceBook, orgs: dict[str, int], keys: dict[tuple[str, str], int],
                 profiles: tuple[OrgProfile, ...], incidents: tuple[Incident, ...], markup: dict[int, Decimal]):
        self.rng, self.book, self.orgs, self.keys = rng, book, orgs, keys
        self.profiles = {p.slug: p for p in profiles}
        self.incidents, self.markup = incidents, markup
        from app.gateway.router import with_markup  # the live charge rule; imported late to keep `serve` light

        self.with_markup = with_markup
        self.traffic = Traffic(balances={org_id: ZERO for org_id in orgs.values()})
        self.granted: set[tuple[int, str]] = set()
        self.next_id = 1

    def run(self, plan: list[tuple[date, str, int]], now: datetime, first_id: int = 1) -> Iterator[int]:
        """Generate every planned day; yields the number of records made, for a progress bar."""
        self.next_id = first_id
        by_day: dict[date, list[tuple[str, int]]] = {}
        for day, slug, n in plan:
            by_day.setdefault(day, []).append((slug, n))
        today = now.date()
        for day in sorted(by_day):
            stamped = []
            for slug, n in by_day[day]:
                profile = self.profiles[slug]
                weights = [w.weight for w in profile.workloads]
                for _ in range(n):
                    workload = self.rng.choices(profile.workloads, weights)[0]
                    stamped.append((self._moment(day, now if day == today else None), slug, workload))
            stamped.sort(key=lambda item: item[0])
            for at, slug, workload in stamped:
                self._grants_due(slug, at)
                self._request(slug, workload, at, (today - day).days)
            yield len(stamped)

    # -- one request -----------------------------------------------------------
    def _request(self, slug: str, w: Workload, at: datetime, days_back: int) -> None:
        rng = self.rng
        attempts: list[dict] = []
        failure = self._failure(slug, w, at, days_back)
        record = dict(provider=w.provider, model=w.model, credential=w.credential, byok_label=w.label,
                      fallback=False, fallback_reason="", fallback_refused="", status="ok", http_status=200,
                      error_class="", stream=rng.random() < w.stream)
        if failure is None:
            attempts.append(self._attempt(w, w.credential, "ok", None, record["stream"]))
        elif w.credential == "byok" and failure in FALLS_BACK:
            attempts.append(self._attempt(w, "byok", "failed", failure, record["stream"]))
            if self.book.lookup(w.provider, w.model, at) is None:
                record.update(fallback_refused="model_not_in_catalog")
                self._fail(record, failure)
            else:
                record.update(fallback=True, fallback_reason=failure, credential="shared")
                second = "server_error" if rng.random() < 0.01 else None
                attempts.append(self._attempt(w, "shared", "failed" if second else "ok", second, record["stream"]))
                if second:
                    self._fail(record, second)
        elif w.credential == "shared" and failure in ("rate_limit", "server_error", "timeout"):
            # The router moves on to the platform's next key for the same provider.
            attempts.append(self._attempt(w, "shared", "failed", failure, record["stream"]))
            second = failure if rng.random() < 0.15 else None
            attempts.append(self._attempt(w, "shared", "failed" if second else "ok", second, record["stream"]))
            if second:
                self._fail(record, second)
        else:
            attempts.append(self._attempt(w, w.credential, "failed", failure, record["stream"]))
            self._fail(record, failure)
        self._finish(slug, w, at, record, attempts)

    def _failure(self, slug: str, w: Workload, at: datetime, days_back: int) -> str | None:
        rates = dict(BYOK_FAILURES if w.credential == "byok" else SHARED_FAILURES)
        if w.provider == "anthropic":
            rates["overloaded"] = rates.get("overloaded", 0) + 0.006  # Anthropic's 529s are a fact of life
        for inc in self.incidents:
            if (inc.org == slug and inc.first_day >= days_back > inc.first_day - inc.days
                    and inc.hours[0] <= at.hour < inc.hours[1]
                    and (not inc.label or inc.label == w.label) and (not inc.provider or inc.provider == w.provider)):
                rates[inc.error] = rates.get(inc.error, 0) + inc.rate
        roll = self.rng.random()
        for error, rate in rates.items():
            if roll < rate:
                return error
            roll -= rate
        return None

    def _fail(self, record: dict, error: str) -> None:
        record.update(status="error", http_status=ERRORS[error][1], error_class=error)

    def _attempt(self, w: Workload, credential: str, outcome: str, error: str | None, stream: bool) -> dict:
        rng = self.rng
        if error is None:
            latency = int(rng.uniform(250, 700) + FAST.get(w.provider, 18) * w.completion * rng.uniform(0.6, 1.8))
        elif error == "timeout":
            latency = int(rng.uniform(60_000, 60_400))
        elif error in ("rate_limit", "auth", "budget", "bad_request"):
            latency = int(rng.uniform(40, 260))
        else:
            latency = int(rng.uniform(300, 2500))
        return dict(provider=w.provider, model=w.model, credential=credential,
                    byok_label=w.label if credential == "byok" else "",
                    http_status=ERRORS[error][0] if error else 200, error_class=error or "",
                    outcome=outcome, latency_ms=latency)

    # -- tokens, money, and the books -------------------------------------------
    def _finish(self, slug: str, w: Workload, at: datetime, record: dict, attempts: list[dict]) -> None:
        rng, org_id = self.rng, self.orgs[slug]
        served = attempts[-1]["outcome"] == "ok"
        cut_short = record["stream"] and (
            (served and rng.random() < 0.012) or (not served and record["error_class"] == "connection"))
        tokens = dict(prompt_tokens=0, completion_tokens=0, cached_tokens=0, cache_write_tokens=0,
                      reasoning_tokens=0)
        source, cost, cost_status, price_id, charged = "none", None, "none", None, ZERO
        request_id = "gen-%024x" % rng.getrandbits(96)
        if served or cut_short:
            prompt = max(8, int(w.prompt * math.exp(rng.gauss(0, 0.6))))
            completion = max(1, int(w.completion * math.exp(rng.gauss(0, 0.7))))
            if cut_short:
                completion = max(1, int(completion * rng.uniform(0.05, 0.6)))
            tokens.update(prompt_tokens=prompt, completion_tokens=completion)
            if w.cached and rng.random() < w.cached and not cut_short:
                tokens["cached_tokens"] = int(prompt * rng.uniform(0.4, 0.9))
            if w.reasoning and not cut_short:
                tokens["reasoning_tokens"] = int(completion * rng.uniform(0.3, 0.75))
            source = "estimated" if cut_short else "reported"
            version = self.book.lookup(w.provider, w.model, at)
            if version is None:
                cost_status = "unpriced"
            else:
                cost, cost_status, price_id = cost_of(version, **tokens), "priced", version.id
                if record["credential"] == "shared":
                    price = self.with_markup(cost, self.markup.get(org_id, ZERO))
                    charged = self._charge(org_id, price, at, request_id)
            if cut_short and served:
                record.update(http_status=499, error_class="client_closed")  # as the live recorder writes it
        latency = sum(a["latency_ms"] for a in attempts) + rng.randint(2, 12)
        ttft = None
        if record["stream"] and served:
            ttft = latency - attempts[-1]["latency_ms"] + int(rng.uniform(120, 650))
        key_id = self.keys[(slug, w.key)]
        row = dict(id=self.next_id, request_id=request_id, org_id=org_id,
                   api_key_id=key_id, **record, **tokens, tokens_source=source, cost=cost,
                   cost_status=cost_status, charged=charged, price_id=price_id, attempts_count=len(attempts),
                   latency_ms=latency, ttft_ms=ttft, billing_period=f"{at:%Y-%m}", created_at=at)
        self.next_id += 1
        self.traffic.records.append(row)
        for seq, attempt in enumerate(attempts):
            self.traffic.attempts.append(dict(record_id=row["id"], seq=seq, **attempt))
        self.traffic.key_last_used[key_id] = at

    def _charge(self, org_id: int, amount: Decimal, at: datetime, request_id: str) -> Decimal:
        """Debit the shared-pool cost; an account that would go negative gets an automatic top-up first."""
        if self.traffic.balances[org_id] < amount:
            top_up = max(TOP_UP, amount - self.traffic.balances[org_id])
            self._entry(org_id, "grant", top_up, at - timedelta(microseconds=1), note="automatic top-up")
        self._entry(org_id, "settlement", -amount, at, request_id=request_id)
        return amount

    def _grants_due(self, slug: str, at: datetime) -> None:
        profile, org_id = self.profiles[slug], self.orgs[slug]
        if (org_id, "welcome") not in self.granted:
            self.granted.add((org_id, "welcome"))
            self.granted.add((org_id, f"{at:%Y-%m}"))
            start = datetime.combine(at.date(), datetime.min.time(), timezone.utc)
            self._entry(org_id, "grant", profile.initial_grant, start, note="welcome credits")
        elif profile.monthly_grant and (org_id, f"{at:%Y-%m}") not in self.granted:
            self.granted.add((org_id, f"{at:%Y-%m}"))
            month_start = datetime(at.year, at.month, 1, tzinfo=timezone.utc)
            self._entry(org_id, "grant", profile.monthly_grant, month_start, note=f"monthly credits {at:%Y-%m}")

    def _entry(self, org_id: int, kind: str, amount: Decimal, at: datetime, note: str = "",
               request_id: str | None = None) -> None:
        balance = self.traffic.balances[org_id] + amount
        self.traffic.balances[org_id] = balance
        self.traffic.ledger.append(dict(org_id=org_id, kind=kind, amount=amount, note=note, created_at=at,
                                        balance_after=balance, request_id=request_id))

    def _moment(self, day: date, now: datetime | None) -> datetime:
        start = datetime.combine(day, datetime.min.time(), timezone.utc)
        while True:
            hour = self.rng.choices(range(24), cum_weights=HOUR_CUMULATIVE)[0]
            at = start + timedelta(hours=hour, seconds=self.rng.uniform(0, 3600))
            if now is None or at <= now:
                return at
