"""Invoice exports: CSV (through app.csvfile, safe to open in a spreadsheet), and JSON with money as strings."""
from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from app import csvfile
from app.billing.money import CENT

if TYPE_CHECKING:
    from app.billing.invoicing import InvoiceView, Line

CSV_COLUMNS = ("section", "provider", "model", "detail", "requests", "input_tokens", "output_tokens",
               "cached_tokens", "amount")


def money_text(value: Decimal | None) -> str | None:
    """Cents when the value is whole cents, else every significant digit; never through float."""
    if value is None:
        return None
    if value == value.quantize(CENT):
        return str(value.quantize(CENT))
    return format(value.normalize(), "f")


def to_csv(view: "InvoiceView") -> str:
    rows: list[tuple] = [
        ("invoice", "", "", f"number={view.number or 'DRAFT'} period={view.period} status={view.status}",
         "", "", "", "", ""),
    ]
    rows += [_line_row("shared", x, "charged to credits") for x in view.shared_lines]
    for group in view.byok_groups:
        rows += [_line_row("byok", x, "billed by provider at list price") for x in group.lines]
        rows.append(("byok_subtotal", group.provider, "", "platform fee 0.00", "", "", "", "",
                     money_text(group.subtotal)))
    rows += [_line_row("fallback", x, x.reason) for x in view.fallback_lines]
    rows += [_line_row("unpriced", x, f"{x.credential}; no price in the catalog") for x in view.unpriced_lines]
    for name in ("shared_total", "byok_total", "total_spend", "opening_balance", "grants", "credits_used",
                 "closing_balance"):
        rows.append(("summary", "", "", name, "", "", "", "", money_text(getattr(view, name))))
    return csvfile.to_text(CSV_COLUMNS, rows)


def _line_row(section: str, x: "Line", detail: str) -> tuple:
    amount = "unpriced" if x.amount is None else money_text(x.amount)
    return (section, x.provider, x.model, detail, x.requests, x.input_tokens, x.output_tokens, x.cached_tokens,
            amount)


def to_json(view: "InvoiceView") -> dict[str, Any]:
    return {
        "object": "invoice", "org_id": view.org_id, "period": view.period, "status": view.status,
        "number": view.number, "currency": view.currency,
        "finalized_at": view.finalized_at.isoformat() if view.finalized_at else None,
        "voided_at": view.voided_at.isoformat() if view.voided_at else None,
        "void_reason": view.void_reason or None,
        "shared": {"lines": [_line_json(x) for x in view.shared_lines], "total": money_text(view.shared_total)},
        "byok": {
            "providers": [{"provider": g.provider, "lines": [_line_json(x) for x in g.lines],
                           "subtotal": money_text(g.subtotal), "platform_fee": money_text(g.platform_fee)}
                          for g in view.byok_groups],
            "total": money_text(view.byok_total),
        },
        "fallback": [{**_line_json(x), "reason": x.reason} for x in view.fallback_lines],
        "unpriced": [{**_line_json(x), "credential": x.credential, "flag": "no price in the catalog"}
                     for x in view.unpriced_lines],
        "summary": {name: money_text(getattr(view, name)) for name in (
            "total_spend", "shared_total", "byok_total", "opening_balance", "grants", "credits_used",
            "closing_balance")},
    }


def _line_json(x: "Line") -> dict[str, Any]:
    return {"provider": x.provider, "model": x.model, "requests": x.requests, "input_tokens": x.input_tokens,
            "output_tokens": x.output_tokens, "cached_tokens": x.cached_tokens, "amount": money_text(x.amount)}
