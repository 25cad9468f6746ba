"""Money arithmetic: Decimal only, one named rounding rule applied once per invoice line."""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

ZERO = Decimal(0)
CENT = Decimal("0.01")
MILLION = Decimal(1_000_000)
# Costs are carried at this precision until an invoice line rounds them.
COST_QUANTUM = Decimal("0.0000000001")
# The largest single amount a person may type: far above any real grant, far below what Money can store.
MAX_AMOUNT = Decimal("1000000000")


def round_line_half_up(amount: Decimal) -> Decimal:
    """The invoice rounding rule: each line once, to cents, half away from zero."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def parse_amount(text: str) -> Decimal:
    """A positive amount as a finance user types it ("25", "25.00"); ValueError otherwise."""
    try:
        value = Decimal(str(text).strip().replace(",", ""))
    except InvalidOperation:
        raise ValueError(f"'{text}' is not a number") from None
    if not value.is_finite():
        raise ValueError(f"'{text}' is not a number")
    if value <= 0:
        raise ValueError("amount must be greater than zero")
    if value > MAX_AMOUNT:
        raise ValueError(f"amount must be at most {MAX_AMOUNT:,}")
    if value.as_tuple().exponent < -10:  # type: ignore[operator]
        raise ValueError("amount has more than 10 decimal places")
    return value


def format_usd(amount: Decimal | None) -> str:
    if amount is None:
        return "—"
    return f"${amount.quantize(CENT, rounding=ROUND_HALF_UP):,}"
