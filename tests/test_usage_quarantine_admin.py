"""The usage quarantine from outside: what is classified as data, what is kept, how it is reported, retried, discarded."""
from __future__ import annotations

import secrets
import sqlite3
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, StatementError

from app import db
from app.billing import ledger, metering
from app.billing.codec import decode, encode
from app.billing.money import ZERO
from app.billing.quarantine import DATA, TRANSIENT, classify, describe, quarantine_key
from app.billing.recorder import commit_events
from app.models import AuditLog, CreditAccount, Price, UsageRecord
from app.models.usage import QuarantinedEvent
from simulators.server import Fault
from tests.canary import LogCapture, assert_nowhere, hits
from tests.factories import grant
from tests.helpers import byok, chat
from tests.test_cli import manage
from tests.test_usage_quarantine import AT, BY_NAME, HOLD, MISSING, entries_of, event, poisoned, quarantined, recorded

CANARY = "sk-canary-" + secrets.token_urlsafe(30)
PRICE_MISSING = BY_NAME["price that does not exist"]
any_text = st.text(st.characters(exclude_categories=()), max_size=150)  # NUL, controls, lone surrogates included


# -- classification ------------------------------------------------------------------------
def _wrapped(orig: Exception, dbapi_error: type) -> DBAPIError:
    """The exception SQLAlchemy raises for this driver error."""
    return DBAPIError.instance("INSERT INTO usage_records ...", {}, orig, dbapi_error)


PG, LITE = psycopg.Error, sqlite3.Error


@pytest.mark.parametrize("orig, driver, kind", [
    # What the database itself suffers: retry the same events later.
    (psycopg.errors.SerializationFailure("could not serialize access"), PG, TRANSIENT),
    (psycopg.errors.DeadlockDetected("deadlock detected"), PG, TRANSIENT),
    (psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"), PG, TRANSIENT),
    (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), PG, TRANSIENT),
    (psycopg.errors.AdminShutdown("terminating connection due to administrator command"), PG, TRANSIENT),
    (psycopg.errors.UndefinedTable('relation "usage_records" does not exist'), PG, TRANSIENT),  # not migrated
    (psycopg.errors.DiskFull("could not extend file"), PG, TRANSIENT),
    (psycopg.OperationalError("connection refused"), PG, TRANSIENT),
    (sqlite3.OperationalError("database is locked"), LITE, TRANSIENT),
    (sqlite3.OperationalError("no such table: usage_records"), LITE, TRANSIENT),
    # What a row carries.
    (psycopg.errors.StringDataRightTruncation("value too long for type character varying(128)"), PG, DATA),
    (psycopg.errors.ForeignKeyViolation("insert or update on table violates foreign key constraint"), PG, DATA),
    (psycopg.errors.CheckViolation("new row violates check constraint"), PG, DATA),
    (psycopg.errors.NumericValueOutOfRange("integer out of range"), PG, DATA),
    (psycopg.errors.InvalidTextRepresentation("invalid input syntax for type integer"), PG, DATA),
    (psycopg.errors.UniqueViolation("duplicate key value violates unique constraint"), PG, DATA),
    (psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), PG, DATA),  # refused unsent
    (psycopg.ProgrammingError("cannot adapt type 'dict'"), PG, DATA),
    (sqlite3.IntegrityError("FOREIGN KEY constraint failed"), LITE, DATA),
    (sqlite3.IntegrityError("CHECK constraint failed: reserved_not_negative"), LITE, DATA),
    (sqlite3.ProgrammingError("Error binding parameter 4: type 'dict' is not supported"), LITE, DATA),
], ids=lambda v: type(v).__name__ if isinstance(v, Exception) else None)
def test_a_driver_error_is_classified_by_its_class_and_sqlstate(orig, driver, kind):
    assert classify(_wrapped(orig, driver)) == kind


def test_values_refused_before_the_database_are_data_and_the_rest_transient():
    assert classify(StatementError("bind", "INSERT", {}, ValueError("naive datetime"))) == DATA
    for exc in (OverflowError("too large"), UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates not allowed"),
                TypeError("'>' not supported"), ArithmeticError()):
        assert classify(exc) == DATA
    for exc in (ConnectionError("down"), TimeoutError(), OSError("disk")):
        assert classify(exc) == TRANSIENT


