"""Overview and usage pages, from the daily summary (the fine rollups when a key, label or reason is asked for)."""
from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from flask import Blueprint, abort, current_app, render_template, request
from sqlalchemy import select

from app import csvfile, db, params
from app.billing import ledger
from app.dashboard import rollups
from app.dashboard.access import EVERYONE, org_id, roles
from app.dashboard.charts import axis_label_for, stacked_bars
from app.dashboard.formatting import percent, usd
from app.gateway.policy import FallbackPolicy
from app.models import ApiKey, Organization
from app.types import utcnow
from app.validation import text_problem

overview_bp = Blueprint("overview", __name__)
bp = Blueprint("usage", __name__, url_prefix="/usage")

CHART_DAYS = 30
DEFAULT_DAYS = 30  # the usage page's range when none is asked for
MAX_SPAN_DAYS = 366  # days in a range, both ends included (as /api/v1/usage counts them)
# Fewer BYOK requests than this in the alert window is noise, not a spike.
ALERT_MIN_REQUESTS = 10
GROUP_LABELS = {"day": "Day", "provider": "Provider", "model": "Model", "credential": "Credential",
                "key": "Gateway key", "label": "BYOK label", "fallback_reason": "Fallback reason"}
CHART_METRICS = ("spend", "requests", "tokens")
# Text filters and the width of the column each matches: a longer value cannot match, so it is a mistake to say.
TEXT_FILTERS = tuple((name, column.type.length) for name, column in (
    ("provider", rollups.R.provider), ("model", rollups.R.model), ("label", rollups.R.byok_label)))


@overview_bp.get("/", endpoint="index")
@roles(*EVERYONE)
def overview():
    session = db.session()
    oid = org_id()
    today = utcnow().date()
    period = f"{today:%Y-%m}"
    S = rollups.S
    # Two scans of the daily summary: the month by model (totals and top models), and 30 days by day.
    by_model = rollups.grouped(session, [S.org_id == oid, S.billing_period == period], "model", S)
    month = rollups.Totals.sum(by_model)
    start = today - timedelta(days=CHART_DAYS - 1)
    daily = rollups.daily_totals(session, [S.org_id == oid, S.day >= start, S.day <= today], S)
    chart = stacked_bars(*rollups.chart_series(daily, start, today), axis_label_for("spend"))
    recent = rollups.Totals.sum([t for (day, _), t in daily.items() if day >= today - timedelta(days=1)])
    balance, reserved = ledger.balance_of(session, oid)
    return render_template("usage/overview.html", month=month, period=period, chart=chart,
                           top_models=rollups.sort_rows(by_model, "spend", True)[:5], balance=balance,
                           reserved=reserved, alerts=_alerts(session, oid, recent, balance))


def _alerts(session, oid: int, recent: rollups.Totals, balance: Decimal) -> list[dict[str, str]]:
    """Fallback spike over today and yesterday (UTC), and low credits."""
    org = session.get(Organization, oid)
    policy = FallbackPolicy.from_json(org.fallback_policy, bool(current_app.config["PLATFORM_FALLBACK_DEFAULT"]))
    alerts = []
    rate = recent.fallback_rate
    if rate is not None and recent.byok_attempted >= ALERT_MIN_REQUESTS and rate > policy.alert_threshold:
        alerts.append({"kind": "fallback", "title": "Fallback rate spike",
                       "text": f"{percent(rate)} of BYOK requests since yesterday (UTC) fell back to shared credits "
                               f"(alert threshold {percent(policy.alert_threshold)}); they cost "
                               f"{usd(recent.fallback_charged)}. A BYOK key may have been revoked or rate-limited."})
    threshold = org.low_credit_threshold if org.low_credit_threshold is not None \
        else current_app.config["LOW_CREDIT_THRESHOLD"]
    if balance < Decimal(threshold):
        alerts.append({"kind": "credits", "title": "Low credits",
                       "text": f"The credit balance is {usd(balance)}, below {usd(Decimal(threshold))}. "
                               "Fallback and shared-pool requests are refused when credits run out."})
    return alerts


