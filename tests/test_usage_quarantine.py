"""A usage event the database refuses never stops recording: it is isolated and quarantined, the rest is recorded."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Callable

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import OperationalError

from app import db
from app.billing import ledger
from app.billing.batch import write_batch
from app.billing.check import check_quarantine, run_checks
from app.billing.journal import JournalWriter
from app.billing.metering import AttemptEvent, UsageEvent
from app.billing.money import ZERO
from app.billing.quarantine import quarantine_key, quarantine_summary
from app.billing.recorder import commit_events
from app.models import ApiKey, CreditAccount, CreditEntry, UsageRecord
from app.models.usage import QuarantinedEvent
from app.security import new_request_id
from tests.conftest import PG_URL
from tests.factories import OrganizationFactory, grant
from tests.test_metering_journal import _crash_with_journal, _journal_files, _key_id, _state, _wait_for

AT = datetime(2026, 11, 16, 9, 30, tzinfo=timezone.utc)  # a fixed instant: nothing here reads the calendar
HOLD = Decimal("0.0010000")
MISSING = 987_654  # an id no organization, key or price has
pg_only = pytest.mark.skipif(not PG_URL, reason="SQLite stores this value as it is")


def event(org_id: int, i: int = 0, shared: bool = False, api_key_id: int | None = None, **changes) -> UsageEvent:
    credential, label = ("shared", "") if shared else ("byok", "team-a")
    e = UsageEvent(
        request_id=new_request_id(), org_id=org_id, api_key_id=api_key_id, provider="openai", model="gpt-4o-mini",
        credential=credential, status="ok", http_status=200, created_at=AT + timedelta(seconds=i), label=label,
        prompt_tokens=10 + i % 7, completion_tokens=20 + i % 5, cost=Decimal("0.0000123"), cost_status="priced",
        charge=Decimal("0.0000150") if shared else ZERO, reserved=HOLD if shared else ZERO, latency_ms=5 + i % 3,
        attempts=[AttemptEvent("openai", "gpt-4o-mini", credential, label, "ok", 200, "", 4)],
    )
    return replace(e, **changes)


def batch(org_id: int, n: int, api_key_id: int | None = None) -> list[UsageEvent]:
    """Every third event on the shared pool, with its credit hold taken as the gateway takes it."""
    events = [event(org_id, i, shared=i % 3 == 0, api_key_id=api_key_id) for i in range(n)]
    for e in events:
        if e.reserved > 0:
            assert ledger.reserve(org_id, e.request_id, e.reserved)
    return events


@dataclass(frozen=True)
class Poison:
    name: str
    make: Callable[[UsageEvent], UsageEvent]  # applied to a shared event whose hold is already taken
    pg_only: bool = False

    def param(self):
        return pytest.param(self, id=self.name, marks=[pg_only] if self.pg_only else [])


POISONS = [
    Poison("organization that does not exist", lambda e: replace(e, org_id=MISSING)),
    Poison("gateway key that does not exist", lambda e: replace(e, api_key_id=MISSING)),
    Poison("price that does not exist", lambda e: replace(e, price_id=MISSING)),
    Poison("a claimed hold larger than the ledger holds (CHECK)", lambda e: replace(e, reserved=Decimal("1000"))),
    Poison("cost beyond what Money stores", lambda e: replace(e, cost=Decimal("1e30"))),
    Poison("token count beyond 64 bits", lambda e: replace(e, prompt_tokens=2**70)),
    Poison("lone surrogate in model", lambda e: replace(e, model="gpt-\ud800")),
    Poison("attempt value no driver can adapt",
           lambda e: replace(e, attempts=[replace(e.attempts[0], model={"not": "text"})])),
    Poison("model over 128 characters", lambda e: replace(e, model="m" * 129), pg_only=True),
    Poison("NUL in model", lambda e: replace(e, model="gpt-4o\x00"), pg_only=True),
    Poison("NUL in label", lambda e: replace(e, label="team\x00a"), pg_only=True),
    Poison("label over 64 characters", lambda e: replace(e, label="l" * 65), pg_only=True),
    Poison("attempt model over 128 characters",
           lambda e: replace(e, attempts=[replace(e.attempts[0], model="m" * 129)]), pg_only=True),
    Poison("token count beyond 32 bits", lambda e: replace(e, completion_tokens=2**40), pg_only=True),
    Poison("text where an integer belongs", lambda e: replace(e, http_status="two hundred"), pg_only=True),
]
BY_NAME = {p.name: p for p in POISONS}


def poisoned(org_id: int, i: int = 0, poison: Poison = BY_NAME["organization that does not exist"]) -> UsageEvent:
    """A spoiled shared-pool event, holding credits as the gateway holds them (none without an account)."""
    bad = poison.make(event(org_id, i, shared=True))
    ledger.reserve(bad.org_id, bad.request_id, HOLD)
    return bad


def recorded(org_id: int | None = None) -> int:
    db.session.remove()
    stmt = select(func.count(UsageRecord.id))
    return db.session.scalar(stmt if org_id is None else stmt.where(UsageRecord.org_id == org_id))


def quarantined() -> list[QuarantinedEvent]:
    db.session.remove()
    return list(db.session.scalars(select(QuarantinedEvent).order_by(QuarantinedEvent.id)))


def entries_of(request_id: str) -> list[tuple[str, Decimal]]:
    db.session.remove()
    return [(kind, amount) for kind, amount in db.session.execute(
        select(CreditEntry.kind, CreditEntry.amount).where(CreditEntry.request_id == request_id).order_by(CreditEntry.id))]


def ledger_entries(org_id: int, but: str = "") -> list[tuple[str, Decimal]]:
    db.session.remove()
    return [(kind, amount) for kind, amount in db.session.execute(
        select(CreditEntry.kind, CreditEntry.amount).where(CreditEntry.org_id == org_id, CreditEntry.request_id != but)
        .order_by(CreditEntry.id))]


def through_journal(events: list[UsageEvent], folder: str | None = None, **options) -> None:
    """Hand the events to a journal writer as the gateway does, wait until it has dealt with all of them, stop it."""
    writer = JournalWriter(folder or tempfile.mkdtemp(prefix="keyway-journal-"), **options)
    try:
        for e in events:
            writer(e)
        assert writer.flush(60)
    finally:
        writer.close()


# -- the writer survives -----------------------------------------------------------------
@pytest.mark.parametrize("poison", [BY_NAME["organization that does not exist"].param(),
                                    BY_NAME["model over 128 characters"].param()])
def test_one_poisoned_event_in_a_batch_of_500_leaves_499_recorded_and_1_quarantined(app, poison):
    org = OrganizationFactory()
    grant(org, "50.00")
    events = batch(org.id, 500)
    bad = events[250] = poisoned(org.id, 250, poison)
    batches: list[int] = []

    def write(events_):
        batches.append(len(events_))
        return commit_events(events_)

    folder = tempfile.mkdtemp(prefix="keyway-journal-")
    through_journal(events, folder, write=write, interval=60.0)  # wakes only once 500 are queued: one batch
    assert batches == [500]  # one call, no retry: the writer never stalled on the bad row
    assert recorded(org.id) == 499
    rows = quarantined()
    assert [(r.request_id, r.status) for r in rows] == [(bad.request_id, "pending")]
    assert rows[0].error_class in ("IntegrityError", "DataError")
    assert _journal_files(folder) == []  # the segment is done with: the quarantined event counts as handled
    with db.session_scope() as session:
        assert run_checks(session) == []  # rollups, summary and ledger agree with what was recorded
        assert len(check_quarantine(session, {})) == 1


@pytest.mark.parametrize("poison", [p.param() for p in POISONS])
def test_each_poison_class_is_quarantined_and_the_rest_recorded_as_if_alone(app, poison):
    alone, mixed = OrganizationFactory(), OrganizationFactory()
    grant(alone, "10.00")
    grant(mixed, "10.00")
    good_alone = batch(alone.id, 12, _key_id(alone))
    good_mixed = batch(mixed.id, 12, _key_id(mixed))
    alone, mixed = alone.id, mixed.id
    bad = poisoned(mixed, 6, poison)
    with db.session_scope() as session:
        write_batch(session, good_alone)
    outcome = commit_events(good_mixed[:6] + [bad] + good_mixed[6:])
    assert (outcome.recorded, outcome.quarantined) == (12, [quarantine_key(bad.request_id)])
    # Records, attempts, rollups, daily summary, settlements and last-used: the same as without the bad event.
    want, got = _state(alone), _state(mixed)
    assert got["records"] == want["records"] and got["attempts"] == want["attempts"]
    assert got["rollups"] == want["rollups"]
    assert got["account"] == want["account"]  # the bad event's hold was given back: nothing stays reserved
    assert ledger_entries(mixed, but=bad.request_id) == ledger_entries(alone)
    db.session.remove()
    last_used = {org: db.session.scalar(select(ApiKey.last_used_at).where(ApiKey.org_id == org))
                 for org in (alone, mixed)}
    # Last-used moves at minute resolution, so the halves of a split batch may leave it up to a minute earlier.
    assert last_used[alone] - timedelta(minutes=1) <= last_used[mixed] <= last_used[alone]
    if bad.org_id == mixed:
        assert entries_of(bad.request_id) == [("reservation", -HOLD), ("release", HOLD)]
    [row] = quarantined()
    assert row.org_id == bad.org_id and row.status == "pending" and row.failures == 1
    with db.session_scope() as session:
        assert run_checks(session) == []


def test_a_poisoned_batch_of_one_org_does_not_hold_back_another(app):
    a, b = OrganizationFactory(), OrganizationFactory()
    grant(a, "10.00")
    grant(b, "10.00")
    events_a, events_b = batch(a.id, 30), batch(b.id, 30)
    for i in (3, 14, 27):
        events_a[i] = poisoned(a.id, i, BY_NAME["price that does not exist"])
    raised: list[BaseException] = []

    def write(events_):
        try:
            return commit_events(events_)
        except BaseException as exc:
            raised.append(exc)
            raise

    through_journal([e for pair in zip(events_a, events_b) for e in pair], write=write, interval=0.01, batch_size=16)
    assert raised == []  # no back-off: every batch was settled in its first pass
    assert (recorded(a.id), recorded(b.id)) == (27, 30)
    with db.session_scope() as session:
        assert quarantine_summary(session).by_org == {a.id: 3}
        assert quarantine_summary(session, org_id=b.id).count == 0
        account_b = session.get(CreditAccount, b.id)
        assert account_b.reserved == 0 and run_checks(session) == []


# -- transient failures are not data -------------------------------------------------------
def _unreachable_database_error() -> OperationalError:
    """A real OperationalError from the real driver: a database that does not answer."""
    url = ("postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=2" if PG_URL
           else "sqlite:////nonexistent-folder/keyway.db")
    engine = create_engine(url)
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("the database at the unused address answered")


def test_a_transient_failure_is_retried_with_backoff_and_loses_nothing(app, org):
    grant(org, "5.00")
    events = batch(org.id, 20)
    events[7] = poisoned(org.id, 7)
    outage = {"left": 3, "tries": 0}
    error = _unreachable_database_error()

    def flaky(events_):
        outage["tries"] += 1
        if outage["left"]:
            outage["left"] -= 1
            raise error
        return commit_events(events_)

    through_journal(events, write=flaky, interval=0.01, max_backoff=0.05)
    assert outage["tries"] >= 4  # retried the same events, quarantined nothing while the database was away
    assert recorded(org.id) == 19
    assert [r.request_id for r in quarantined()] == [events[7].request_id]


def test_an_outage_in_the_middle_of_isolating_a_bad_event_records_each_event_once(app, org):
    grant(org, "5.00")
    events = batch(org.id, 16)
    events[11] = poisoned(org.id, 11)
    error = _unreachable_database_error()
    calls = {"n": 0}

    def store_then_outage(events_):
        calls["n"] += 1
        if calls["n"] == 3:  # the whole batch refused, the first half stored, then the database goes away
            raise error
        with db.session_scope() as session:
            return write_batch(session, events_)

    with pytest.raises(OperationalError):
        commit_events(events, store=store_then_outage)
    assert recorded(org.id) == 8 and quarantined() == []
    outcome = commit_events(events)  # the writer's retry of the same batch
    assert outcome.recorded == 7 and len(outcome.quarantined) == 1
    assert recorded(org.id) == 15 and len(quarantined()) == 1
    with db.session_scope() as session:
        assert run_checks(session) == []


# -- replay ----------------------------------------------------------------------------
def test_replay_of_an_orphaned_segment_with_a_poisoned_event_records_the_rest_and_quarantines_it_once(app, org):
    grant(org, "5.00")
    events = batch(org.id, 8)
    events[4] = poisoned(org.id, 4)
    folder = tempfile.mkdtemp(prefix="keyway-journal-")
    _crash_with_journal(folder, events)
    _crash_with_journal(folder, events)  # the same events orphaned twice: a replay never doubles anything
    assert len(_journal_files(folder)) == 2
    writer = JournalWriter(folder, interval=0.01)
    try:
        _wait_for(lambda: _journal_files(folder) == [writer._segment.path], timeout=30)
    finally:
        writer.close()
    assert recorded(org.id) == 7
    [row] = quarantined()
    assert (row.request_id, row.failures) == (events[4].request_id, 2)
    assert _journal_files(folder) == []
