"""The embedded default: `manage.py demo` seeds consistent books, and serves through the simulated providers."""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
import pytest
import requests
from sqlalchemy import func, select

from app import db
from app.billing.money import ZERO
from app.billing.pricing import cost_of, price_book
from app.demo import CONSOLE_KEY, PASSWORD, demo_state, seed
from app.demo_server import REPLY
from app.demo_traffic import FALLS_BACK, PROFILES
from app.models import (ApiKey, CreditAccount, CreditEntry, FinalizedPeriod, Invoice, Organization, UsageAttempt,
                        UsageRecord, UsageRollup, User)
from app.security import verify_password
from tests import clock
from tests.helpers import chat

ROOT = Path(__file__).resolve().parents[1]
RECORDS, DAYS = 4000, 60
SAMPLE_MODELS = {"azure": "gpt-4o", "mistral": "mistral-small-latest", "anthropic": "claude-sonnet-4-5",
                 "gemini": "gemini-2.5-flash", "vertex": "gemini-2.5-flash",
                 "bedrock": "anthropic.claude-3-5-haiku-20241022-v1:0"}


@pytest.fixture
def seeded(app):
    now = clock.now()
    summary = seed(records=RECORDS, days=DAYS, now=now, progress=False)
    return now, summary


def test_seed_writes_the_requested_records_with_their_attempts(seeded):
    with db.session_scope() as s:
        assert s.scalar(select(func.count()).select_from(UsageRecord)) == RECORDS
        attempts = s.scalar(select(func.count()).select_from(UsageAttempt))
        assert attempts == s.scalar(select(func.sum(UsageRecord.attempts_count))) > RECORDS
        assert s.scalar(select(func.count(func.distinct(UsageAttempt.record_id)))) == RECORDS
        assert len(set(s.scalars(select(UsageRecord.request_id)))) == RECORDS


def test_seed_creates_two_orgs_with_a_user_of_each_role(seeded):
    with db.session_scope() as s:
        assert sorted(s.scalars(select(Organization.slug))) == sorted(p.slug for p in PROFILES)
        users = s.execute(select(Organization.slug, User.role, User.email, User.password_hash)
                          .join(User.organization)).all()
        assert sorted((slug, role) for slug, role, _, _ in users) == sorted(
            (p.slug, r) for p in PROFILES for r in ("admin", "finance", "developer"))
        assert all(email == f"{role}@{slug}.example" and verify_password(h, PASSWORD) for slug, role, email, h in users)


def test_traffic_has_byok_shared_fallbacks_errors_streams_labels_and_unpriced(seeded):
    with db.session_scope() as s:
        records = s.scalars(select(UsageRecord)).all()
    kinds = Counter(r.credential for r in records)
    assert kinds["byok"] > RECORDS * 0.3 and kinds["shared"] > RECORDS * 0.3
    # Only what a few thousand records hold many times over (rarer cases show up in the full demo).
    fallbacks = [r for r in records if r.fallback]
    assert "rate_limit" in {r.fallback_reason for r in fallbacks} <= FALLS_BACK
    assert all(r.credential == "shared" and r.byok_label for r in fallbacks)
    errors = [r for r in records if r.status == "error"]
    assert errors and all(r.http_status >= 400 and r.error_class for r in errors)
    assert "bad_request" in {r.error_class for r in errors}
    assert any(r.stream and r.ttft_ms for r in records) and any(not r.stream for r in records)
    assert len({r.byok_label for r in records if r.byok_label}) >= 5
    assert len({r.provider for r in records}) >= 6 and len({r.model for r in records}) >= 10
    assert any(r.cost_status == "unpriced" and r.cost is None for r in records)
    assert any(r.tokens_source == "estimated" for r in records)


def test_fallback_records_keep_the_failed_byok_attempt_first(seeded):
    with db.session_scope() as s:
        for record in s.scalars(select(UsageRecord).where(UsageRecord.fallback.is_(True)).limit(50)):
            first, last = record.attempts[0], record.attempts[-1]
            assert (first.credential, first.outcome, first.error_class) == ("byok", "failed", record.fallback_reason)
            assert last.credential == "shared" and first.byok_label == record.byok_label


