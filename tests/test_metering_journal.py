"""The journaled, batched usage writer: same rows as the row-by-row writer, replay after a crash, outages."""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import orjson
import pytest
from sqlalchemy import func, select

from app import db
from app.billing import ledger, metering
from app.billing.batch import write_batch
from app.billing.journal import JournalWriter, encode
from app.billing.recorder import commit_events
from app.billing.metering import AttemptEvent, UsageEvent
from app.models import ApiKey, CreditAccount, CreditEntry, UsageAttempt, UsageRecord, UsageRollup
from app.security import new_request_id
from app.types import utcnow
from tests.canary import files_text, hits
from tests.factories import OrganizationFactory, grant, issue_key
from tests.helpers import byok, chat, sse_payloads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _key_id(org) -> int:
    issue_key(org)
    return db.session.scalars(select(ApiKey.id).where(ApiKey.org_id == org.id)).first()


def _events(org, api_key_id: int, n: int = 6) -> list[UsageEvent]:
    """A mix: shared with a reservation, BYOK, a fallback, an error, an unpriced model, an over-budget charge."""
    now = utcnow()
    out = []
    for i in range(n):
        kind = i % 6
        shared = kind in (0, 2, 5)
        e = UsageEvent(
            request_id=new_request_id(), org_id=org.id, api_key_id=api_key_id if kind != 4 else None,
            provider="openai", model="gpt-4o-mini" if kind != 4 else "mystery-model",
            credential="shared" if shared else "byok", status="error" if kind == 3 else "ok",
            http_status=429 if kind == 3 else 200, created_at=now - timedelta(seconds=n - i),
            label="team-a" if not shared else "", fallback=kind == 2, fallback_reason="rate_limit" if kind == 2 else "",
            error_class="rate_limit" if kind == 3 else "", stream=bool(i % 2), prompt_tokens=10 + i,
            completion_tokens=20 + i, cached_tokens=i, tokens_source="reported",
            cost=None if kind == 4 else Decimal("0.0000123") * (i + 1), cost_status="unpriced" if kind == 4 else "priced",
            charge=Decimal("0.0000150") * (i + 1) if shared else Decimal(0),
            reserved=Decimal("0.0010000") if shared else Decimal(0), latency_ms=5 + i, ttft_ms=3 if i % 2 else None,
            attempts=[AttemptEvent("openai", "gpt-4o-mini", "byok", "team-a", "failed", 429, "rate_limit", 2)] * (kind == 2)
            + [AttemptEvent("openai", "gpt-4o-mini", "shared" if shared else "byok", "", "ok", 200, "", 4)],
        )
        if kind == 5:
            e.charge = Decimal("7.5")  # more than the balance left: capped, as settle() caps it
        out.append(e)
    return out


def _reserve(events: list[UsageEvent]) -> None:
    for e in events:
        if e.reserved > 0:
            assert ledger.reserve(e.org_id, e.request_id, e.reserved)


def _state(org_id: int) -> dict:
    s = db.session
    s.expire_all()
    recs = s.scalars(select(UsageRecord).where(UsageRecord.org_id == org_id).order_by(UsageRecord.created_at)).all()
    skip = {"id", "request_id", "org_id", "api_key_id"}
    return {
        "records": [{c: getattr(r, c) for c in UsageRecord.__table__.c.keys() if c not in skip} for r in recs],
        "attempts": [[(a.seq, a.provider, a.credential, a.byok_label, a.http_status, a.error_class, a.outcome,
                       a.latency_ms) for a in r.attempts] for r in recs],
        "rollups": sorted(
            tuple(str(getattr(r, c)) for c in UsageRollup.__table__.c.keys() if c not in {"id", "org_id", "api_key_id"})
            for r in s.scalars(select(UsageRollup).where(UsageRollup.org_id == org_id))),
        "account": tuple(s.execute(select(CreditAccount.balance, CreditAccount.reserved)
                             .where(CreditAccount.org_id == org_id)).one()),
        "entries": [(e.kind, e.amount, e.balance_after) for e in s.scalars(
            select(CreditEntry).where(CreditEntry.org_id == org_id).order_by(CreditEntry.id))],
    }


def _count(org_id: int | None = None) -> int:
    db.session.remove()
    stmt = select(func.count(UsageRecord.id))
    if org_id is not None:
        stmt = stmt.where(UsageRecord.org_id == org_id)
    return db.session.scalar(stmt)


def test_batch_writer_stores_the_same_rows_as_the_row_by_row_writer(app):
    one, many = OrganizationFactory(), OrganizationFactory()
    grant(one, "10.00")
    grant(many, "10.00")
    events_one = _events(one, _key_id(one), 12)
    events_many = [replace(e, request_id=new_request_id(), org_id=many.id, api_key_id=_key_id(many) if e.api_key_id
                           else None, attempts=list(e.attempts)) for e in events_one]
    _reserve(events_one)
    _reserve(events_many)
    for e in events_one:
        with db.session_scope() as session:
            metering.write(session, e)
    with db.session_scope() as session:
        assert write_batch(session, events_many) == len(events_many)
    expected, got = _state(one.id), _state(many.id)
    assert got == expected
    assert got["account"][1] == 0  # every reservation released
    assert got["records"][-1]["charged"] < Decimal("7.5")  # the over-budget charge was capped


