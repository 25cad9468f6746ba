"""Benchmark the /v1 data plane: direct-to-upstream vs through the gateway, side by side.

It starts a fast fake upstream (bench/fake_upstream.py), creates and migrates a
fresh database (PostgreSQL by default, --sqlite for the embedded one), creates
an organization with credits and a gateway key through the app's own
functions, runs `manage.py serve --workers N` against them, and drives a
bounded load (a request count and a time cap, loopback only) at each
concurrency, non-streaming and streaming. It prints requests/s, p50/p99
latency, the latency the gateway adds, the resident memory of each worker,
and afterwards checks that the database holds exactly one usage record per
request sent through the gateway. No figure here is asserted by a test.

    .venv/bin/python bench/gateway.py [--requests 5000] [--concurrency 1,64] [--workers 2] [--sqlite]
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from urllib.request import urlopen

import orjson

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
PYTHON = sys.executable
SHARED_KEY = "sk-bench-shared-pool-0001"
MESSAGE = "Say hello in twenty words."


@dataclass(frozen=True)
class Upstream:
    """How the bench talks to one provider's fake directly, and what the gateway calls the model."""

    model: str
    base_suffix: str  # appended to the fake's origin for GATEWAY_<PROVIDER>_BASE_URL
    headers: tuple[str, ...]  # direct calls: the provider's own auth headers ({key} filled in)
    stream_end: str  # how a complete native stream ends

    def direct_path(self, stream: bool) -> str:
        if self.model.startswith("gemini"):
            return f"/v1beta/models/{self.model}:" + ("streamGenerateContent?alt=sse" if stream else "generateContent")
        return "/v1/messages" if self.model.startswith("claude") else "/v1/chat/completions"

    def direct_body(self, stream: bool) -> dict:
        if self.model.startswith("gemini"):
            return {"contents": [{"role": "user", "parts": [{"text": MESSAGE}]}],
                    "generationConfig": {"maxOutputTokens": 64}}
        body = {"model": self.model, "messages": [{"role": "user", "content": MESSAGE}], "max_tokens": 64}
        if stream:
            body["stream"] = True
            if not self.model.startswith("claude"):
                body["stream_options"] = {"include_usage": True}
        return body


