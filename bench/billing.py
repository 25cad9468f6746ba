"""Benchmark billing reads at scale: seed one organization with N usage records, then time the API.

Seeds N usage records (default 10 million) for one organization across one UTC
month with bulk inserts (COPY on PostgreSQL, executemany on SQLite) behind a
progress bar, writes the matching daily rollups directly (summed while the
records are generated, as the recording path would have), then times through
the app: GET /api/v1/usage for the month grouped by model, and the invoice JSON
(GET /api/v1/invoices/YYYY-MM, a draft computed live from the rollups). Prints
cold and warm times; the target is < 300 ms on PostgreSQL. No test asserts them.

    .venv/bin/python bench/billing.py --database-url postgresql://postgres@127.0.0.1:5432/keyway_bench \
        [--records 10000000] [--month 2026-10]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tqdm import tqdm  # noqa: E402

# (provider, model, input, output) in cents per million tokens — the shipped catalog's list prices.
MODELS = [("openai", "gpt-4o", 250, 1000), ("openai", "gpt-4o-mini", 15, 60), ("openai", "gpt-4.1", 200, 800),
          ("anthropic", "claude-sonnet-4-5", 300, 1500), ("anthropic", "claude-haiku-4-5", 100, 500),
          ("mistral", "mistral-large-latest", 200, 600)]
PROMPTS, COMPLETIONS = (120, 450, 900, 2400, 6000), (40, 180, 350, 800)
REASONS = ("", "", "", "", "", "rate_limit", "overloaded", "timeout")
LABELS = ("", "team-a", "team-b")
CHUNK = 50_000


def unit_cost(cents_in: int, cents_out: int, prompt: int, completion: int) -> int:
    """Cost in 1e-10 dollars (the Money quantum), in integers: 1 cent/Mtok * 1 token = 1e-8 $ = 100 units."""
    return (prompt * cents_in + completion * cents_out) * 100


def generate(org_id: int, key_ids: list[int], month: datetime, n: int, seed: int = 7):
    """Yield (record row, rollup key, counts) for n records spread over the month."""
    rng = random.Random(seed)
    days = ((month.replace(day=28) + timedelta(days=4)).replace(day=1) - month).days
    step = days * 86400 / n
    period = f"{month:%Y-%m}"
    for i in range(n):
        at = month + timedelta(seconds=i * step)
        provider, model, pin, pout = MODELS[rng.randrange(len(MODELS))]
        prompt, completion = PROMPTS[rng.randrange(5)], COMPLETIONS[rng.randrange(4)]
        shared = rng.random() < 0.35
        reason = REASONS[rng.randrange(len(REASONS))] if shared else ""
        label = "" if shared else LABELS[rng.randrange(3)]
        units = unit_cost(pin, pout, prompt, completion)
        ok = rng.random() > 0.02
        key_id = key_ids[i % len(key_ids)]
        row = (f"gen-bench{org_id:04d}{i:012d}", org_id, key_id, provider, model, "shared" if shared else "byok",
               label, bool(reason), reason, "ok" if ok else "error", 200 if ok else 502, prompt, completion,
               units, units if shared else 0, 300 + i % 900, period, at)
        dims = (at.date(), provider, model, "shared" if shared else "byok", key_id, label, reason)
        yield row, dims, (int(not ok), int(bool(reason)), prompt, completion, 300 + i % 900, units,
                          units if shared else 0)


COLUMNS = ("request_id", "org_id", "api_key_id", "provider", "model", "credential", "byok_label", "fallback",
           "fallback_reason", "status", "http_status", "prompt_tokens", "completion_tokens", "cost", "charged",
           "latency_ms", "billing_period", "created_at")
DEFAULTS = dict(fallback_refused="", error_class="", stream=False, cached_tokens=0, cache_write_tokens=0,
                reasoning_tokens=0, tokens_source="reported", cost_status="priced", attempts_count=1)


def money(units: int) -> Decimal:
    return Decimal(units).scaleb(-10)


def seed(url: str, org_id: int, key_ids: list[int], month: datetime, n: int) -> dict:
    from sqlalchemy import insert

    from app import db
    from app.models import UsageRecord

    rollups: dict[tuple, list[int]] = defaultdict(lambda: [0] * 8)
    bar = tqdm(total=n, desc="usage records", unit="rec", unit_scale=True)
    rows = generate(org_id, key_ids, month, n)
    postgres = url.startswith("postgresql")
    cols = COLUMNS + tuple(DEFAULTS)
    extra = tuple(DEFAULTS.values())
    while True:
        chunk = []
        for row, dims, counts in rows:
            total = rollups[dims]
            total[0] += 1
            for j, value in enumerate(counts):
                total[j + 1] += value
            chunk.append(row)
            if len(chunk) == CHUNK:
                break
        if not chunk:
            break
        if postgres:
            raw = db.get_engine().raw_connection()
            try:
                with raw.cursor() as cur, cur.copy(f"COPY usage_records ({', '.join(cols)}) FROM STDIN") as copy:
                    for row in chunk:
                        copy.write_row((*row[:13], money(row[13]), money(row[14]), *row[15:], *extra))
                raw.commit()
            finally:
                raw.close()
        else:
            with db.session_scope() as session:
                session.execute(insert(UsageRecord), [
                    {**dict(zip(COLUMNS, (*r[:13], money(r[13]), money(r[14]), *r[15:]))), **DEFAULTS}
                    for r in chunk])
        bar.update(len(chunk))
    bar.close()
    return rollups


def write_rollups(org_id: int, month: datetime, rollups: dict) -> None:
    from sqlalchemy import insert

    from app import db
    from app.models import UsageRollup

    rows = [dict(org_id=org_id, day=d, billing_period=f"{month:%Y-%m}", provider=p, model=m, credential=c,
                 api_key_id=k, byok_label=label, fallback_reason=reason, cost_status="priced", requests=t[0],
                 errors=t[1], fallbacks=t[2], unpriced_requests=0, prompt_tokens=t[3], completion_tokens=t[4],
                 cached_tokens=0, cache_write_tokens=0, reasoning_tokens=0, latency_ms_total=t[5],
                 cost=money(t[6]), charged=money(t[7]))
            for (d, p, m, c, k, label, reason), t in rollups.items()]
    with db.session_scope() as session:
        session.execute(insert(UsageRollup), rows)
    print(f"rollup rows: {len(rows)}")


def timed(client, path: str, key: str, runs: int) -> tuple[float, float, int]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(path, headers={"Authorization": f"Bearer {key}"})
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
    return times[0], statistics.median(times[1:]) if len(times) > 1 else times[0], len(response.get_data())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--month", default=None, help="YYYY-MM (default: last month, UTC)")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if not args.database_url:
        parser.error("--database-url (or DATABASE_URL) is required; use a database of its own")
    now = datetime.now(timezone.utc)
    last = (now.replace(day=1) - timedelta(days=1)).replace(day=1)
    month = datetime.strptime(args.month, "%Y-%m").replace(tzinfo=timezone.utc) if args.month else \
        last.replace(hour=0, minute=0, second=0, microsecond=0)

    from app import create_app, db
    from app.billing import ledger
    from app.billing.pricing import import_catalog, load_catalog
    from app.cli import create_key, create_org
    from app.migrate import upgrade

    url = db.normalize_url(args.database_url)
    upgrade(url)
    app = create_app({"TESTING": True, "DATABASE_URL": url, "LOG_LEVEL": "WARNING", "POLICY_CACHE_SECONDS": 60.0})
    with db.session_scope() as session:
        import_catalog(session, load_catalog(), only_new=True)
        org = create_org(session, f"bench billing {now:%H%M%S}")
        org_id, slug = org.id, org.slug
        ledger.grant(session, org_id, Decimal("100000"), note="bench")
        key_ids = [create_key(session, org_id, f"app-{i}")[0].id for i in range(3)]
        _, mkey = create_key(session, org_id, "bench", scope="management")
    print(f"org {slug}: seeding {args.records:,} records into {month:%Y-%m}")
    started = time.perf_counter()
    rollups = seed(url, org_id, key_ids, month, args.records)
    write_rollups(org_id, month, rollups)
    print(f"seeded in {time.perf_counter() - started:.1f} s")
    if url.startswith("postgresql"):
        with db.get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            from sqlalchemy import text

            conn.execute(text("ANALYZE usage_records"))
            conn.execute(text("ANALYZE usage_rollups"))
    end = (month.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    client = app.test_client()
    usage = f"/api/v1/usage?start={month:%Y-%m-%d}&end={end:%Y-%m-%d}&group_by=model"
    for name, path in (("usage API, month by model", usage), ("invoice JSON (draft)", f"/api/v1/invoices/{month:%Y-%m}")):
        cold, warm, size = timed(client, path, mkey, args.runs)
        print(f"{name:28} cold {cold:7.1f} ms   warm median {warm:7.1f} ms   ({size} bytes)")


if __name__ == "__main__":
    main()