# -- usage ---------------------------------------------------------------------------
def parse_filters(args, today: date) -> tuple[rollups.UsageFilter, dict[str, str]]:
    """The filter from the query string, and a message per malformed field (which then keeps its default)."""
    errors: dict[str, str] = {}
    given: dict[str, date] = {}
    for name in ("start", "end"):
        raw = (args.get(name) or "").strip()
        if not raw:
            continue
        value = params.day(raw)
        if value is None:
            errors[name] = f"'{raw[:20]}' is not a date (YYYY-MM-DD)"
        else:
            given[name] = value
    # Without a start, the 30 days that end on the end date (today by default), both days included.
    end = given.get("end", today)
    start = given.get("start", end - timedelta(days=DEFAULT_DAYS - 1))
    if start > end:
        errors["end"] = "the end date is before the start date"
        start, end = end, start
    if (end - start).days >= MAX_SPAN_DAYS:
        errors["start"] = f"a range can span at most {MAX_SPAN_DAYS} days"
        start = end - timedelta(days=MAX_SPAN_DAYS - 1)
    key_raw = (args.get("key") or "").strip()
    key_id = params.row_id(key_raw) if key_raw else None
    if key_raw and key_id is None:
        errors["key"] = "unknown gateway key"
    credential = (args.get("credential") or "").strip()
    if credential and credential not in ("byok", "shared"):
        errors["credential"] = "credential must be byok or shared"
        credential = ""
    text = {name: _text_filter(args, name, width, errors) for name, width in TEXT_FILTERS}
    return rollups.UsageFilter(start=start, end=end, credential=credential, api_key_id=key_id, **text), errors


def _text_filter(args, name: str, width: int, errors: dict[str, str]) -> str:
    raw = (args.get(name) or "").strip()
    problem = text_problem(raw, width)
    if problem:
        errors[name] = f"{name} {problem}"
        return ""
    return raw


def _choice(args, name: str, allowed, default: str, errors: dict[str, str]) -> str:
    value = args.get(name) or default
    if value in allowed:
        return value
    errors[name] = f"{name} must be one of: {', '.join(allowed)}"
    return default


def usage_table(args) -> dict[str, Any]:
    """Everything the usage page and its CSV show, from one reading of the query string."""
    session = db.session()
    oid = org_id()
    flt, errors = parse_filters(args, utcnow().date())
    group = _choice(args, "group", rollups.DIMENSIONS, "model", errors)
    sort = _choice(args, "sort", ("name",) + rollups.METRICS, "spend", errors)
    order = _choice(args, "order", ("asc", "desc"), "desc", errors)
    table = flt.source(group)
    rows = rollups.sort_rows(rollups.grouped(session, flt.clauses(oid, table), group, table), sort, order == "desc")
    keys = {k.id: k for k in session.scalars(select(ApiKey).where(ApiKey.org_id == oid).order_by(ApiKey.name))}
    return {"filter": flt, "errors": errors, "group": group, "sort": sort, "order": order, "rows": rows,
            "total": rollups.Totals.sum(rows), "keys": keys}


def row_name(group: str, key: tuple, keys: dict[int, ApiKey]) -> str:
    if group == "key":
        k = keys.get(key[0])
        return f"{k.name or 'unnamed'} ({k.prefix}…)" if k else ("no key" if not key[0] else f"key #{key[0]}")
    if group == "model":
        return f"{key[0]}/{key[1]}"
    if group == "fallback_reason":
        return key[0] or "no fallback"
    if group == "label":
        return key[0] or "(no label)"
    return str(key[0])


@bp.get("")
@roles(*EVERYONE)
def index():
    data = usage_table(request.args)
    flt = data["filter"]
    metric = _choice(request.args, "chart", CHART_METRICS, "spend", data["errors"])
    chart_table = flt.source()  # the chart is by day whatever the grouping: only the filters matter
    days, series = rollups.daily_by_credential(db.session(), flt.clauses(org_id(), chart_table), flt.start,
                                               flt.end, metric, chart_table)
    options = rollups.filter_options(db.session(), org_id(), flt.start, flt.end)
    options["key"] = [(k.id, f"{k.name or 'unnamed'} ({k.prefix}…)") for k in data["keys"].values()]
    return render_template("usage/usage.html", **data, options=options, metric=metric,
                           chart=stacked_bars(days, series, axis_label_for(metric)), row_name=row_name,
                           group_labels=GROUP_LABELS, chart_metrics=CHART_METRICS), 400 if data["errors"] else 200


CSV_COLUMNS = ("requests", "errors", "fallbacks", "prompt_tokens", "completion_tokens", "avg_latency_ms",
               "byok_cost", "shared_charged", "spend", "unpriced_requests")
MICRO = Decimal("0.000001")


@bp.get("/export.csv")
@roles(*EVERYONE)
def export_csv():
    data = usage_table(request.args)
    if data["errors"]:
        # A download cannot show the form's messages, and a file of other rows than asked would mislead.
        abort(400, description="; ".join(data["errors"].values()))
    rows = ([row_name(data["group"], t.key, data["keys"]), *[_csv_value(t.value(c)) for c in CSV_COLUMNS],
             None if t.error_rate is None else t.error_rate.quantize(Decimal("0.0001"))] for t in data["rows"])
    flt = data["filter"]
    text = csvfile.to_text([data["group"], *CSV_COLUMNS, "error_rate"], rows)
    return csvfile.attachment(text, f"usage_{data['group']}_{flt.start}_{flt.end}.csv")


def _csv_value(value: Any) -> Any:
    return value.quantize(MICRO) if isinstance(value, Decimal) else value
