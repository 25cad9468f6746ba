"""The speed bar: Keyway beside a minimal pass-through, measured in one run, with wrk against nginx.

Absolute figures on a shared machine move by 2x from day to day, so every
figure this prints is a ratio against a baseline measured in the same run:

- upstream: nginx serving a canned OpenAI chat.completion and a 20-chunk SSE
  stream (Debian's package);
- baseline: bench/passthru.py, gevent + Flask forwarding the body to the same
  upstream over a pooled urllib3 client (what any BYOK gateway must at least do);
- keyway: `manage.py serve` on PostgreSQL, BYOK (`byok_conf`) and the shared pool;
- load: wrk (Debian's package) with bench/chat.lua, keep-alive, N connections.

For each target and mode it runs a warm-up and `--reps` measured runs, and reads
requests/s, the CPU its process group spent per request (/proc), and for Keyway
how many of the answered requests had their usage record committed *when the
load ended* (not after a drain), the recorder's lag while the load ran (from
recorder.status, when there is a recorder), how long a graceful stop took and
whether every answered request was recorded after it.

    .venv/bin/python bench/speed.py                          # 64 connections, 2 x 10 s, JSON and streams
    .venv/bin/python bench/speed.py --conns 16 --duration 5 --targets passthru,byok
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import orjson
import psycopg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
PYTHON = sys.executable
HZ = os.sysconf("SC_CLK_TCK")
LOAD_KEY = "sk-bench-load-0123456789abcdef"
MODES = ("json", "stream")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- processes ------------------------------------------------------------------------------------------------
def start(command: list[str], log_path: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A process in a session of its own: its group's CPU can be summed and the whole group signalled."""
    log = open(log_path, "ab")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                            cwd=ROOT, start_new_session=True)


def group_ticks(pgid: int) -> int:
    total = 0
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(path) as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the command: state ppid pgrp ... utime(11) stime(12)
            total += int(fields[11]) + int(fields[12])
    return total


def stop_group(proc: subprocess.Popen, timeout: float = 120.0) -> float:
    """SIGTERM to the whole process group, as an orchestrator does; seconds until the leader exited."""
    started = time.monotonic()
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
    return time.monotonic() - started


