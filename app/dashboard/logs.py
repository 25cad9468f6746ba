"""The request log: metadata of each gateway request (no prompts, no keys: none are stored)."""
from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

from flask import Blueprint, abort, render_template, request
from sqlalchemy import select, tuple_

from app import db, params
from app.dashboard.access import EVERYONE, org_id, roles
from app.models import ApiKey, UsageRecord
from app.validation import text_problem

bp = Blueprint("logs", __name__, url_prefix="/logs")

PAGE_SIZE = 50
U = UsageRecord
CHOICE_FILTERS = (("status", U.status, ("ok", "error")), ("credential", U.credential, ("byok", "shared")),
                  ("fallback", U.fallback, ("yes", "no")))
# Text filters and the column each matches: a value wider than the column cannot match, so it is a mistake to say.
TEXT_FILTERS = (("provider", U.provider), ("model", U.model), ("label", U.byok_label))


def parse_log_filters(args) -> tuple[list, dict[str, str], dict[str, str]]:
    """WHERE clauses from the query string, the values to echo into the form, and per-field errors."""
    where = [U.org_id == org_id()]
    values: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name, column, allowed in CHOICE_FILTERS:
        raw = (args.get(name) or "").strip()
        if raw and raw not in allowed:
            errors[name] = f"{name} must be one of: {', '.join(allowed)}"
        elif raw:
            where.append(column.is_(raw == "yes") if name == "fallback" else column == raw)
            values[name] = raw
    for name, column in TEXT_FILTERS:
        raw = (args.get(name) or "").strip()
        problem = text_problem(raw, column.type.length)
        if problem:
            errors[name] = f"{name} {problem}"
        elif raw:
            where.append(column == raw)
            values[name] = raw
    key = (args.get("key") or "").strip()
    if key:
        if params.row_id(key) is None:
            errors["key"] = "unknown gateway key"
        else:
            where.append(U.api_key_id == int(key))
            values["key"] = key
    _date_filters(args, where, values, errors)
    return where, values, errors


def _date_filters(args, where: list, values: dict[str, str], errors: dict[str, str]) -> None:
    for name in ("start", "end"):
        raw = (args.get(name) or "").strip()
        if not raw:
            continue
        day = params.day(raw)
        if day is None:
            errors[name] = f"'{raw[:20]}' is not a date ({params.DAY_RANGE})"
            continue
        values[name] = raw
        moment = datetime.combine(day, time.min, tzinfo=timezone.utc)
        where.append(U.created_at >= moment if name == "start" else U.created_at < moment + timedelta(days=1))


def encode_cursor(record: UsageRecord) -> str:
    return f"{record.created_at.isoformat()}~{record.id}"


def decode_cursor(raw: str) -> tuple[datetime, int] | None:
    stamp, _, ident = raw.partition("~")
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if params.row_id(ident) is None or moment.tzinfo is None:
        return None
    return moment, int(ident)


@bp.get("")
@roles(*EVERYONE)
def index():
    where, values, errors = parse_log_filters(request.args)
    cursor_raw = request.args.get("before") or ""
    if cursor_raw:
        cursor = decode_cursor(cursor_raw)
        if cursor is None:
            errors["before"] = "the page link is malformed; showing the newest requests"
        else:
            # Keyset pagination: (created_at, id) strictly older than the last row shown.
            where.append(tuple_(U.created_at, U.id) < tuple_(*cursor))
    session = db.session()
    records = list(session.scalars(select(U).where(*where).order_by(U.created_at.desc(), U.id.desc())
                                   .limit(PAGE_SIZE + 1)))
    more = len(records) > PAGE_SIZE
    records = records[:PAGE_SIZE]
    keys = {k.id: k for k in session.scalars(select(ApiKey).where(ApiKey.org_id == org_id()))}
    next_cursor = encode_cursor(records[-1]) if more else None
    return render_template("logs/index.html", records=records, values=values, errors=errors, keys=keys,
                           next_cursor=next_cursor, first_page=not cursor_raw,
                           key_options=[(str(k.id), f"{k.name or 'unnamed'} ({k.prefix}…)") for k in keys.values()]
                           ), 400 if errors else 200


@bp.get("/<request_id>")
@roles(*EVERYONE)
def detail(request_id: str):
    if params.request_id(request_id) is None:
        abort(404)
    record = db.session.scalar(select(U).where(U.request_id == request_id, U.org_id == org_id()))
    if record is None:
        abort(404)
    key = db.session.get(ApiKey, record.api_key_id) if record.api_key_id else None
    return render_template("logs/detail.html", r=record, key=key)
