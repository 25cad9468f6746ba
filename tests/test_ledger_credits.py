"""The credit ledger: balance = sum of entries >= 0, reservations before shared calls, one charge per request."""
from __future__ import annotations

import json
from decimal import Decimal

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from app import db
from app.billing import ledger
from app.models import CreditEntry, Organization, UsageRecord
from tests.factories import OrganizationFactory, issue_key
from simulators.server import Fault
from tests.test_billing_support import balance, grant

USER_KEY = "sk-user-ledger-test-0001"
AMOUNTS = st.decimals(min_value=Decimal("0.0000000001"), max_value=Decimal("50"), places=10)


def chat(client, key: str, **body):
    payload = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}],
               "max_tokens": 16, **body}
    return client.post("/v1/chat/completions", data=orjson.dumps(payload),
                       headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})


def exact(response) -> dict:
    """The JSON body with numbers as Decimal (the gateway writes money as exact JSON numbers)."""
    return json.loads(response.get_data(), parse_float=Decimal)


def entries(request_id: str) -> list[tuple[str, Decimal]]:
    with db.session_scope() as session:
        return [(e.kind, e.amount) for e in session.scalars(
            select(CreditEntry).where(CreditEntry.request_id == request_id).order_by(CreditEntry.id))]


def stored(request_id: str) -> UsageRecord:
    db.session.remove()
    return db.session.scalar(select(UsageRecord).where(UsageRecord.request_id == request_id))


def check_invariant(org_id: int, open_reservations: Decimal) -> Decimal:
    with db.session_scope() as session:
        held, reserved = balance(org_id)
        assert held == ledger.ledger_sum(session, org_id)
        assert held >= 0 and reserved == open_reservations
        for after in session.scalars(select(CreditEntry.balance_after).where(CreditEntry.org_id == org_id)):
            assert after >= 0
    return held


OPS = st.lists(st.one_of(
    st.tuples(st.just("grant"), AMOUNTS),
    st.tuples(st.just("reserve"), AMOUNTS),
    st.tuples(st.just("settle"), st.integers(0, 4), st.decimals(min_value=0, max_value=60, places=10)),
    st.tuples(st.just("release"), st.integers(0, 4)),
    st.tuples(st.just("adjust"), st.decimals(min_value=-60, max_value=60, places=10)),
), max_size=20)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_any_sequence_keeps_balance_equal_to_entries_and_never_negative(app, ops):
    org = OrganizationFactory()
    with db.session_scope() as session:
        ledger.ensure_account(session, org.id)
    expected, held, n = Decimal(0), [], 0
    for op in ops:
        kind = op[0]
        if kind == "grant":
            grant(org.id, str(op[1]))
            expected += op[1]
        elif kind == "reserve":
            n += 1
            ok = ledger.reserve(org.id, f"req-{n}", op[1])
            assert ok == (op[1] <= expected)
            if ok:
                expected -= op[1]
                held.append((f"req-{n}", op[1]))
        elif kind in ("settle", "release") and held:
            request_id, amount = held.pop(op[1] % len(held))
            actual = op[2] if kind == "settle" else Decimal(0)
            with db.session_scope() as session:
                charged = ledger.settle(session, org.id, request_id, amount, actual)
            assert charged == min(actual, expected + amount)
            expected += amount - charged
        elif kind == "adjust" and op[1] != 0:
            with db.session_scope() as session:
                entry = ledger.adjust(session, org.id, op[1], note="test")
            assert (entry is not None) == (expected + op[1] >= 0)
            if entry is not None:
                expected += op[1]
        assert check_invariant(org.id, sum((a for _, a in held), Decimal(0))) == expected


