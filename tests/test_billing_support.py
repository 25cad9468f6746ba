"""Helpers for the billing, ledger, invoice and management-API tests (no tests here)."""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from app import db
from app.billing import ledger, metering
from app.billing.metering import AttemptEvent, UsageEvent
from app.models import CreditAccount, Price
from tests.clock import month_start, period_ago  # noqa: F401  (the billing tests' date helpers)

_ids = itertools.count(1)


def price_id(provider: str, model: str) -> int:
    return db.session.scalar(select(Price.id).where(Price.provider == provider, Price.model == model))


def usage_event(org_id: int, *, credential: str = "shared", provider: str = "openai", model: str = "gpt-4o-mini",
                cost: str | None = "0.0100", charge: str | None = None, at: datetime | None = None,
                reason: str = "", status: str = "ok", prompt: int = 1000, completion: int = 500, cached: int = 0,
                key_id: int | None = None, label: str = "", reserved: str = "0") -> UsageEvent:
    """One usage event as the gateway would record it; shared events charge their cost unless told."""
    priced = cost is not None
    if charge is None:
        charge = cost if (credential == "shared" and priced) else "0"
    stamp = {} if at is None else {"created_at": at}  # none given: stamped now, as the gateway does
    return UsageEvent(
        request_id=f"gen-test{next(_ids):08d}", org_id=org_id, api_key_id=key_id, provider=provider, model=model,
        credential=credential, status=status, http_status=200 if status == "ok" else 502, **stamp,
        label=label, fallback=bool(reason), fallback_reason=reason,
        prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached,
        cost=Decimal(cost) if priced else None, cost_status="priced" if priced else "unpriced",
        charge=Decimal(charge), reserved=Decimal(reserved),
        attempts=[AttemptEvent(provider, model, credential, label, "ok" if status == "ok" else "failed")],
    )


def record(event: UsageEvent) -> bool:
    with db.session_scope() as session:
        return metering.write(session, event)


def grant(org_id: int, amount: str, at: datetime | None = None) -> None:
    with db.session_scope() as session:
        entry = ledger.grant(session, org_id, Decimal(amount), note="test grant")
        if at is not None:
            entry.created_at = at


def balance(org_id: int) -> tuple[Decimal, Decimal]:
    with db.session_scope() as session:
        account = session.get(CreditAccount, org_id)
        return (account.balance, account.reserved) if account else (Decimal(0), Decimal(0))


def run_cli(app, *args: str) -> Any:
    """Invoke a manage.py command in-process (Flask's CLI runner gives it an app context)."""
    return app.test_cli_runner().invoke(args=list(args))


def days(n: int) -> timedelta:
    return timedelta(days=n)