def wait_http(url: str, proc: subprocess.Popen, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the server exited with {proc.returncode} before answering")
        if subprocess.run(["curl", "-sf", "-m", "2", "-o", "/dev/null", url]).returncode == 0:
            return
        time.sleep(0.3)
    raise SystemExit(f"{url} did not answer within {seconds:.0f} s")


# -- the upstream -----------------------------------------------------------------------------------------------
def write_bodies(work: str) -> str:
    folder = os.path.join(work, "bodies")
    os.makedirs(folder, exist_ok=True)
    usage = {"prompt_tokens": 24, "completion_tokens": 20, "total_tokens": 44}
    completion = {"id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! " * 10},
                               "finish_reason": "stop"}], "usage": usage}
    with open(os.path.join(folder, "chat.json"), "wb") as fh:
        fh.write(orjson.dumps(completion))
    chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    chunks += [{"choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}]} for i in range(18)]
    chunks += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, {"choices": [], "usage": usage}]
    frame = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini"}
    with open(os.path.join(folder, "chat.sse"), "wb") as fh:
        for chunk in chunks:
            fh.write(b"data: " + orjson.dumps({**frame, **chunk}) + b"\n\n")
        fh.write(b"data: [DONE]\n\n")
    return folder


NGINX = """worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    sendfile on; tcp_nodelay on; keepalive_timeout 300s; keepalive_requests 1000000;
    client_max_body_size 16m; client_body_buffer_size 64k; etag off; server_tokens off;
    open_file_cache max=16 inactive=1h;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /health {{ return 200 "ok"; }}
        # nginx answers a POST to a static file with 405: error_page turns that into the file, status 200.
        location = /v1/chat/completions {{ error_page 405 =200 /_json; return 405; }}
        location = /sse/v1/chat/completions {{ error_page 405 =200 /_sse; return 405; }}
        location = /_json {{ internal; default_type application/json; alias {bodies}/chat.json; }}
        location = /_sse {{ internal; default_type text/event-stream; alias {bodies}/chat.sse; }}
    }}
}}
"""


def start_upstream(work: str, port: int) -> subprocess.Popen:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if not nginx:
        raise SystemExit("nginx is not installed (apt-get install nginx): it is the fast fake upstream")
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as fh:
        fh.write(NGINX.format(work=work, port=port, bodies=write_bodies(work)))
    proc = start([nginx, "-c", conf, "-e", os.path.join(work, "nginx-error.log")], os.path.join(work, "nginx.log"))
    wait_http(f"http://127.0.0.1:{port}/health", proc)
    return proc


# -- the targets -------------------------------------------------------------------------------------------------
@dataclass
class Target:
    name: str  # passthru | byok | shared
    proc: subprocess.Popen | None = None
    port: int = 0
    key: str = ""
    answered: int = 0  # 2xx answers since the server started, warm-ups included
    records_before: int = 0


@dataclass
class Cell:
    target: str
    mode: str
    rps: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    errors: int = 0
    recorded_during_load: float | None = None
    lag_p99: float | None = None
    stop_seconds: float | None = None
    recorded_after_stop: str = ""


def admin_url(url: str) -> str:
    return url.rsplit("/", 1)[0] + "/postgres"


def fresh_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url(url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def manage(url: str, *args: str) -> str:
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "bench-secret"}
    out = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed: {out.stderr[-2000:]}")
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def prepare_keyway(url: str) -> str:
    fresh_database(url)
    manage(url, "db", "upgrade")
    org = manage(url, "orgs", "create", "Bench Org")
    key = manage(url, "keys", "create", "--org", org)
    manage(url, "credits", "grant", "--org", org, "--amount", "1000000")
    return key


def count_records(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM usage_records").fetchone()[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_target(target: Target, mode: str, args, work: str, upstream: str) -> None:
    """A fresh server per mode (the upstream path differs), on a fresh port: the last one may still be closing."""
    path = "/sse/v1" if mode == "stream" else "/v1"
    target.port = free_port()
    log = os.path.join(work, f"{target.name}-{mode}.log")
    if target.name == "passthru":
        target.proc = start([PYTHON, "-m", "gunicorn", "-k", "gevent", "-w", str(args.workers),
                             "--worker-connections", "1000", "-b", f"127.0.0.1:{target.port}", "--log-level",
                             "warning", "--chdir", BENCH, "passthru:app"], log,
                            {"PASSTHRU_UPSTREAM": upstream + path})
        wait_http(f"http://127.0.0.1:{target.port}/health", target.proc)
    else:
        env = {"DATABASE_URL": args.database, "SECRET_KEY": "bench-secret", "LOG_LEVEL": "WARNING",
               "METERING_JOURNAL_DIR": os.path.join(work, f"journal-{target.name}"),
               "GATEWAY_OPENAI_BASE_URL": upstream + path, "GATEWAY_OPENAI_SHARED_API_KEY": LOAD_KEY}
        target.proc = start([PYTHON, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(target.port),
                             "--workers", str(args.workers)], log, env)
        wait_http(f"http://127.0.0.1:{target.port}/healthz", target.proc)
        target.records_before = count_records(args.database)
    target.answered = 0


def body_file(work: str, target: Target, mode: str) -> str:
    body = {"model": "openai/gpt-4o-mini" if target.name != "passthru" else "gpt-4o-mini",
            "messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": "Write one friendly sentence that greets a benchmark run."}],
            "temperature": 0.2, "max_tokens": 64}
    if mode == "stream":
        body.update(stream=True, stream_options={"include_usage": True})
    if target.name == "byok":
        body["byok_conf"] = {"provider": "openai", "credentials": {"api_key": LOAD_KEY}}
    path = os.path.join(work, f"body-{target.name}-{mode}.json")
    with open(path, "wb") as fh:
        fh.write(orjson.dumps(body))
    return path


def wrk(target: Target, body: str, conns: int, seconds: float) -> dict[str, float]:
    auth = f"Bearer {target.key or LOAD_KEY}"
    out = subprocess.run(["wrk", "-t", str(min(2, conns)), "-c", str(conns), "-d", f"{max(1, round(seconds))}s", "--timeout", "10s",
                          "-s", os.path.join(BENCH, "chat.lua"), f"http://127.0.0.1:{target.port}/v1/chat/completions"],
                         env={**os.environ, "BENCH_BODY": body, "BENCH_AUTH": auth}, capture_output=True, text=True)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCHRESULT ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no result: {out.stdout[-500:]} {out.stderr[-500:]}")
    result = {k: float(v) for k, v in (pair.split("=") for pair in line.split()[1:])}
    target.answered += int(result["requests"] - result["non2xx"] - result["errors"])
    return result


def recorder_lag(work: str, target: Target) -> float | None:
    for path in glob.glob(os.path.join(work, f"journal-{target.name}", "*", "recorder.status")):
        try:
            with open(path, "rb") as fh:
                status = orjson.loads(fh.read())
        except (OSError, ValueError):
            return None
        lag = status.get("lag_p99_seconds", status.get("lag_p99"))
        return float(lag) if lag is not None else None
    return None


