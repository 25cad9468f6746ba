"""UTC days and months at their edges: the last instant of a month, the first, 1 January, 29 February.

A record belongs to the UTC day and month it was made in, whatever offset its
timestamp carries and whatever time zone a PostgreSQL session defaults to; the
pages and the API count "this month" and "the last 30 days" in UTC days.
"""
from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, select, text

from app import db
from app.billing import metering
from app.billing.batch import write_batch
from app.billing.check import run_checks
from app.billing.rollups import rebuild
from app.dashboard.usage import parse_filters
from app.models import UsageDaily, UsageRecord, UsageRollup
from tests import clock
from tests.conftest import PG_URL
from tests.dashboard_helpers import login, record, users  # noqa: F401
from tests.factories import issue_key
from tests.test_billing_support import usage_event

UTC = timezone.utc
LAST = timedelta(microseconds=1)
SPAN_LIMIT = 366  # days a usage range may cover, both ends included (docs/dashboard.md)
# Month edges around the instants the suite runs at, a year's end and a leap February among them.
EDGES = [datetime(2027, 3, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC), datetime(2028, 3, 1, tzinfo=UTC),
         datetime(2029, 3, 1, tzinfo=UTC)]


def _stored(model: str) -> list[tuple]:
    """(period, UTC day) of the one record of this model, then of its rollup row and its daily summary row."""
    with db.session_scope() as s:
        return [tuple(s.execute(select(t.billing_period, day).where(t.model == model)).one())
                for t, day in ((UsageRecord, func.date(UsageRecord.created_at)), (UsageRollup, UsageRollup.day),
                               (UsageDaily, UsageDaily.day))]