def test_every_priced_record_costs_its_catalog_price_and_only_shared_usage_is_charged(seeded):
    book = price_book()
    with db.session_scope() as s:
        for r in s.scalars(select(UsageRecord)):
            if r.cost_status == "priced":
                price = book.lookup(r.provider, r.model, r.created_at)
                assert r.price_id == price.id
                assert r.cost == cost_of(price, r.prompt_tokens, r.completion_tokens, r.cached_tokens,
                                         r.cache_write_tokens, r.reasoning_tokens)
            else:
                assert r.cost is None and r.charged == ZERO
            assert r.charged == (r.cost if r.credential == "shared" and r.cost is not None else ZERO)
            assert r.billing_period == f"{r.created_at:%Y-%m}"


def test_rollups_equal_the_raw_records(seeded):
    with db.session_scope() as s:
        per_org = {org_id: (n, charged, cost) for org_id, n, charged, cost in s.execute(
            select(UsageRecord.org_id, func.count(), func.sum(UsageRecord.charged),
                   func.sum(func.coalesce(UsageRecord.cost, 0))).group_by(UsageRecord.org_id))}
        rolled = {org_id: (n, charged, cost) for org_id, n, charged, cost in s.execute(
            select(UsageRollup.org_id, func.sum(UsageRollup.requests), func.sum(UsageRollup.charged),
                   func.sum(UsageRollup.cost)).group_by(UsageRollup.org_id))}
        assert set(rolled) == set(per_org)
        for org_id, (n, charged, cost) in per_org.items():
            assert (int(rolled[org_id][0]), rolled[org_id][1], rolled[org_id][2]) == (n, charged, cost)
        from app.billing.check import check_rollups

        assert check_rollups(s, {}) == []


def test_ledger_balance_equals_its_entries_and_never_goes_negative(seeded):
    with db.session_scope() as s:
        for account in s.scalars(select(CreditAccount)):
            entries = s.scalars(select(CreditEntry).where(CreditEntry.org_id == account.org_id)
                                .order_by(CreditEntry.created_at, CreditEntry.id)).all()
            running = ZERO
            for entry in entries:
                running += entry.amount
                assert running >= 0 and entry.balance_after == running
            assert account.balance == running and account.balance >= 0 and account.reserved == 0
            settled = -sum((e.amount for e in entries if e.kind == "settlement"), ZERO)
            charged = s.scalar(select(func.sum(UsageRecord.charged)).where(UsageRecord.org_id == account.org_id))
            assert settled == charged > 0
            assert any(e.kind == "grant" for e in entries)
        from app.billing.check import check_ledger

        assert check_ledger(s, {}) == []


def test_past_months_are_finalized_and_this_month_is_a_draft(seeded):
    now, summary = seeded
    current = f"{now:%Y-%m}"
    last = f"{(now.replace(day=1) - timedelta(days=1)):%Y-%m}"
    with db.session_scope() as s:
        invoices = s.scalars(select(Invoice).order_by(Invoice.id)).all()
        assert {(i.org_id, i.period) for i in invoices if i.period == last and i.status == "finalized"} == {
            (org_id, last) for org_id in s.scalars(select(Organization.id))}
        assert not [i for i in invoices if i.period == current]
        numbers = [int(i.number.rsplit("-", 1)[1]) for i in invoices]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # gapless, in order
        assert s.scalar(select(func.count()).select_from(FinalizedPeriod)) == len(invoices)
        from app.billing.check import check_invoices

        assert check_invoices(s, {}) == []
    assert f"{current} open as a draft" in summary


def test_traffic_has_a_weekly_rhythm_and_grows(seeded):
    now, _ = seeded
    with db.session_scope() as s:
        stamps = list(s.scalars(select(UsageRecord.created_at)))
    days = Counter(t.date() for t in stamps if t.date() < now.date())
    weekday = [n for d, n in days.items() if d.weekday() < 5]
    weekend = [n for d, n in days.items() if d.weekday() >= 5]
    assert sum(weekday) / len(weekday) > 2 * sum(weekend) / len(weekend)
    first, last = sorted(days)[:21], sorted(days)[-21:]
    assert sum(days[d] for d in last) > sum(days[d] for d in first)
    assert min(stamps).date() == (now - timedelta(days=DAYS - 1)).date() and max(stamps) <= now


