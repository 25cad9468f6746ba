"""What a query or path parameter means, after the edge check made it clean text: ids, integers, days, refs.

Each parser answers None for a value it does not accept, and the caller decides
what that is: a 400 naming the parameter for a filter, a 404 for an id in a
path (an id that cannot exist is not found, and no query runs for it).
"""
from __future__ import annotations

import re
from datetime import date

from app.billing.periods import PeriodError, parse_period

# Integer primary keys are 32-bit on PostgreSQL; a larger number is no row (and overflows SQLite's binding).
MAX_ROW_ID = 2**31 - 1
# The calendar the product can do arithmetic on: a day or a year either side never leaves it.
FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(9998, 12, 31)

# ASCII only: str.isdigit() accepts "²" (which int() refuses) and other scripts' digits.
_DIGITS = re.compile(r"[0-9]{1,10}")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PERIOD = re.compile(r"[0-9]{4}-[0-9]{2}")
INVOICE_NUMBER = re.compile(r"KW-[0-9]{4}-[0-9]{6}")
# Gateway request ids ("gen-" and hex today); anything outside the column's width and alphabet cannot exist.
REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,40}")


def bounded_int(raw: str, low: int, high: int) -> int | None:
    """The integer `raw` spells in ASCII digits, if it lies in [low, high]."""
    if not _DIGITS.fullmatch(raw):
        return None
    value = int(raw)
    return value if low <= value <= high else None


def row_id(raw: str) -> int | None:
    """A primary-key value: 1 up to MAX_ROW_ID."""
    return bounded_int(raw, 1, MAX_ROW_ID)


def day(raw: str) -> date | None:
    """A YYYY-MM-DD day between FIRST_DAY and LAST_DAY."""
    if not _DAY.fullmatch(raw):
        return None
    try:
        value = date.fromisoformat(raw)
    except ValueError:  # 2026-02-30
        return None
    return value if FIRST_DAY <= value <= LAST_DAY else None


DAY_RANGE = f"YYYY-MM-DD, from {FIRST_DAY} to {LAST_DAY}"


def period(raw: str) -> str | None:
    """A billing period YYYY-MM (ASCII digits, a real month, 2000 or later)."""
    if not _PERIOD.fullmatch(raw):
        return None
    try:
        parse_period(raw)
    except PeriodError:
        return None
    return raw


def invoice_number(raw: str) -> str | None:
    return raw if INVOICE_NUMBER.fullmatch(raw) else None


def request_id(raw: str) -> str | None:
    return raw if REQUEST_ID.fullmatch(raw) else None
