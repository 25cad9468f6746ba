"""The JSON management API under /api/v1 (gateway keys of scope `management`, own organization only)."""
from __future__ import annotations

from datetime import date
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, request
from sqlalchemy import func, select

from app import csvfile, db, params
from app.billing import invoicing
from app.billing.invoice_export import money_text
from app.billing.invoicing import money_sum
from app.billing.money import ZERO
from app.billing.periods import current_period
from app.gateway.auth import Caller, authenticate
from app.gateway.errors import InvalidRequest, NotFound
from app.models import ApiKey, CreditAccount, CreditEntry, UsageRollup
from app.types import utcnow

bp = Blueprint("api", __name__, url_prefix="/api/v1")

GROUP_FIELDS = {
    "day": UsageRollup.day, "provider": UsageRollup.provider, "model": UsageRollup.model,
    "credential": UsageRollup.credential, "key": UsageRollup.api_key_id, "label": UsageRollup.byok_label,
}
SUMS = ("requests", "errors", "fallbacks", "unpriced_requests", "prompt_tokens", "completion_tokens",
        "cached_tokens", "cache_write_tokens", "reasoning_tokens", "cost", "charged")
MAX_SPAN_DAYS = 366


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status=status, mimetype="application/json")


def _caller() -> Caller:
    return authenticate(request.headers.get("Authorization"), "management", current_app.config)


def _day_param(name: str, default: date) -> date:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be a date YYYY-MM-DD, got '{raw[:40]}'", param=name) from None


def _group_by() -> list[str]:
    raw = request.args.get("group_by", "day")
    fields = [f.strip() for f in raw.split(",") if f.strip()]
    for name in fields:
        if name not in GROUP_FIELDS:
            raise InvalidRequest(f"'group_by' has unknown field '{name[:40]}'; allowed: {', '.join(GROUP_FIELDS)}",
                                 param="group_by")
    return list(dict.fromkeys(fields))


@bp.get("/usage")
def usage() -> Response:
    caller = _caller()
    today = utcnow().date()
    end = _day_param("end", today)
    start = _day_param("start", end.replace(day=1))
    if end < start:
        raise InvalidRequest("'end' is before 'start'", param="end")
    if (end - start).days >= MAX_SPAN_DAYS:
        raise InvalidRequest(f"the range from 'start' to 'end' is longer than {MAX_SPAN_DAYS} days", param="start")
    fields = _group_by()
    r = UsageRollup
    columns = [GROUP_FIELDS[f] for f in fields]
    stmt = (select(*columns, *(func.sum(getattr(r, s)) for s in SUMS))
            .where(r.org_id == caller.org_id, r.day >= start, r.day <= end))
    if columns:
        stmt = stmt.group_by(*columns).order_by(*columns)
    rows = db.session.execute(stmt).all()
    keys = _key_names(caller.org_id) if "key" in fields else {}
    data = [_usage_row(fields, row, keys) for row in rows if row[len(fields)]]
    return _json({"object": "list", "start": start.isoformat(), "end": end.isoformat(), "group_by": fields,
                  "data": data})


def _usage_row(fields: list[str], row, keys: dict[int, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(fields, row):
        if name == "day":
            out["day"] = value.isoformat()
        elif name == "key":
            out["key_id"] = value or None
            out["key_prefix"] = keys.get(value)
        else:
            out[name] = value
    for name, value in zip(SUMS, row[len(fields):]):
        out[name] = money_text(money_sum(value)) if name in ("cost", "charged") else int(value or 0)
    return out


def _key_names(org_id: int) -> dict[int, str]:
    return dict(db.session.execute(select(ApiKey.id, ApiKey.prefix).where(ApiKey.org_id == org_id)).all())


@bp.get("/credits")
def credits() -> Response:
    caller = _caller()
    limit = _int_param("limit", 50, 1, 500)
    before = _int_param("before", None, 1, params.MAX_ROW_ID)
    account = db.session.get(CreditAccount, caller.org_id)
    stmt = select(CreditEntry).where(CreditEntry.org_id == caller.org_id).order_by(CreditEntry.id.desc())
    if before is not None:
        stmt = stmt.where(CreditEntry.id < before)
    entries = list(db.session.scalars(stmt.limit(limit + 1)))
    more = len(entries) > limit
    entries = entries[:limit]
    return _json({
        "object": "credits",
        "balance": money_text(account.balance if account else ZERO),
        "reserved": money_text(account.reserved if account else ZERO),
        "entries": [{"id": e.id, "kind": e.kind, "amount": money_text(e.amount), "request_id": e.request_id,
                     "note": e.note, "created_at": e.created_at.isoformat(),
                     "balance_after": money_text(e.balance_after)} for e in entries],
        "next_before": entries[-1].id if more and entries else None,
    })


def _int_param(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    value = params.bounded_int(raw, low, high)
    if value is None:
        raise InvalidRequest(f"'{name}' must be a whole number between {low} and {high}", param=name)
    return value


@bp.get("/invoices")
def invoices() -> Response:
    caller = _caller()
    data = [{"period": s.period, "status": s.status, "number": s.number, "total_spend": money_text(s.total_spend),
             "finalized_at": s.finalized_at.isoformat() if s.finalized_at else None}
            for s in invoicing.list_invoices(db.session(), caller.org_id)]
    return _json({"object": "list", "data": data})


@bp.get("/invoices/<ref>")
def invoice(ref: str) -> Response:
    caller = _caller()
    as_csv = ref.endswith(".csv")
    ref = ref[:-4] if as_csv else ref
    if params.invoice_number(ref):
        view = invoicing.invoice_view_by_number(db.session(), caller.org_id, ref)
        if view is None:
            raise NotFound(f"no invoice numbered '{ref}' in this organization")
    else:
        if params.period(ref) is None:
            raise InvalidRequest(f"'{ref[:20]}' is not a period YYYY-MM (from 2000-01) or an invoice number "
                                 "KW-YYYY-NNNNNN", param="period")
        if ref > current_period():
            raise NotFound(f"no invoice for {ref}: the period has not started", param="period")
        view = invoicing.invoice_view(db.session(), caller.org_id, ref)
    if as_csv:
        return csvfile.attachment(invoicing.to_csv(view), f"keyway-{view.number or f'draft-{view.period}'}.csv")
    return _json(invoicing.to_json(view))