def test_batch_writer_skips_request_ids_already_recorded(app, org):
    grant(org, "5.00")
    events = _events(org, _key_id(org))
    _reserve(events)
    with db.session_scope() as session:
        assert write_batch(session, events[:3] + events[:3]) == 3  # duplicates inside one batch, too
    before = _state(org.id)
    with db.session_scope() as session:
        assert write_batch(session, events) == len(events) - 3
    with db.session_scope() as session:
        assert write_batch(session, events) == 0
    after = _state(org.id)
    assert len(after["records"]) == len(events)
    assert after["entries"][:len(before["entries"])] == before["entries"]


def _journal_files(folder: str) -> list[str]:
    """Journal segments under `folder`, including the per-database folder the app writes into."""
    return sorted(glob.glob(os.path.join(folder, "events-*.jsonl")) + glob.glob(os.path.join(folder, "*", "events-*.jsonl")))


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _crash_with_journal(folder: str, events: list[UsageEvent]) -> None:
    """A worker that journals the events while its database is away, then dies without any clean-up."""
    lines = b"".join(encode(e) for e in events)
    script = (
        "import os, sys, orjson\n"
        "from app.billing.journal import JournalWriter, decode\n"
        "def down(events): raise ConnectionError('database unreachable')\n"
        f"w = JournalWriter({folder!r}, write=down, interval=0.01)\n"
        "for line in sys.stdin.buffer.read().splitlines(): w(decode(line))\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script], input=lines, cwd=ROOT, check=True, timeout=60)


def test_journal_is_replayed_after_a_crash_exactly_once(app, org):
    grant(org, "5.00")
    events = _events(org, _key_id(org), 12)
    _reserve(events)
    folder = tempfile.mkdtemp(prefix="keyway-journal-")
    _crash_with_journal(folder, events[:8])
    _crash_with_journal(folder, events[8:])
    files = _journal_files(folder)
    assert len(files) == 2 and _count(org.id) == 0
    with open(files[-1], "ab") as fh:
        fh.write(encode(events[0])[:40])  # the crash tore the last line mid-write
    writer = JournalWriter(folder, interval=0.01)
    try:
        _wait_for(lambda: _count(org.id) == 12)  # the background thread replays orphans when it starts
        assert writer.replay_orphans() == 0
        assert _journal_files(folder) == [writer._segment.path]  # replayed segments deleted; its own is live
        replay_again = JournalWriter(folder, interval=0.01)
        assert replay_again.replay_orphans() == 0  # a live writer's segment is never taken for an orphan
        replay_again.close()
    finally:
        writer.close()
    assert _count(org.id) == 12
    assert _journal_files(folder) == []


def test_segment_committed_before_a_crash_replays_without_duplicates(app, org):
    grant(org, "5.00")
    events = _events(org, _key_id(org))
    _reserve(events)
    folder = tempfile.mkdtemp(prefix="keyway-journal-")
    writer = JournalWriter(folder, interval=0.01)
    for e in events:
        writer(e)
    assert writer.flush(10)
    writer._running = False  # "crash": the thread stops, the committed segment stays behind unlocked
    writer._wake.set()
    writer._thread.join(5)
    writer._segment.close()
    assert len(_journal_files(folder)) == 1
    state = _state(org.id)
    survivor = JournalWriter(folder, interval=0.01)
    try:
        # The survivor's thread replays the segment (all of it already committed) and deletes it ...
        _wait_for(lambda: _journal_files(folder) == [survivor._segment.path])
        assert _state(org.id) == state  # ... and nothing is written twice, no credit settled twice
    finally:
        survivor.close()


def test_database_outage_keeps_records_queued_then_commits_them(app, org):
    grant(org, "5.00")
    events = _events(org, _key_id(org))
    _reserve(events)
    outage = {"down": True, "tries": 0}

    def flaky(batch):
        outage["tries"] += 1
        if outage["down"]:
            raise ConnectionError("database unreachable")
        commit_events(batch)

    folder = tempfile.mkdtemp(prefix="keyway-journal-")
    writer = JournalWriter(folder, write=flaky, interval=0.01, max_backoff=0.05)
    try:
        for e in events:
            writer(e)
        assert not writer.flush(0.5)
        assert outage["tries"] >= 2 and _count(org.id) == 0
        assert len(orjson.loads(open(_journal_files(folder)[0], "rb").readline())["request_id"]) > 0
        outage["down"] = False
        assert writer.flush(10)
        assert _count(org.id) == len(events)
    finally:
        writer.close()
    assert _journal_files(folder) == []


@pytest.fixture
def app_config(app_config):
    return {**app_config, "METERING_MODE": "journal", "METERING_JOURNAL_DIR": "journal"}


def test_gateway_in_journal_mode_records_every_request_and_journals_no_key(app, client, org, gateway_key):
    grant(org, "5.00")
    canary = "sk-canary-JOURNAL-8f3a9c1e5b7d2f4a6c8e0b1d3f5a7c9e"
    sent = 0
    for stream in (False, True):
        for body in ({}, {"byok_conf": byok(canary)}):
            response = chat(client, gateway_key, stream=stream, **body)
            assert response.status_code == 200, response.data
            if stream:
                assert sse_payloads(response.get_data(as_text=True))[-1] == "[DONE]"
            sent += 1
    journal_dir = os.path.join(app.instance_path, "journal")
    assert _journal_files(journal_dir), "journal mode writes through the journal"
    assert hits(files_text(app.instance_path), canary) == []
    assert metering.flush(10)
    assert _count(org.id) == sent
    assert db.session.scalar(select(func.count(UsageAttempt.id))) == sent
    credential_kinds = sorted(db.session.scalars(select(UsageRecord.credential)))
    assert credential_kinds == ["byok", "byok", "shared", "shared"]
