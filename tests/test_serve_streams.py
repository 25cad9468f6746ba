"""The production server as deployed: gunicorn with gevent workers, many concurrent streams, every one recorded."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from simulators.server import Fault
from tests.test_cli import ROOT, free_port, last_line, manage, rows

STREAMS = 40


@pytest.fixture
def served(tmp_path, fake_openai):
    """A migrated SQLite database with an org, credits and a key, served by `manage.py serve` (2 workers)."""
    url = f"sqlite:///{tmp_path / 'keyway.db'}"
    last_line(manage(url, "db", "upgrade"))
    slug = last_line(manage(url, "orgs", "create", "Serve Test"))
    last_line(manage(url, "credits", "grant", "--org", slug, "--amount", "50"))
    key = last_line(manage(url, "keys", "create", "--org", slug))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}
    env.update(DATABASE_URL=url, METERING_JOURNAL_DIR=str(tmp_path / "journal"), LOG_LEVEL="WARNING",
               GATEWAY_OPENAI_BASE_URL=fake_openai.url + "/v1", GATEWAY_OPENAI_SHARED_API_KEY="sk-shared-serve")
    server = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "serve", "--port", str(port), "--workers", "2"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):  # a bounded wait for the workers to come up, not a timing assertion
        if server.poll() is not None:
            break
        try:
            if requests.get(base + "/healthz", timeout=2).status_code == 200:
                break
        except (requests.ConnectionError, requests.Timeout):  # not up yet, or a worker still booting
            time.sleep(0.1)
    assert server.poll() is None, server.communicate(timeout=10)[0]
    yield base, key, url, server
    if server.poll() is None:
        server.terminate()
        server.wait(timeout=60)


def test_concurrent_streams_through_gevent_workers_are_each_recorded_once(served, fake_openai):
    base, key, url, server = served
    fake_openai.on_key("sk-byok-rate-limited", Fault("status", 429))
    client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=60)

    def one_stream(i: int) -> tuple[str, str, str]:
        extra = {"byok_conf": {"provider": "openai", "credentials": {"api_key": "sk-byok-rate-limited"}}} if i % 4 == 0 else {}
        raw = client.chat.completions.with_raw_response.create(
            model="openai/gpt-4o-mini", messages=[{"role": "user", "content": f"stream {i}"}], stream=True,
            stream_options={"include_usage": True}, extra_body=extra)
        chunks = list(raw.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return raw.headers["x-request-id"], raw.headers["x-gateway-fallback"], text

    with ThreadPoolExecutor(max_workers=STREAMS) as pool:
        results = list(pool.map(one_stream, range(STREAMS)))
    assert all(text == fake_openai.reply for _, _, text in results)
    assert sum(fallback == "1" for _, fallback, _ in results) == STREAMS // 4
    server.terminate()  # a graceful stop drains the usage journal
    server.wait(timeout=60)
    recorded = {row[0]: row[1] for row in rows(url, "SELECT request_id, fallback FROM usage_records")}
    assert sorted(recorded) == sorted(request_id for request_id, _, _ in results)
    assert sum(1 for fallback in recorded.values() if fallback) == STREAMS // 4
