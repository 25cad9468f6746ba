"""Numbers for people: currency with its symbol, thousands separators, UTC stated."""
from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal

from flask import Flask

CENT = Decimal("0.01")


def usd(amount: Decimal | int | None, precise: bool = False) -> str:
    """$1,234.56; amounts under a cent say so instead of rounding to $0.00; None is 'unpriced'."""
    if amount is None:
        return "unpriced"
    amount = Decimal(amount)
    if precise:
        text = f"{abs(amount).normalize():,f}"
        if "." in text and len(text.split(".")[1]) < 2:
            text += "0"
        elif "." not in text:
            text += ".00"
        return ("-" if amount < 0 else "") + "$" + text
    if amount != 0 and abs(amount) < CENT:
        return "<$0.01" if amount > 0 else "-<$0.01"
    rounded = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    return ("-" if rounded < 0 else "") + f"${abs(rounded):,}"


def number(value: int | Decimal | None) -> str:
    if value is None:
        return "—"
    return f"{int(value):,}"


def compact(value: int | None) -> str:
    """1.2M, 34.5K: for headline cards; tables use exact numbers."""
    if value is None:
        return "—"
    value = int(value)
    for size, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "K")):
        if abs(value) >= size:
            return f"{Decimal(value) / size:.1f}{suffix}"
    return str(value)


def percent(ratio: Decimal | None, places: int = 1) -> str:
    if ratio is None:
        return "—"
    return f"{(Decimal(ratio) * 100).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)}%"


def utc(value: datetime | date | None, seconds: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        value = value.astimezone(timezone.utc)
        return value.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")
    return value.isoformat()


def ratio(part: int, whole: int) -> Decimal | None:
    return None if not whole else Decimal(part) / Decimal(whole)


def pct_input(fraction: str | Decimal | None) -> str:
    """A stored fraction ("0.2") as the percentage a form field shows ("20")."""
    if fraction in (None, ""):
        return ""
    return format((Decimal(str(fraction)) * 100).normalize(), "f")


def register(app: Flask) -> None:
    app.jinja_env.filters.update(usd=usd, number=number, compact=compact, percent=percent, utc=utc,
                                 pct_input=pct_input)
    app.jinja_env.globals.update(ratio=ratio)
