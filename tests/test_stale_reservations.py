"""Credits held by a request whose worker died go back, once, and a late settlement never releases twice."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select, update

from app import db
from app.billing import ledger
from app.billing.metering import UsageEvent, write
from app.models import CreditEntry
from app.types import utcnow
from tests.factories import grant


def age_reservations(hours: int) -> None:
    with db.session_scope() as session:
        session.execute(update(CreditEntry).where(CreditEntry.kind == "reservation")
                        .values(created_at=utcnow() - timedelta(hours=hours)))


def test_stale_reservation_is_released_once(app, org):
    grant(org, "10")
    assert ledger.reserve(org.id, "gen-dead-worker", Decimal("2"))
    assert ledger.reserve(org.id, "gen-still-running", Decimal("1"))
    age_reservations(2)
    with db.session_scope() as session:  # a fresh reservation is left alone
        assert ledger.reserve(org.id, "gen-fresh", Decimal("1"))
    with db.session_scope() as session:
        assert ledger.release_stale(session) == 2
    with db.session_scope() as session:
        assert ledger.release_stale(session) == 0
        balance, reserved = ledger.balance_of(session, org.id)
        assert (balance, reserved) == (Decimal("9"), Decimal("1"))
        assert balance == ledger.ledger_sum(session, org.id)


def test_settlement_after_a_sweep_does_not_release_again(app, org):
    grant(org, "10")
    assert ledger.reserve(org.id, "gen-late", Decimal("3"))
    age_reservations(2)
    with db.session_scope() as session:
        ledger.release_stale(session)
    event = UsageEvent(request_id="gen-late", org_id=org.id, api_key_id=None, provider="openai", model="gpt-4o-mini",
                       credential="shared", status="ok", http_status=200, cost=Decimal("0.5"),
                       charge=Decimal("0.5"), reserved=Decimal("3"))
    with db.session_scope() as session:
        assert write(session, event)
    with db.session_scope() as session:
        balance, reserved = ledger.balance_of(session, org.id)
        assert (balance, reserved) == (Decimal("9.5"), Decimal(0))
        assert balance == ledger.ledger_sum(session, org.id)
        kinds = session.scalars(select(CreditEntry.kind).where(CreditEntry.request_id == "gen-late")).all()
        assert sorted(kinds) == ["release", "reservation", "settlement"]


def test_cli_releases_stale_reservations(app, org):
    from click.testing import CliRunner

    from app.cli import cli

    grant(org, "5")
    ledger.reserve(org.id, "gen-orphan", Decimal("1"))
    age_reservations(3)
    with app.app_context():
        result = CliRunner().invoke(cli, ["credits", "release-stale", "--older-than-minutes", "60"])
    assert result.exit_code == 0, result.output
    assert "released 1 stale reservations" in result.output


def test_settlement_releases_only_a_hold_that_exists(app, org):
    """A hold lost before it reached the disk (a database crash) is not released out of thin air."""
    grant(org, "10")
    event = UsageEvent(request_id="gen-lost-hold", org_id=org.id, api_key_id=None, provider="openai",
                       model="gpt-4o-mini", credential="shared", status="ok", http_status=200, cost=Decimal("0.5"),
                       charge=Decimal("0.5"), reserved=Decimal("3"))
    with db.session_scope() as session:
        assert write(session, event)
    with db.session_scope() as session:
        assert ledger.balance_of(session, org.id) == (Decimal("9.5"), Decimal(0))
        assert ledger.ledger_sum(session, org.id) == Decimal("9.5")


def test_reservations_do_not_wait_for_the_wal_flush(app):
    from sqlalchemy import text

    if db.get_engine().dialect.name != "postgresql":
        import pytest

        pytest.skip("PostgreSQL only: SQLite has no asynchronous commit")
    with db.hold_engine().connect() as conn:
        assert conn.execute(text("SHOW synchronous_commit")).scalar() == "off"
    with db.get_engine().connect() as conn:  # everything else stays durable
        assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"


def test_reservation_survives_a_dropped_connection(app, org):
    from sqlalchemy import text

    if db.get_engine().dialect.name != "postgresql":
        import pytest

        pytest.skip("PostgreSQL only: the hold pool exists only there")
    grant(org, "10")
    assert ledger.reserve(org.id, "gen-before", Decimal("1"))
    with db.get_engine().connect() as conn:  # the server drops every pooled hold connection
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'"))
    assert ledger.reserve(org.id, "gen-after", Decimal("1"))
    with db.session_scope() as session:
        assert ledger.balance_of(session, org.id) == (Decimal("8"), Decimal("2"))