UPSTREAMS = {
    "openai": Upstream("gpt-4o-mini", "/v1", ("Authorization: Bearer {key}",), "data: [DONE]"),
    "anthropic": Upstream("claude-haiku-4-5", "", ("x-api-key: {key}", "anthropic-version: 2023-06-01"),
                          '"type":"message_stop"'),
    "gemini": Upstream("gemini-2.5-flash", "", ("x-goog-api-key: {key}",), '"finishReason":"STOP"'),
}
PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def say(message: str) -> None:
    print(message, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- set-up --------------------------------------------------------------------------
def fresh_database(args, workdir: str) -> str:
    if args.sqlite:
        return f"sqlite:///{os.path.join(workdir, 'bench.db')}"
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{args.db_name}"')
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + args.db_name


def prepare(url: str, workdir: str) -> str:
    """Migrate, load prices, and create the organization, its credits and a gateway key; returns the key."""
    from app import db
    from app.billing import ledger
    from app.billing.pricing import import_catalog, load_catalog
    from app.cli import create_key, create_org
    from app.migrate import upgrade

    url = db.normalize_url(url, workdir)
    upgrade(url)
    db.init_engine(url)
    with db.session_scope() as session:
        import_catalog(session, load_catalog())
        org = create_org(session, "Bench")
        ledger.grant(session, org.id, Decimal("1000000"), note="benchmark")
        _, key = create_key(session, org.id, "bench")
    db.get_engine().dispose()
    return key


def start_fake(provider: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([PYTHON, os.path.join(ROOT, "bench", "fake_upstream.py"), "--port", "0",
                             "--provider", provider], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "listening":
        proc.kill()
        sys.exit("the fake upstream did not start")
    return proc, int(line[1])


def start_gateway(args, url: str, fake_port: int, workdir: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "METERING_JOURNAL_DIR": os.path.join(workdir, "journal"),
           f"GATEWAY_{args.provider.upper()}_BASE_URL": f"http://127.0.0.1:{fake_port}{UPSTREAMS[args.provider].base_suffix}",
           f"GATEWAY_{args.provider.upper()}_SHARED_API_KEY": SHARED_KEY}
    if args.metering:
        env["METERING_MODE"] = args.metering
    proc = subprocess.Popen([PYTHON, "manage.py", "serve", "--port", str(port), "--workers", str(args.workers)],
                            cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the gateway exited with {proc.returncode} before it was healthy")
        try:
            with urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    sys.exit("the gateway did not answer /healthz within 60 s")


# -- load ----------------------------------------------------------------------------
@dataclass
class Cell:
    stream: bool
    concurrency: int
    target: str  # direct | gateway
    result: dict


def body_file(workdir: str, name: str, body: dict) -> str:
    path = os.path.join(workdir, f"body-{name}.json")
    with open(path, "wb") as fh:
        fh.write(orjson.dumps(body))
    return path


def gateway_body(provider: str, stream: bool, byok: bool) -> dict:
    body = {"model": f"{provider}/{UPSTREAMS[provider].model}", "messages": [{"role": "user", "content": MESSAGE}],
            "max_tokens": 64}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    if byok:  # the caller's own key: no credit reservation on the response path
        body["byok_conf"] = {"provider": provider, "credentials": {"api_key": "sk-bench-byok-0001"}}
    return body


def load(port: int, path: str, headers: tuple[str, ...], body: str, stream: bool, requests: int,
         concurrency: int, time_cap: float, stream_end: str) -> dict:
    cmd = [PYTHON, os.path.join(ROOT, "bench", "loadgen.py"), "--port", str(port), "--path", path,
           "--body-file", body, "--requests", str(requests), "--concurrency", str(concurrency),
           "--time-cap", str(time_cap)]
    for header in headers:
        cmd += ["--header", header]
    if stream:
        cmd += ["--stream", "--stream-end", stream_end]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return orjson.loads(out.strip().splitlines()[-1])


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU the processes have used, from /proc (machine-load independent, unlike req/s)."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except OSError:
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def run_cells(args, fake_port: int, gw_port: int, gw_key: str, workdir: str,
              gateway_pid: int) -> tuple[list[Cell], int]:
    cells, sent_through_gateway = [], 0
    upstream = UPSTREAMS[args.provider]
    warmup = max(50, min(500, args.requests // 10))
    for stream in (False, True):
        kind = "stream" if stream else "json"
        targets = {
            "direct": (fake_port, upstream.direct_path(stream), tuple(h.format(key=SHARED_KEY) for h in upstream.headers),
                       body_file(workdir, f"direct-{kind}", upstream.direct_body(stream)), upstream.stream_end),
            "gateway": (gw_port, "/v1/chat/completions", (f"Authorization: Bearer {gw_key}",),
                        body_file(workdir, f"gateway-{kind}", gateway_body(args.provider, stream, args.byok)),
                        "data: [DONE]"),
        }
        for concurrency in args.concurrency:
            for target, (port, path, headers, body, stream_end) in targets.items():
                say(f"... {kind:6} c={concurrency:<3} {target:7} warm-up {warmup}, then {args.requests} requests")
                warm = load(port, path, headers, body, stream, warmup, concurrency, args.time_cap, stream_end)
                workers = [pid for pid, _, _ in worker_rss(gateway_pid)]
                before = cpu_seconds(workers)
                result = load(port, path, headers, body, stream, args.requests, concurrency, args.time_cap, stream_end)
                if target == "gateway" and result["sent"]:
                    result["cpu_us"] = (cpu_seconds(workers) - before) / result["sent"] * 1e6
                if target == "gateway":
                    sent_through_gateway += warm["sent"] + result["sent"]
                cells.append(Cell(stream, concurrency, target, result))
                say(f"    {result['rps']:8.0f} req/s  p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms"
                    f"  sent {result['sent']}  failures {result['failures'] or 0}  load {os.getloadavg()[0]:.1f}")
    return cells, sent_through_gateway


# -- figures -------------------------------------------------------------------------
def worker_rss(master_pid: int) -> list[tuple[int, int, int]]:
    """(pid, VmRSS kB, VmHWM kB) of each gunicorn worker (the master's children), read from /proc."""
    rows = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as fh:
                status = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:
            continue
        if int(status.get("PPid", "0").strip()) == master_pid:
            rows.append((int(pid), int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])))
    return sorted(rows)


def print_table(cells: list[Cell]) -> None:
    say("")
    say(f"{'mode':7} {'conc':>4}  {'target':8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10}  failures"
        f"  {'worker CPU/req':>14}")
    direct: dict[tuple[bool, int], dict] = {}
    for c in cells:
        r = c.result
        added = ""
        if c.target == "direct":
            direct[(c.stream, c.concurrency)] = r
        elif (c.stream, c.concurrency) in direct:
            added = f"{r['p50_ms'] - direct[(c.stream, c.concurrency)]['p50_ms']:+.2f} ms"
        failures = sum(r["failures"].values())
        say(f"{'stream' if c.stream else 'json':7} {c.concurrency:>4}  {c.target:8} {r['rps']:8.0f} "
            f"{r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {added:>10}  {failures:>8}"
            f"  {format(r['cpu_us'], '11.0f') + ' us' if 'cpu_us' in r else '':>14}")


def count_records(url: str) -> tuple[int, dict[str, int]]:
    from sqlalchemy import create_engine, func, select

    from app import db
    from app.models import UsageRecord

    engine = create_engine(db.normalize_url(url))
    with engine.connect() as conn:
        total = conn.execute(select(func.count(UsageRecord.id))).scalar_one()
        by_status = dict(conn.execute(select(UsageRecord.status, func.count()).group_by(UsageRecord.status)).all())
        dupes = conn.execute(select(func.count()).select_from(
            select(UsageRecord.request_id).group_by(UsageRecord.request_id).having(func.count() > 1).subquery()
        )).scalar_one()
    engine.dispose()
    return total, {**by_status, "duplicate_request_ids": dupes}


def stop(proc: subprocess.Popen, timeout: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the gateway against a fast fake upstream.")
    parser.add_argument("--requests", type=int, default=5000, help="requests per measurement (default 5000)")
    parser.add_argument("--concurrency", default="1,64", help="comma-separated connection counts (default 1,64)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--provider", default="openai", choices=sorted(UPSTREAMS),
                        help="the provider whose fake serves the calls (default openai)")
    parser.add_argument("--time-cap", type=float, default=20.0, help="seconds per measurement at most (default 20)")
    parser.add_argument("--sqlite", action="store_true", help="record into SQLite instead of PostgreSQL")
    parser.add_argument("--db-name", default="keyway_bench", help="PostgreSQL database to (re)create")
    parser.add_argument("--metering", choices=("sync", "journal"), help="METERING_MODE (default: serve's, journal)")
    parser.add_argument("--byok", action="store_true", help="send byok_conf (default: the shared pool)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (journal, SQLite file)")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]

    workdir = tempfile.mkdtemp(prefix="keyway-bench-")
    fake = gateway = None
    try:
        fake, fake_port = start_fake(args.provider)
        url = fresh_database(args, workdir)
        say(f"database: {'SQLite' if args.sqlite else 'PostgreSQL ' + args.db_name}; fake upstream on :{fake_port}")
        key = prepare(url, workdir)
        gateway, gw_port = start_gateway(args, url, fake_port, workdir)
        say(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} before the run "
            "(req/s and latency depend on it; worker CPU per request much less)")
        say(f"gateway: manage.py serve --workers {args.workers} on :{gw_port} (pid {gateway.pid})")
        cells, sent = run_cells(args, fake_port, gw_port, key, workdir, gateway.pid)
        rss = worker_rss(gateway.pid)
        print_table(cells)
        say("")
        for pid, now_kb, peak_kb in rss:
            say(f"worker {pid}: RSS {now_kb / 1024:.1f} MB (peak {peak_kb / 1024:.1f} MB)")
        say("stopping the gateway (a graceful stop drains any queued usage records) ...")
        stop(gateway)
        total, detail = count_records(url)
        verdict = "OK" if total == sent and not detail["duplicate_request_ids"] else "MISMATCH"
        say(f"usage records: {total} for {sent} requests sent through the gateway {detail} -> {verdict}")
        return 0 if verdict == "OK" else 1
    finally:
        for proc in (gateway, fake):
            if proc is not None:
                stop(proc)
        if args.keep:
            say(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
