"""The tests' clock: no test depends on the day the suite runs.

conftest.py's autouse `_clock` fixture freezes time for every test (time-machine):
at NOON, ticking, unless the test takes the `instant` fixture, which runs it once
at each instant of INSTANTS with the clock stopped. The helpers below read only
that frozen clock and refuse to run without it.

time-machine reaches only this process. Tests whose other side runs elsewhere (a
`manage.py` subprocess, Chromium) are marked `real_clock`: they pass dates
explicitly or read what the server stored, and never call these helpers.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import time_machine

UTC = timezone.utc
# A Wednesday in mid-month, at midday: a test that ticks a few seconds never crosses a day.
NOON = datetime(2027, 6, 16, 12, 0, 0, tzinfo=UTC)
INSTANTS = {
    "first-second-of-march": datetime(2027, 3, 1, 0, 0, 0, tzinfo=UTC),  # after a 28-day February
    "last-instant-of-year": datetime(2027, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    "new-year": datetime(2028, 1, 1, 0, 0, 0, tzinfo=UTC),
    "leap-day": datetime(2028, 2, 29, 12, 0, 0, tzinfo=UTC),
}


def now() -> datetime:
    """The frozen now (UTC); refuses to read the real calendar."""
    if not time_machine.escape_hatch.is_travelling():
        raise RuntimeError("this test reads the calendar without a frozen clock (see tests/clock.py)")
    return datetime.now(UTC)


def today() -> date:
    return now().date()


def days_ago(n: int, hour: int | None = None) -> datetime:
    """n days before now; with `hour`, that day at hour:00 UTC (then n=0 may lie ahead of now)."""
    moment = now() - timedelta(days=n)
    return moment if hour is None else datetime.combine(moment.date(), time(hour), tzinfo=UTC)


def month_start(months_ago: int) -> datetime:
    """00:00 UTC on the first day of the month `months_ago` before the current one."""
    current = now()
    index = current.year * 12 + current.month - 1 - months_ago
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def period_ago(months_ago: int) -> str:
    return f"{month_start(months_ago):%Y-%m}"


def in_month(months_ago: int, day: int = 3, hour: int = 12) -> datetime:
    """A moment well inside a past month (months_ago >= 1: this month's may still lie ahead)."""
    return month_start(months_ago) + timedelta(days=day - 1, hours=hour)
