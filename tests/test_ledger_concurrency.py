"""64 concurrent shared-pool requests against credits for exactly 10: 10 served, 54 refused, never below zero."""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import orjson
import pytest
import requests
from sqlalchemy import create_engine, select, text

from app import db
from app.billing import ledger
from app.models import CreditEntry
from simulators.openai import FakeOpenAI
from tests.test_billing_support import balance, grant

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not os.environ.get("TEST_DATABASE_URL"), reason="needs PostgreSQL (TEST_DATABASE_URL)"),
]
CONCURRENT, AFFORDABLE = 64, 10


class GatedOpenAI(FakeOpenAI):
    """The fake OpenAI that holds every answer until the test opens the gate, counting arrivals."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.arrived = 0
        self._count = threading.Lock()

    def handle(self, handler, received, fault) -> None:
        with self._count:
            self.arrived += 1
        self.gate.wait(timeout=120)
        super().handle(handler, received, fault)


@pytest.fixture
def gated_openai():
    fake = GatedOpenAI().start()
    yield fake
    fake.gate.set()
    fake.stop()


@pytest.fixture
def app_config(app_config, gated_openai):
    # Held answers must outlive the gate, so the timeouts are generous here.
    return {**app_config, "GATEWAY_OPENAI_BASE_URL": gated_openai.url + "/v1", "UPSTREAM_READ_TIMEOUT": 120.0,
            "UPSTREAM_ATTEMPT_DEADLINE": 150.0}


def post(url: str, key: str) -> requests.Response:
    body = {"model": "openai/gpt-4o-mini", "max_tokens": 16,
            "messages": [{"role": "user", "content": "Count the apples in this sentence."}]}
    return requests.post(f"{url}/v1/chat/completions", data=orjson.dumps(body), timeout=180,
                         headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})


class BalanceWatch(threading.Thread):
    """Samples the balance on its own connection for as long as the requests run."""

    def __init__(self, url: str, org_id: int):
        super().__init__(daemon=True)
        self.engine = create_engine(url)
        self.org_id, self.samples, self.stop = org_id, [], threading.Event()

    def run(self) -> None:
        with self.engine.connect() as conn:
            while not self.stop.is_set():
                self.samples.append(conn.execute(text("SELECT balance FROM credit_accounts WHERE org_id = :o"),
                                                 {"o": self.org_id}).scalar_one())
                conn.commit()
        self.engine.dispose()


def test_64_concurrent_requests_with_credits_for_10(app, live_server, org, gateway_key, gated_openai):
    gated_openai.gate.set()
    grant(org.id, "100")
    probe = post(live_server.url, gateway_key)
    assert probe.status_code == 200, probe.text
    with db.session_scope() as session:
        worst = -session.scalar(select(CreditEntry.amount).where(
            CreditEntry.request_id == probe.headers["X-Request-Id"], CreditEntry.kind == "reservation"))
        ledger.adjust(session, org.id, AFFORDABLE * worst - balance(org.id)[0], note="exactly ten worst cases")
    assert balance(org.id) == (AFFORDABLE * worst, Decimal(0))
    gated_openai.gate.clear()
    gated_openai.arrived = 0

    watch = BalanceWatch(app.config["DATABASE_URL"], org.id)
    watch.start()
    with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
        futures = [pool.submit(post, live_server.url, gateway_key) for _ in range(CONCURRENT)]
        deadline = time.monotonic() + 120
        # Nothing settles while the gate is shut, so every refusal is decided against reservations alone.
        while time.monotonic() < deadline:
            refused = sum(1 for f in futures if f.done() and f.result().status_code == 402)
            if refused + gated_openai.arrived >= CONCURRENT:
                break
            time.sleep(0.05)
        gated_openai.gate.set()
        responses = [f.result() for f in futures]
    watch.stop.set()
    watch.join(timeout=10)

    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == AFFORDABLE, statuses
    assert statuses.count(402) == CONCURRENT - AFFORDABLE, statuses
    assert gated_openai.arrived == AFFORDABLE
    assert all(r.json()["error"]["code"] == "insufficient_credits" for r in responses if r.status_code == 402)
    assert watch.samples and min(watch.samples) >= 0
    held, reserved = balance(org.id)
    assert reserved == 0 and held >= 0
    with db.session_scope() as session:
        assert held == ledger.ledger_sum(session, org.id)
        afters = list(session.scalars(select(CreditEntry.balance_after).where(CreditEntry.org_id == org.id)))
        assert min(afters) >= 0
        assert session.scalar(select(db_count()).where(CreditEntry.org_id == org.id,
                                                      CreditEntry.kind == "settlement")) == AFFORDABLE + 1


def db_count():
    from sqlalchemy import func

    return func.count(CreditEntry.id)