# -- the record's own day and month ------------------------------------------------------------
@pytest.mark.parametrize("writer", ["row", "batch"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edge=st.sampled_from(EDGES), before=st.booleans(), offset_minutes=st.integers(-14 * 60, 14 * 60))
def test_a_record_belongs_to_its_utc_day_and_month_whatever_its_offset(app, org, writer, edge, before,
                                                                        offset_minutes):
    """23:59:59.999999 UTC is that day and month; 00:00:00 UTC is the next, written in any time zone."""
    moment = edge - LAST if before else edge
    event = usage_event(org.id, credential="byok", at=moment.astimezone(timezone(timedelta(minutes=offset_minutes))))
    event.model = event.request_id  # one record per model: its rollup rows are its own
    with db.session_scope() as s:
        if writer == "row":
            metering.write(s, event)
        else:
            write_batch(s, [event])
    utc = (f"{moment:%Y-%m}", moment.date())
    assert [(period, str(day)) for period, day in _stored(event.model)] == [(utc[0], str(utc[1]))] * 3


def test_rebuilt_rollups_keep_midnight_records_in_their_utc_day(app, org):
    west = timezone(timedelta(hours=-9))
    for edge in EDGES:
        for moment in (edge - LAST, edge):
            metering.write_now(usage_event(org.id, credential="byok", at=moment.astimezone(west)))
    rebuild()
    with db.session_scope() as s:
        days = dict(s.execute(select(UsageDaily.day, UsageDaily.billing_period)).all())
        assert run_checks(s) == []
    assert days == {m.date(): f"{m:%Y-%m}" for edge in EDGES for m in (edge - LAST, edge)}


def test_a_naive_timestamp_is_refused_rather_than_guessed(org):
    with pytest.raises(ValueError, match="timezone-aware"):
        usage_event(org.id, at=datetime(2027, 3, 1))


# -- PostgreSQL sessions in another time zone ----------------------------------------------------
pg_only = pytest.mark.skipif(not PG_URL, reason="PostgreSQL only (TEST_DATABASE_URL)")
CHATHAM = "Pacific/Chatham"  # +13:45 or +12:45: no UTC day boundary coincides with its own


@pytest.fixture(params=["client", "database"])
def chatham_default(request, monkeypatch, database_url):
    """A session time zone other than UTC by default: from the client (PGTZ) or the database's own setting."""
    if not PG_URL:
        pytest.skip("PostgreSQL only (TEST_DATABASE_URL)")
    if request.param == "client":
        monkeypatch.setenv("PGTZ", CHATHAM)
        yield
        return
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    name = database_url.rsplit("/", 1)[1]
    with admin.connect() as conn:
        conn.execute(text(f"ALTER DATABASE \"{name}\" SET timezone = '{CHATHAM}'"))
    try:
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" RESET timezone'))
        admin.dispose()


@pg_only
def test_every_postgres_session_works_in_utc(chatham_default, app):
    with db.session_scope() as s:
        assert s.scalar(text("SHOW TimeZone")) == "UTC"
        s.rollback()  # a SET undone by the first rollback would leave the pooled connection in Chatham time
        assert s.scalar(text("SHOW TimeZone")) == "UTC"
    with db.hold_engine().connect() as conn:
        assert conn.scalar(text("SHOW TimeZone")) == "UTC"
    db.get_engine().dispose()
    with db.session_scope() as s:  # a fresh connection
        assert s.scalar(text("SHOW TimeZone")) == "UTC"


@pg_only
def test_sql_days_and_months_are_utc_in_a_chatham_session(chatham_default, app, org):
    moments = [edge - LAST for edge in EDGES] + EDGES
    for moment in moments:
        metering.write_now(usage_event(org.id, credential="byok", at=moment))
    with db.session_scope() as s:
        sql_days = set(s.scalars(select(func.date(UsageRecord.created_at))))
        sql_months = set(s.scalars(select(func.to_char(func.date_trunc("month", UsageRecord.created_at), "YYYY-MM"))))
        assert sql_days == {m.date() for m in moments}
        assert sql_months == set(s.scalars(select(UsageRecord.billing_period))) == {f"{m:%Y-%m}" for m in moments}
    rebuild()
    with db.session_scope() as s:
        assert run_checks(s) == []
        assert set(s.scalars(select(UsageDaily.day))) == {m.date() for m in moments}


# -- "this month" and "the last 30 days" -----------------------------------------------------------
def _metric(html: str, name: str) -> str:
    return re.search(rf'data-metric="{name}"[^>]*>([^<]*)<', html).group(1).strip()


def test_overview_month_starts_at_the_first_instant_of_the_utc_month(instant, org, users, login):
    first = clock.month_start(0)
    record(org, credential="byok", cost="1.00", model="gpt-4o", at=first)
    record(org, credential="byok", cost="2.00", model="gpt-4o-mini", at=first - LAST)
    html = login(users["admin"]).get("/").get_data(as_text=True)
    assert _metric(html, "byok-spend") == "$1.00" and _metric(html, "requests") == "1"
    chart_start = clock.today() - timedelta(days=29)  # the chart is 30 UTC days, across the month's start
    expected = [f"{day} · byok: {cost}" for day, cost in ((first.date(), "$1.00"), ((first - LAST).date(), "$2.00"))
                if day >= chart_start]
    assert sorted(re.findall(r'bar-byok"><title>([^<]+)</title>', html)) == sorted(expected)


def _csv_models(client, query: str = "") -> set[str]:
    text = client.get(f"/usage/export.csv?group=model{query}").get_data(as_text=True)
    return {row["model"] for row in csv.DictReader(io.StringIO(text))}


def test_usage_defaults_to_the_last_30_utc_days_both_ends_included(instant, org, users, login):
    first_day = datetime.combine(clock.today() - timedelta(days=29), datetime.min.time(), UTC)
    record(org, model="oldest-included", at=first_day)
    record(org, model="newest-excluded", at=first_day - LAST)
    record(org, model="now", at=clock.now())
    client = login(users["developer"])
    assert _csv_models(client) == {"openai/oldest-included", "openai/now"}
    end = (clock.today() - timedelta(days=1)).isoformat()
    assert _csv_models(client, f"&end={end}") == {"openai/oldest-included", "openai/newest-excluded"}


@settings(max_examples=200, deadline=None)
@given(end=st.dates(date(2024, 1, 1), date(2030, 12, 31)), span=st.integers(1, 800), only_end=st.booleans())
def test_usage_range_keeps_its_days_and_never_spans_more_than_the_limit(end, span, only_end):
    start = end - timedelta(days=span - 1)
    args = {"end": end.isoformat()} if only_end else {"start": start.isoformat(), "end": end.isoformat()}
    flt, errors = parse_filters(args, today=date(2031, 1, 1))
    days = (flt.end - flt.start).days + 1
    if only_end:  # no start asked for: the 30 days that end there, no complaint
        assert (flt.start, flt.end, errors) == (end - timedelta(days=29), end, {})
    elif span <= SPAN_LIMIT:
        assert (flt.start, flt.end, errors) == (start, end, {})
    else:
        assert "start" in errors and flt.end == end and days == SPAN_LIMIT


def test_api_usage_defaults_to_this_utc_month_up_to_today(instant, client, org):
    key = issue_key(org, scope="management")
    first = clock.month_start(0)
    metering.write_now(usage_event(org.id, credential="byok", cost="1", at=first))
    metering.write_now(usage_event(org.id, credential="byok", cost="2", at=first - LAST))
    metering.write_now(usage_event(org.id, credential="byok", cost="4"))  # stamped now
    body = client.get("/api/v1/usage", query_string={"group_by": "day"},
                      headers={"Authorization": f"Bearer {key}"}).json
    assert (body["start"], body["end"]) == (first.date().isoformat(), clock.today().isoformat())
    by_day: dict[str, Decimal] = {}
    for row in body["data"]:
        by_day[row["day"]] = Decimal(row["cost"])
    expected: dict[str, Decimal] = {}
    for at, cost in ((first, 1), (clock.now(), 4)):
        expected[at.date().isoformat()] = expected.get(at.date().isoformat(), Decimal(0)) + cost
    assert by_day == expected