def test_the_gateway_records_new_requests_on_top_of_the_seeded_data(seeded, client):
    from app.cli import create_key

    with db.session_scope() as s:
        org_id = s.scalar(select(Organization.id).where(Organization.slug == PROFILES[0].slug))
        _, key = create_key(s, org_id, "test")
        highest = s.scalar(select(func.max(UsageRecord.id)))
    response = chat(client, key)
    assert response.status_code == 200, response.get_data(as_text=True)
    with db.session_scope() as s:
        record = s.scalar(select(UsageRecord).where(UsageRecord.request_id == response.headers["X-Request-Id"]))
        assert record.id > highest and record.charged > 0


def test_seeding_at_a_boundary_finalizes_every_past_month_and_leaves_this_one_open(app, instant):
    """On the 1st at midnight, on 31 December's last instant, on 1 January and on 29 February."""
    summary = seed(records=600, days=40, now=instant, progress=False)
    current = f"{instant:%Y-%m}"
    with db.session_scope() as s:
        stamps = list(s.scalars(select(UsageRecord.created_at)))
        assert len(stamps) == 600 and max(stamps) <= instant
        assert min(stamps).date() == (instant - timedelta(days=39)).date()
        periods = set(s.scalars(select(UsageRecord.billing_period).distinct()))
        assert periods == {f"{t:%Y-%m}" for t in stamps}
        finalized = set(s.execute(select(Invoice.org_id, Invoice.period).where(Invoice.status == "finalized")))
        orgs = set(s.scalars(select(Organization.id)))
        assert finalized == {(o, p) for o in orgs for p in periods - {current}}
        numbers = s.scalars(select(Invoice.number).order_by(Invoice.id)).all()
        assert numbers == [f"KW-{instant.year}-{n:06d}" for n in range(1, len(numbers) + 1)]
        from app.billing.check import run_checks

        assert run_checks(s) == []
    assert f"{current} open as a draft" in summary


def test_seeding_for_another_moment_closes_the_months_before_that_moment(app):
    """seed(now=...) means that moment everywhere, the invoices it finalizes included, not the clock's."""
    moment = datetime(2028, 1, 1, 9, 30, tzinfo=timezone.utc)  # months after the frozen clock's NOON
    summary = seed(records=300, days=40, now=moment, progress=False)
    with db.session_scope() as s:
        finalized = set(s.scalars(select(Invoice.period).where(Invoice.status == "finalized")))
        assert finalized == set(s.scalars(select(UsageRecord.billing_period))) - {f"{moment:%Y-%m}"} != set()
        assert {i.finalized_at for i in s.scalars(select(Invoice))} == {moment}
    assert f"{moment:%Y-%m} open as a draft" in summary


def test_demo_refuses_a_database_holding_other_organizations(app, org):
    with db.session_scope() as s:
        with pytest.raises(click.ClickException, match="other organization"):
            demo_state(s)


def test_reset_empties_the_database_and_the_demo_seeds_again(app):
    from app.demo import prepare_database, reset_database

    url = app.config["DATABASE_URL"]
    seed(records=300, days=10, progress=False)
    reset_database(url)
    prepare_database(url)
    with db.session_scope() as s:
        assert demo_state(s) is False
        assert s.scalar(select(func.count()).select_from(Invoice)) == 0
    seed(records=200, days=10, progress=False)
    with db.session_scope() as s:
        assert demo_state(s) is True and s.scalar(select(func.count()).select_from(UsageRecord)) == 200


# -- the command itself, as the README runs it -------------------------------------------------------
def demo(db_url: str, *args: str, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_DATABASE_URL", "SESSION_COOKIE_SECURE")}
    # A journal folder of its own: the server journals usage, and another database's journal must not replay here.
    env.update(DATABASE_URL=db_url, PYTHONUNBUFFERED="1",
               METERING_JOURNAL_DIR=str(Path(db_url.removeprefix("sqlite:///")).parent / "journal"))
    return subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "demo", *args], cwd=ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


def keys_in(output: str) -> dict[str, str]:
    return dict(re.findall(r"^  (\w+)\s+(kw-\S+)$", output, re.M))


