"""Benchmark the dashboard pages over many usage records on PostgreSQL.

It creates a fresh database, migrates it, creates two organizations (the one
measured holds --share of the traffic), bulk-loads --records usage records over
90 days with COPY (a progress bar shows it), builds the daily rollups and the daily
summary from them with INSERT … SELECT as the recorder would have, then renders the overview,
usage, request-log and invoice pages through the Flask test client as a
signed-in admin and prints the median and p95 of each. The target is < 300 ms;
no test asserts it.

    .venv/bin/python bench/dashboard.py [--records 10000000] [--runs 15] [--db-name keyway_bench_dashboard]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD = "bench password 123"
MODELS = [("openai", "gpt-4o", "2.50", "10.00"), ("openai", "gpt-4o-mini", "0.15", "0.60"),
          ("openai", "gpt-4.1", "2.00", "8.00"), ("azure", "gpt-4o", "2.50", "10.00"),
          ("mistral", "mistral-small-latest", "0.10", "0.30"), ("groq", "llama-3.3-70b-versatile", "0.59", "0.79"),
          ("deepseek", "deepseek-chat", "0.27", "1.10"), ("xai", "grok-4", "3.00", "15.00"),
          ("together", "private-finetune", None, None)]
LABELS = ["", "", "team-a", "team-b", "batch"]
REASONS = ["rate_limit", "rate_limit", "overloaded", "timeout", "server_error"]
COLUMNS = ("request_id", "org_id", "api_key_id", "provider", "model", "credential", "byok_label", "fallback",
           "fallback_reason", "fallback_refused", "status", "http_status", "error_class", "stream", "prompt_tokens",
           "completion_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens", "tokens_source", "cost",
           "cost_status", "charged", "attempts_count", "latency_ms", "billing_period", "created_at")


def fresh_database(name: str) -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def set_up_orgs(app) -> tuple[list[int], dict[int, list[int]], str]:
    """Two organizations with keys, and an admin of the first; returns org ids, key ids per org, admin email."""
    from app import db
    from app.billing import ledger
    from app.cli import create_key, create_org
    from app.dashboard.users import create_user

    with app.app_context(), db.session_scope() as s:
        orgs = [create_org(s, "Bench Measured"), create_org(s, "Bench Neighbour")]
        keys = {o.id: [create_key(s, o.id, f"key {i}")[0].id for i in range(6)] for o in orgs}
        create_user(s, orgs[0].id, "admin@bench.test", "admin", PASSWORD)
        ledger.grant(s, orgs[0].id, Decimal("5000"), note="bench")
        return [o.id for o in orgs], keys, "admin@bench.test"


def row(rng: random.Random, i: int, org_id: int, key_ids: list[int], start: datetime) -> tuple:
    provider, model, price_in, price_out = rng.choice(MODELS)
    at = start + timedelta(seconds=rng.randrange(90 * 86400))
    prompt, completion = rng.randrange(50, 4000), rng.randrange(10, 1200)
    byok = rng.random() < 0.6
    fell = byok and rng.random() < 0.05
    credential = "shared" if (fell or not byok) else "byok"
    error = rng.random() < 0.02
    if price_in is None:
        cost, cost_status = None, "unpriced"
    else:
        cost = (Decimal(prompt) * Decimal(price_in) + Decimal(completion) * Decimal(price_out)) / 1_000_000
        cost, cost_status = cost.quantize(Decimal("0.0000000001")), "priced"
    if error:
        prompt = completion = 0
        cost, cost_status = None, "none"
    charged = cost if credential == "shared" and cost is not None else Decimal(0)
    return (f"gen-b{i:023x}", org_id, rng.choice(key_ids), provider, model, credential, rng.choice(LABELS), fell,
            rng.choice(REASONS) if fell else "", "", "error" if error else "ok", 502 if error else 200,
            "server_error" if error else "", rng.random() < 0.3, prompt, completion, 0, 0, 0, "reported", cost,
            cost_status, charged, 2 if fell else 1, rng.randrange(150, 4000), f"{at:%Y-%m}", at)


def load_records(url: str, orgs: list[int], keys: dict[int, list[int]], total: int, share: float) -> None:
    import psycopg
    from tqdm import tqdm

    rng = random.Random(7)
    start = (datetime.now(timezone.utc) - timedelta(days=89)).replace(hour=0, minute=0, second=0, microsecond=0)
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY usage_records ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for i in tqdm(range(total), desc="usage records", unit="rec", unit_scale=True, mininterval=1.0):
                org = orgs[0] if rng.random() < share else orgs[1]
                copy.write_row(row(rng, i, org, keys[org], start))
        print("building rollups …", flush=True)
        cur.execute("""
            INSERT INTO usage_rollups (org_id, day, billing_period, provider, model, credential, api_key_id,
                byok_label, fallback_reason, cost_status, requests, errors, fallbacks, unpriced_requests,
                prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens,
                latency_ms_total, cost, charged)
            SELECT org_id, (created_at AT TIME ZONE 'UTC')::date, billing_period, provider, model, credential,
                coalesce(api_key_id, 0), byok_label, fallback_reason, cost_status, count(*),
                count(*) FILTER (WHERE status <> 'ok'), count(*) FILTER (WHERE fallback),
                count(*) FILTER (WHERE cost_status = 'unpriced'), sum(prompt_tokens), sum(completion_tokens),
                sum(cached_tokens), sum(cache_write_tokens), sum(reasoning_tokens), sum(latency_ms),
                coalesce(sum(cost), 0), sum(charged)
            FROM usage_records GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10""")
        print("building the daily summary …", flush=True)
        cur.execute("""
            INSERT INTO usage_daily (org_id, day, billing_period, provider, model, credential, cost_status,
                requests, errors, fallbacks, unpriced_requests, prompt_tokens, completion_tokens, cached_tokens,
                cache_write_tokens, reasoning_tokens, latency_ms_total, cost, charged, reason_requests,
                reason_charged)
            SELECT org_id, day, billing_period, provider, model, credential, cost_status, sum(requests),
                sum(errors), sum(fallbacks), sum(unpriced_requests), sum(prompt_tokens), sum(completion_tokens),
                sum(cached_tokens), sum(cache_write_tokens), sum(reasoning_tokens), sum(latency_ms_total),
                sum(cost), sum(charged), coalesce(sum(requests) FILTER (WHERE fallback_reason <> ''), 0),
                coalesce(sum(charged) FILTER (WHERE fallback_reason <> ''), 0)
            FROM usage_rollups GROUP BY 1, 2, 3, 4, 5, 6, 7""")
        cur.execute("ANALYZE")
        conn.commit()
        cur.execute("SELECT (SELECT count(*) FROM usage_rollups), (SELECT count(*) FROM usage_daily)")
        fine, daily = cur.fetchone()
        print(f"rollup rows: {fine:,}; daily summary rows: {daily:,}", flush=True)


def measure(app, email: str, runs: int) -> list[tuple[str, float, float]]:
    from tests.dashboard_helpers import sign_in

    client = app.test_client()
    assert sign_in(client, email, PASSWORD).status_code == 302
    now = datetime.now(timezone.utc)
    last = (now.replace(day=1) - timedelta(days=1))
    pages = [("overview", "/"), ("usage by model (30 days)", "/usage?group=model"),
             ("usage by day, 90 days", f"/usage?group=day&start={(now - timedelta(days=89)).date()}"),
             ("usage CSV by key", "/usage/export.csv?group=key"), ("request log", "/logs"),
             ("request log, filtered", "/logs?status=error&provider=openai"),
             ("invoice list", "/invoices"), (f"invoice draft {now:%Y-%m}", f"/invoices/{now:%Y-%m}"),
             (f"invoice draft {last:%Y-%m}", f"/invoices/{last:%Y-%m}")]
    results = []
    for name, url in pages:
        client.get(url)  # warm caches and the connection pool
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        times.sort()
        results.append((name, statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--share", type=float, default=0.5, help="share of records in the measured organization")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--db-name", default="keyway_bench_dashboard")
    parser.add_argument("--reuse", action="store_true", help="measure the database a previous run loaded")
    args = parser.parse_args()

    from app import create_app
    from app.migrate import upgrade

    from app.db import normalize_url

    if args.reuse:
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + args.db_name
    else:
        url = fresh_database(args.db_name)
        upgrade(normalize_url(url))
    app = create_app({"TESTING": True, "DATABASE_URL": url, "SECRET_KEY": "bench", "SESSION_COOKIE_SECURE": False,
                      "LOG_LEVEL": "WARNING", "INSTANCE_PATH": os.path.join(ROOT, "instance", "bench")})
    email = "admin@bench.test"
    if not args.reuse:
        orgs, keys, email = set_up_orgs(app)
        load_records(url, orgs, keys, args.records, args.share)
    if args.reuse:
        import psycopg

        with psycopg.connect(url) as conn:
            args.records = conn.execute("SELECT count(*) FROM usage_records").fetchone()[0]
    print(f"\n{args.records:,} usage records ({args.share:.0%} in the measured organization), "
          f"{args.runs} runs per page, PostgreSQL, Flask test client:")
    print(f"{'page':34} {'median ms':>10} {'p95 ms':>10}")
    for name, median, p95 in measure(app, email, args.runs):
        flag = "" if p95 < 300 else "  (over the 300 ms target)"
        print(f"{name:34} {median:10.1f} {p95:10.1f}{flag}")


if __name__ == "__main__":
    main()