def measure(target: Target, mode: str, args, work: str, upstream: str) -> Cell:
    cell = Cell(target.name, mode)
    try:
        start_target(target, mode, args, work, upstream)
        load(cell, target, mode, args, work)
    finally:
        if target.proc is not None:
            cell.stop_seconds = stop_group(target.proc)
    if target.name != "passthru":
        after = count_records(args.database) - target.records_before
        cell.recorded_after_stop = f"{after} for {target.answered}+"
    return cell


def load(cell: Cell, target: Target, mode: str, args, work: str) -> None:
    body = body_file(work, target, mode)
    wrk(target, body, args.conns, args.warmup)
    lags: list[float] = []
    for _ in range(args.reps):
        ticks = group_ticks(target.proc.pid)
        result = wrk(target, body, args.conns, args.duration)
        spent = (group_ticks(target.proc.pid) - ticks) / HZ
        cell.rps.append(result["requests"] / result["duration_s"])
        cell.cpu_ms.append(1000 * spent / max(1.0, result["requests"]))
        cell.p50_ms.append(result["p50_us"] / 1000)
        cell.errors += int(result["errors"] + result["non2xx"])
        lag = recorder_lag(work, target) if target.name != "passthru" else None
        if lag is not None:
            lags.append(lag)
    if target.name != "passthru":
        committed = count_records(args.database) - target.records_before
        cell.recorded_during_load = committed / max(1, target.answered)
        cell.lag_p99 = max(lags) if lags else None


# -- the report ---------------------------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def report(cells: list[Cell]) -> None:
    by = {(c.target, c.mode): c for c in cells}
    print("\n| target | mode | req/s | CPU ms/req | p50 ms | errors | recorded when the load ended | recorder lag p99 s "
          "| stop s | recorded after stop |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c in cells:
        during = f"{100 * c.recorded_during_load:.1f} %" if c.recorded_during_load is not None else "-"
        lag = f"{c.lag_p99:.2f}" if c.lag_p99 is not None else "-"
        print(f"| {c.target} | {c.mode} | {median(c.rps):,.0f} | {median(c.cpu_ms):.2f} | {median(c.p50_ms):.1f} | "
              f"{c.errors} | {during} | {lag} | {c.stop_seconds:.1f} | {c.recorded_after_stop or '-'} |")

    def ratio(a: tuple[str, str], b: tuple[str, str], what: str = "rps") -> str:
        if a not in by or b not in by:
            return "-"
        x, y = median(getattr(by[a], what)), median(getattr(by[b], what))
        return f"{x / y:.2f}" if y else "-"

    print("\n| figure | ratio |\n|---|---|")
    print(f"| BYOK JSON req/s / pass-through | {ratio(('byok', 'json'), ('passthru', 'json'))} |")
    print(f"| BYOK streams/s / pass-through | {ratio(('byok', 'stream'), ('passthru', 'stream'))} |")
    print(f"| shared pool / BYOK, JSON | {ratio(('shared', 'json'), ('byok', 'json'))} |")
    print(f"| shared pool / BYOK, streams | {ratio(('shared', 'stream'), ('byok', 'stream'))} |")
    print(f"| CPU per request / pass-through (JSON) | {ratio(('byok', 'json'), ('passthru', 'json'), 'cpu_ms')} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="passthru,byok,shared")
    parser.add_argument("--modes", default="json,stream")
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database", default=os.environ.get("BENCH_DATABASE_URL",
                                                              "postgresql://postgres@127.0.0.1:5432/keyway_speed"))
    parser.add_argument("--upstream-port", type=int, default=18080)
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    work = tempfile.mkdtemp(prefix="keyway-speed-")
    say(f"work folder {work}; load average {os.getloadavg()[0]:.1f}")
    upstream_proc = start_upstream(work, args.upstream_port)
    upstream = f"http://127.0.0.1:{args.upstream_port}"
    cells: list[Cell] = []
    try:
        names = [t.strip() for t in args.targets.split(",") if t.strip()]
        key = prepare_keyway(args.database) if set(names) - {"passthru"} else ""
        for name in names:
            target = Target(name, key=key if name != "passthru" else "")
            for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
                say(f"{name} / {mode}: {args.reps} x {args.duration:.0f} s at {args.conns} connections")
                cells.append(measure(target, mode, args, work, upstream))
    finally:
        stop_group(upstream_proc, 10)
    report(cells)
    say(f"load average at the end {os.getloadavg()[0]:.1f}; logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