def test_demo_no_serve_seeds_once_and_prints_logins_and_keys(tmp_path):
    url = f"sqlite:///{tmp_path / 'keyway.db'}"
    first = demo(url, "--no-serve", "--records", "1500", "--days", "40").communicate(timeout=300)[0]
    assert "seeded 1,500 usage records" in first and "Traceback" not in first
    assert f"password for all: {PASSWORD}" in first and "admin@acme.example" in first
    second_run = demo(url, "--no-serve", "--records", "1500", "--days", "40")
    second = second_run.communicate(timeout=300)[0]
    assert second_run.returncode == 0 and "already seeded" in second
    old, new = keys_in(first), keys_in(second)
    assert set(old) == set(new) == {p.slug for p in PROFILES} and not set(old.values()) & set(new.values())
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.connect() as conn:
        console = conn.execute(select(ApiKey.revoked_at).where(ApiKey.name == CONSOLE_KEY)).scalars().all()
        assert conn.execute(select(func.count()).select_from(UsageRecord)).scalar() == 1500
    engine.dispose()
    assert len(console) == 4 and sum(r is None for r in console) == 2  # the previous run's keys are revoked
    reset = demo(url, "--no-serve", "--reset", "--records", "700", "--days", "40").communicate(timeout=300)[0]
    assert "seeded 700 usage records" in reset


@pytest.mark.real_clock  # the demo runs in another process: its session cookie expires by the real clock
def test_demo_serves_chat_through_the_simulated_providers(tmp_path):
    from tests.test_cli import free_port

    port, url = free_port(), f"sqlite:///{tmp_path / 'keyway.db'}"
    proc = demo(url, "--records", "500", "--days", "35", "--port", str(port), "--workers", "1")
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    output = []
    try:
        while not any("running at" in line for line in output):
            output.append(lines.get(timeout=240))  # bounded wait for the seeding and the server to come up
        while not any(line.startswith("  globex") for line in output):
            output.append(lines.get(timeout=30))
        base = f"http://127.0.0.1:{port}"
        assert any(base in line for line in output)
        key = keys_in("".join(output))["acme"]
        body = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}
        auth = {"Authorization": f"Bearer {key}"}
        shared = requests.post(f"{base}/v1/chat/completions", json=body, headers=auth, timeout=30)
        assert shared.status_code == 200 and shared.json()["choices"][0]["message"]["content"] == REPLY
        assert shared.headers["X-Gateway-Credential"] == "shared"
        byok = dict(body, model="gpt-4o-mini",
                    byok_conf={"provider": "openai", "credentials": {"api_key": "sk-demo-rate-limited"}})
        fell_back = requests.post(f"{base}/v1/chat/completions", json=byok, headers=auth, timeout=30)
        assert fell_back.status_code == 200 and fell_back.headers["X-Gateway-Fallback"] == "1"
        byok["byok_conf"]["credentials"]["api_key"] = "sk-demo-revoked"
        assert requests.post(f"{base}/v1/chat/completions", json=byok, headers=auth, timeout=30).status_code == 401
        browser = requests.Session()  # a printed login opens the dashboard over plain http
        form = browser.get(f"{base}/login", timeout=30)
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        signed_in = browser.post(f"{base}/login", data={"csrf_token": token, "email": "finance@acme.example",
                                                         "password": PASSWORD}, timeout=30)
        assert signed_in.status_code == 200 and signed_in.url.rstrip("/") != f"{base}/login"
        assert "Acme Robotics" in browser.get(base + "/", timeout=30).text
        listed = next(line for line in output if line.startswith("Simulated providers on loopback:"))
        simulated = set(listed.split(":", 1)[1].strip().split(", "))
        assert {"openai", "azure", "mistral", "groq"} <= simulated
        for provider, model in SAMPLE_MODELS.items():
            if provider not in simulated:
                continue  # that provider's fake has not landed in simulators/ yet
            answer = requests.post(f"{base}/v1/chat/completions", json=dict(body, model=f"{provider}/{model}"),
                                   headers=auth, timeout=30)
            assert answer.status_code == 200, (provider, answer.text)
            assert answer.headers["X-Gateway-Provider"] == provider and answer.json()["choices"][0]["message"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
    assert proc.returncode == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)  # the server went down with the demo