# -- what is kept ----------------------------------------------------------------------------
@given(value=st.text(st.characters(categories=["L", "N", "Cc"]), min_size=8, max_size=40))
def test_the_error_text_never_carries_a_value_of_the_row(value):
    """PostgreSQL messages and DETAIL lines quote values; so do Python's. None of it is kept."""
    pg = psycopg.errors.InvalidTextRepresentation(
        f'invalid input syntax for type integer: "{value}"\nDETAIL:  Key (model)=({value}) is not present')
    for exc in (_wrapped(pg, PG), StatementError("bind", "INSERT", {}, ValueError(f"bad: '{value}'")),
                _wrapped(sqlite3.IntegrityError(f"constraint failed: \"{value}\"\n{value}"), LITE),
                UnicodeEncodeError("utf-8", value, 0, 1, "surrogates not allowed")):
        error_class, text = describe(exc)
        assert value not in text
        assert text.isprintable() and text.isascii() and len(text) <= 200
    assert describe(_wrapped(pg, PG))[1] == "22P02 InvalidTextRepresentation"


@given(model=any_text, label=any_text, request_id=any_text)
def test_an_event_with_any_text_is_one_escaped_line_that_decodes_to_itself(model, label, request_id):
    e = event(1, model=model, label=label, request_id=request_id)
    line = encode(e)
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert not any(byte < 0x20 for byte in line[:-1])  # NUL and every control character escaped
    assert decode(line) == e
    key = quarantine_key(request_id)
    assert key == quarantine_key(request_id) and key.isascii() and key.isprintable() and 0 < len(key) <= 64


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=any_text, label=any_text)
def test_any_text_in_model_or_label_is_recorded_or_quarantined_and_never_raised(app, org, model, label):
    e = event(org.id, model=model, label=label)
    commit_events([e])
    db.session.remove()
    stored = db.session.scalar(select(UsageRecord).where(UsageRecord.request_id == e.request_id))
    kept = db.session.scalar(select(QuarantinedEvent).where(QuarantinedEvent.request_id == e.request_id))
    assert (stored is None) != (kept is None)
    if stored is not None:
        assert (stored.model, stored.byok_label) == (model, label)
    else:
        assert decode(kept.event) == e  # kept whole, so a retry sends exactly what was refused


# -- a real request: sync mode, a shared-pool fallback, a canary key ----------------------------------
def test_a_request_whose_record_is_refused_is_answered_and_kept_without_its_key(app, client, org, gateway_key,
                                                                                fake_openai):
    grant(org, "10.00")
    fake_openai.on_key(CANARY, Fault("status", 429))  # the BYOK attempt fails over to the shared pool: a hold
    metering.set_writer(lambda e: metering.write_now(replace(e, price_id=MISSING)))
    try:
        with LogCapture() as logs:
            response = chat(client, gateway_key, byok_conf=byok(CANARY, label="canary-team"))
    finally:
        metering.set_writer(metering.write_now)
    assert response.status_code == 200 and response.headers["X-Gateway-Credential"] == "shared"
    assert recorded() == 0
    [row] = quarantined()
    request_id = response.headers["X-Request-Id"]
    assert row.request_id == request_id and "canary-team" in row.event
    assert hits(row.event + row.error, CANARY) == []
    assert [kind for kind, _ in entries_of(request_id)] == ["reservation", "release"]
    assert any("quarantined" in line for line in logs.lines)
    assert_nowhere(CANARY, logs=logs, responses=[response.get_data(as_text=True)], instance_path=app.instance_path)


def test_an_event_is_quarantined_even_when_its_hold_cannot_be_released(app, org):
    grant(org, "10.00")
    bad = poisoned(org.id, poison=PRICE_MISSING)
    with db.session_scope() as session:  # a ledger edited by hand: giving the hold back would break a CHECK
        session.execute(update(CreditAccount).where(CreditAccount.org_id == org.id).values(reserved=ZERO))
    assert commit_events([bad]).quarantined == [bad.request_id]
    assert [r.request_id for r in quarantined()] == [bad.request_id]
    assert entries_of(bad.request_id) == [("reservation", -HOLD)]  # left to the stale-hold sweep


