"""Admin › Fallback policy and Admin › Audit log."""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from sqlalchemy import select

from app import db
from app.dashboard.access import ADMIN, before_id, audit, org_id, roles
from app.gateway import auth as gateway_auth
from app.gateway.policy import DEFAULT_TRIGGERS, TRIGGERS, FallbackPolicy
from app.gateway.providers import REGISTRY
from app.models import AuditLog, Organization, User

bp = Blueprint("admin", __name__, url_prefix="/admin")

TRIGGER_LABELS = {
    "rate_limit": "Rate limit / quota (429)",
    "overload": "Overloaded or server error (529, 5xx)",
    "timeout": "Timeout, connection error, malformed response",
    "auth": "Authentication failed (401/403: revoked or wrong key)",
    "budget": "Provider budget exhausted (402)",
}
TRISTATE = {"": None, "on": True, "off": False}
AUDIT_PAGE = 100


def _current_policy(org: Organization) -> FallbackPolicy:
    return FallbackPolicy.from_json(org.fallback_policy, bool(current_app.config["PLATFORM_FALLBACK_DEFAULT"]))


def parse_policy(form) -> tuple[dict[str, Any], dict[str, str]]:
    """The policy JSON (FallbackPolicy.to_json shape) from the form, and a message per bad field."""
    errors: dict[str, str] = {}
    providers: dict[str, dict[str, Any]] = {}
    for provider in REGISTRY:
        override: dict[str, Any] = {}
        for name in ("enabled", *TRIGGERS):
            raw = form.get(f"p_{provider}_{name}", "")
            if raw not in TRISTATE:
                errors[f"p_{provider}_{name}"] = "choose default, on or off"
                continue
            if TRISTATE[raw] is not None:
                if name == "enabled":
                    override["enabled"] = TRISTATE[raw]
                else:
                    override.setdefault("triggers", {})[name] = TRISTATE[raw]
        if override:
            providers[provider] = override
    cap_raw = (form.get("monthly_cap") or "").strip().replace(",", "").lstrip("$")
    cap = None
    if cap_raw:
        try:
            cap = Decimal(cap_raw)
            if not cap.is_finite() or cap < 0 or cap != cap.quantize(Decimal("0.01")):
                raise InvalidOperation
        except InvalidOperation:
            errors["monthly_cap"] = "Enter an amount in dollars, zero or more, with at most 2 decimals — or leave it empty for no cap."
            cap = None
    threshold = Decimal("0.20")
    raw = (form.get("alert_threshold") or "").strip().rstrip("%")
    try:
        percent = Decimal(raw)
        if not percent.is_finite() or percent <= 0 or percent > 100:
            raise InvalidOperation
        threshold = percent / 100
    except InvalidOperation:
        errors["alert_threshold"] = "Enter a percentage above 0 and at most 100."
    policy = FallbackPolicy(
        enabled=form.get("enabled") == "on",
        triggers={name: form.get(f"trigger_{name}") == "on" for name in TRIGGERS},
        providers=providers, monthly_cap=cap, alert_threshold=threshold,
    )
    return policy.to_json(), errors


def _policy_page(policy: dict[str, Any], errors: dict[str, str], status: int = 200):
    return render_template("admin/policy.html", policy=policy, errors=errors, trigger_labels=TRIGGER_LABELS,
                           providers=list(REGISTRY), defaults=DEFAULT_TRIGGERS,
                           cache_seconds=current_app.config["POLICY_CACHE_SECONDS"]), status


@bp.get("/policy")
@roles(*ADMIN)
def policy():
    org = db.session.get(Organization, org_id())
    return _policy_page(_current_policy(org).to_json(), {})


@bp.post("/policy")
@roles(*ADMIN)
def save_policy():
    session = db.session()
    org = session.get(Organization, org_id())
    new, errors = parse_policy(request.form)
    if errors:
        return _policy_page(new, errors, 400)
    old = _current_policy(org).to_json()
    if FallbackPolicy.from_json(new) != FallbackPolicy.from_json(old):
        org.fallback_policy = new
        audit(session, "policy.update", _policy_summary(old, new), {"before": old, "after": new})
        session.commit()
        # Other workers pick the change up when their cache entry expires (POLICY_CACHE_SECONDS).
        gateway_auth.forget_cache()
        flash("Fallback policy saved. New requests use it within a few seconds on every worker.", "success")
    else:
        flash("No change to save.", "info")
    return redirect(url_for("admin.policy"))


def _policy_summary(old: dict[str, Any], new: dict[str, Any]) -> str:
    before, after = FallbackPolicy.from_json(old), FallbackPolicy.from_json(new)
    # Compared as policies, not JSON: "0.2" and "0.20" are the same threshold.
    changed = [k for k in new if getattr(before, k, None) != getattr(after, k, None)]
    parts = []
    if "enabled" in changed:
        parts.append(f"fallback {'on' if new['enabled'] else 'off'}")
    parts += [f"{k} changed" for k in changed if k != "enabled"]
    return "fallback policy: " + ", ".join(parts)


@bp.get("/audit")
@roles(*ADMIN)
def audit_log():
    where = [AuditLog.org_id == org_id()]
    before = before_id(request.args)
    if before is not None:
        where.append(AuditLog.id < before)
    session = db.session()
    rows = list(session.scalars(select(AuditLog).where(*where).order_by(AuditLog.id.desc()).limit(AUDIT_PAGE + 1)))
    more = len(rows) > AUDIT_PAGE
    rows = rows[:AUDIT_PAGE]
    users = {u.id: u.email for u in session.scalars(select(User).where(User.org_id == org_id()))}
    return render_template("admin/audit.html", rows=rows, users=users,
                           next_before=rows[-1].id if more else None)
