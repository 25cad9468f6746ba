"""Billing periods: UTC calendar months written "YYYY-MM"."""
from __future__ import annotations

import re
from datetime import date, datetime, timezone

_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


class PeriodError(ValueError):
    """A malformed period; the message says what was expected."""


def parse_period(text: str) -> tuple[int, int]:
    match = _PERIOD.match(text or "")
    if not match:
        raise PeriodError(f"'{(text or '')[:20]}' is not a month; expected YYYY-MM")
    year, month = int(match.group(1)), int(match.group(2))
    if year < 2000:
        raise PeriodError(f"'{text}' is too far in the past")
    return year, month


def period_of(at: datetime | date) -> str:
    if isinstance(at, datetime):
        at = at.astimezone(timezone.utc)
    return f"{at.year:04d}-{at.month:02d}"


def current_period(now: datetime | None = None) -> str:
    return period_of(now or datetime.now(timezone.utc))


def bounds(period: str) -> tuple[datetime, datetime]:
    """[start, end) of the month in UTC."""
    year, month = parse_period(period)
    start = datetime(year, month, 1, tzinfo=timezone.utc)
    end = datetime(year + 1, 1, 1, tzinfo=timezone.utc) if month == 12 else datetime(year, month + 1, 1, tzinfo=timezone.utc)
    return start, end


def next_period(period: str) -> str:
    year, month = parse_period(period)
    return f"{year + 1:04d}-01" if month == 12 else f"{year:04d}-{month + 1:02d}"