# -- retry and discard --------------------------------------------------------------------------
def _cli(app, *args: str):
    return app.test_cli_runner().invoke(args=list(args))


def test_retry_after_the_cause_is_fixed_records_once_and_the_hold_is_released_once(app, org):
    grant(org, "10.00")
    bad = poisoned(org.id, poison=PRICE_MISSING)
    assert commit_events([bad]).quarantined == [bad.request_id]
    assert entries_of(bad.request_id) == [("reservation", -HOLD), ("release", HOLD)]
    with db.session_scope() as session:
        assert ledger.release_stale(session, older_than=timedelta(0)) == 0  # nothing left for the sweep

    refused = _cli(app, "usage", "quarantine", "retry", "--all")
    assert refused.exit_code != 0 and "0 recorded, 1 refused again" in refused.output
    assert quarantined()[0].failures == 2 and len(entries_of(bad.request_id)) == 2

    with db.session_scope() as session:  # the fix: the price the record points at exists now
        session.add(Price(id=MISSING, provider="openai", model="gpt-4o-mini", input_per_mtok=Decimal(1),
                          output_per_mtok=Decimal(2), effective_from=AT - timedelta(days=30)))
    done = _cli(app, "usage", "quarantine", "retry", "--all")
    assert done.exit_code == 0 and "1 recorded" in done.output, done.output
    assert _cli(app, "usage", "quarantine", "retry", "--all").output.startswith("0 recorded")
    assert commit_events([bad]).recorded == 0  # a journal replaying it later changes nothing
    assert recorded(org.id) == 1 and quarantined()[0].status == "recorded"
    assert entries_of(bad.request_id) == [("reservation", -HOLD), ("release", HOLD), ("settlement", -bad.charge)]


def test_discard_keeps_the_row_and_writes_the_audit_log(app, org):
    kept = poisoned(org.id, 0, PRICE_MISSING)
    orphan = poisoned(org.id, 1)  # its organization does not exist: no audit row can name it
    commit_events([kept, orphan])
    listed = _cli(app, "usage", "quarantine", "list")
    assert listed.exit_code == 0 and kept.request_id in listed.output and "2 pending" in listed.output
    row_id = quarantined()[0].id
    shown = _cli(app, "usage", "quarantine", "show", str(row_id))
    assert shown.exit_code == 0 and kept.request_id in shown.output and shown.output.isascii()
    assert _cli(app, "usage", "quarantine", "discard", "--all").exit_code != 0  # a reason is required
    done = _cli(app, "usage", "quarantine", "discard", "--all", "--reason", "test traffic")
    assert done.exit_code == 0 and "2 discarded" in done.output
    assert {r.status for r in quarantined()} == {"discarded"}
    assert all("test traffic" in r.resolution for r in quarantined())
    db.session.remove()
    [audit] = db.session.scalars(select(AuditLog).where(AuditLog.action == "usage.quarantine.discard")).all()
    assert audit.org_id == org.id and audit.detail["request_id"] == kept.request_id
    assert recorded() == 0


def test_billing_check_fails_while_events_wait_and_names_how_to_inspect_them(app, database_url, org):
    commit_events([event(org.id, 0), poisoned(org.id, 1)])
    check = manage(database_url, "billing", "check")
    assert check.returncode != 0
    [line] = [x for x in check.stdout.splitlines() if x.startswith("QUARANTINED")]
    assert "1 usage event(s)" in line and f"#{MISSING}" in line and "manage.py usage quarantine list" in line
    assert check.stderr.strip() == "error: usage events in quarantine"
    assert _cli(app, "usage", "quarantine", "discard", "--all", "--reason", "bad test row").exit_code == 0
    ok = _cli(app, "billing", "check")
    assert ok.exit_code == 0 and "usage quarantine empty" in ok.output