def test_shared_request_reserves_worst_case_then_settles_actual(client, org, gateway_key):
    grant(org.id, "10")
    response = chat(client, gateway_key)
    assert response.status_code == 200, response.json
    request_id = response.headers["X-Request-Id"]
    record = stored(request_id)
    kinds = entries(request_id)
    assert [k for k, _ in kinds] == ["reservation", "release", "settlement"]
    reserved = -kinds[0][1]
    assert kinds[1][1] == reserved and reserved >= record.cost > 0
    assert kinds[2][1] == -record.charged == -record.cost
    assert exact(response)["usage"]["cost"] == record.charged
    assert balance(org.id) == (Decimal(10) - record.charged, Decimal(0))


def test_markup_applies_to_credits_charged_never_to_byok(client, org, gateway_key):
    with db.session_scope() as session:
        session.get(Organization, org.id).shared_markup_percent = Decimal("12.5")
    grant(org.id, "10")
    shared = stored(chat(client, gateway_key).headers["X-Request-Id"])
    assert shared.charged == (shared.cost * Decimal("1.125")).quantize(Decimal("1e-10"))
    byok = chat(client, gateway_key, byok_conf={"provider": "openai", "credentials": {"api_key": USER_KEY}})
    assert byok.status_code == 200 and exact(byok)["usage"]["cost"] == 0
    record = stored(byok.headers["X-Request-Id"])
    assert record.credential == "byok" and record.charged == 0
    assert exact(byok)["usage"]["cost_details"]["upstream_inference_cost"] == record.cost > 0
    assert entries(record.request_id) == []


def test_fallback_is_charged_once(client, org, gateway_key, fake_openai):
    grant(org.id, "10")
    fake_openai.on_key(USER_KEY, Fault("status", 429))
    response = chat(client, gateway_key, byok_conf={"provider": "openai", "credentials": {"api_key": USER_KEY}})
    assert response.status_code == 200 and response.headers["X-Gateway-Fallback"] == "1"
    record = stored(response.headers["X-Request-Id"])
    assert record.fallback_reason == "rate_limit" and record.credential == "shared"
    kinds = entries(record.request_id)
    assert [k for k, _ in kinds] == ["reservation", "release", "settlement"]
    assert balance(org.id)[0] == Decimal(10) - record.charged


def test_no_credits_gives_402_or_the_byok_error_with_fallback_refused(client, org, gateway_key, fake_openai):
    response = chat(client, gateway_key)
    assert response.status_code == 402 and response.json["error"]["code"] == "insufficient_credits"
    fake_openai.on_key(USER_KEY, Fault("status", 503))
    response = chat(client, gateway_key, byok_conf={"provider": "openai", "credentials": {"api_key": USER_KEY}})
    assert response.status_code == 503
    assert response.json["error"]["metadata"]["fallback_refused"] == "insufficient_credits"
    assert balance(org.id) == (Decimal(0), Decimal(0))


@pytest.mark.parametrize("stream", [False, True])
def test_a_long_answer_cannot_overdraw(client, org, gateway_key, fake_openai, monkeypatch, stream):
    """The provider ignores max_tokens: the charge is capped at what the account holds, never below zero."""
    grant(org.id, "100")
    probe = chat(client, gateway_key, max_tokens=1)
    worst = -entries(probe.headers["X-Request-Id"])[0][1]
    with db.session_scope() as session:
        ledger.adjust(session, org.id, worst - balance(org.id)[0], note="leave exactly one worst case")
    monkeypatch.setattr(fake_openai, "reply", "word " * 400)
    extra = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    response = chat(client, gateway_key, max_tokens=1, **extra)
    assert response.status_code == 200
    _ = response.get_data()
    record = stored(response.headers["X-Request-Id"])
    assert record.cost > worst  # the provider overshot the reservation
    assert record.charged == worst and balance(org.id) == (Decimal(0), Decimal(0))
    refused = chat(client, gateway_key, max_tokens=1, **extra)
    assert refused.status_code == 402


def test_management_key_cannot_spend(client, org):
    key = issue_key(org, scope="management")
    assert chat(client, key).status_code == 403
