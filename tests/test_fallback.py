"""The fallback policy of DESIGN §2: which BYOK failures move to the shared pool, and when it refuses."""
from __future__ import annotations

from decimal import Decimal

import pytest

from app import db
from app.billing.ledger import balance_of, ledger_sum
from app.models import Organization
from tests.factories import grant
from simulators.server import Fault
from tests.helpers import byok, chat, only_record, sse_payloads

USER_KEY = "sk-user-key-under-test"


def set_policy(org, **policy) -> None:
    with db.session_scope() as session:
        session.get(Organization, org.id).fallback_policy = policy


@pytest.mark.parametrize("fault, reason", [
    (Fault("status", 429, headers={"retry-after": "7"}), "rate_limit"),
    (Fault("status", 529), "overloaded"),
    (Fault("status", 503), "overloaded"),
    (Fault("status", 500), "server_error"),
    (Fault("stall", delay=3.0, after_events=0), "timeout"),
    (Fault("malformed"), "malformed_response"),
    (Fault("hang_headers", delay=0.2), "connection"),
])
def test_byok_failure_falls_back_to_shared_pool(client, org, gateway_key, fake_openai, fault, reason):
    grant(org, "10")
    fake_openai.on_key(USER_KEY, fault)
    response = chat(client, gateway_key, byok_conf=byok(USER_KEY))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["X-Gateway-Credential"] == "shared"
    assert response.headers["X-Gateway-Fallback"] == "1"
    assert response.headers["X-Gateway-Attempts"] == "2"
    record = only_record()
    assert record.fallback and record.fallback_reason == reason
    assert [(a.credential, a.outcome) for a in record.attempts] == [("byok", "failed"), ("shared", "ok")]
    assert record.charged > 0


@pytest.mark.parametrize("fault, status, error_class", [
    (Fault("status", 401), 401, "auth"),
    (Fault("status", 403), 401, "auth"),
    (Fault("status", 402), 402, "budget"),
    (Fault("status", 429, body={"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                                          "param": None, "code": "insufficient_quota"}}), 402, "budget"),
    (Fault("status", 400), 400, "bad_request"),
])
def test_dead_key_and_bad_request_do_not_fall_back(client, org, gateway_key, fake_openai, fault, status, error_class):
    grant(org, "10")
    fake_openai.on_key(USER_KEY, fault)
    response = chat(client, gateway_key, byok_conf=byok(USER_KEY))
    assert response.status_code == status
    error = response.get_json()["error"]
    assert error["code"] == error_class
    assert [a["credential"] for a in error["metadata"]["attempts"]] == ["byok"]
    assert len(fake_openai.received) == 1
    record = only_record()
    assert not record.fallback and record.status == "error" and record.charged == 0
    assert balance_of(db.session(), org.id) == (Decimal("10"), Decimal(0))


def test_request_fallback_false_keeps_callers_rate_limit(client, org, gateway_key, fake_openai):
    grant(org, "10")
    fake_openai.on_key(USER_KEY, Fault("status", 429, headers={"retry-after": "3"}))
    response = chat(client, gateway_key, byok_conf=byok(USER_KEY, fallback=False))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert response.get_json()["error"]["type"] == "rate_limit_error"
    assert len(fake_openai.received) == 1


def test_org_default_off_applies_unless_request_says_otherwise(client, org, gateway_key, fake_openai):
    grant(org, "10")
    set_policy(org, enabled=False)
    fake_openai.on_key(USER_KEY, Fault("status", 429))
    assert chat(client, gateway_key, byok_conf=byok(USER_KEY)).status_code == 429
    overridden = chat(client, gateway_key, byok_conf=byok(USER_KEY, fallback=True))
    assert overridden.status_code == 200 and overridden.headers["X-Gateway-Fallback"] == "1"


def test_admin_may_enable_fallback_on_auth_errors(client, org, gateway_key, fake_openai):
    grant(org, "10")
    set_policy(org, triggers={"auth": True})
    fake_openai.on_key(USER_KEY, Fault("status", 401))
    response = chat(client, gateway_key, byok_conf=byok(USER_KEY))
    assert response.status_code == 200
    assert only_record().fallback_reason == "auth"


def test_per_provider_override_disables_fallback(client, org, gateway_key, fake_openai):
    grant(org, "10")
    set_policy(org, providers={"openai": {"triggers": {"rate_limit": False}}})
    fake_openai.on_key(USER_KEY, Fault("status", 429))
    assert chat(client, gateway_key, byok_conf=byok(USER_KEY)).status_code == 429


def test_bad_request_never_falls_back_even_if_policy_says_so(client, org, gateway_key, fake_openai):
    grant(org, "10")
    set_policy(org, triggers={"rate_limit": True, "overload": True, "timeout": True, "auth": True, "budget": True})
    fake_openai.on_key(USER_KEY, Fault("status", 400))
    assert chat(client, gateway_key, byok_conf=byok(USER_KEY)).status_code == 400
    assert len(fake_openai.received) == 1


def test_priority_array_tries_next_key_before_shared_pool(client, org, gateway_key, fake_openai):
    fake_openai.on_key("sk-first", Fault("status", 429))
    response = chat(client, gateway_key, byok_conf=[byok("sk-first", label="a"), byok("sk-second", label="b")])
    assert response.status_code == 200
    assert response.headers["X-Gateway-Credential"] == "byok"
    assert response.headers["X-Gateway-Fallback"] == "0"
    assert response.headers["X-Gateway-Attempts"] == "2"
    assert [r.headers["authorization"] for r in fake_openai.received] == ["Bearer sk-first", "Bearer sk-second"]


def test_any_entry_with_fallback_false_keeps_array_off_the_shared_pool(client, org, gateway_key, fake_openai):
    grant(org, "10")
    fake_openai.on_key("sk-first", Fault("status", 429))
    fake_openai.on_key("sk-second", Fault("status", 503))
    response = chat(client, gateway_key, byok_conf=[byok("sk-first"), byok("sk-second", fallback=False)])
    assert response.status_code == 503
    assert len(fake_openai.received) == 2


def test_fallback_fails_closed_without_credits(client, org, gateway_key, fake_openai):
    fake_openai.on_key(USER_KEY, Fault("status", 429, headers={"retry-after": "2"}))
    response = chat(client, gateway_key, byok_conf=byok(USER_KEY))
    assert response.status_code == 429  # the original BYOK error
    error = response.get_json()["error"]
    assert error["metadata"]["fallback_refused"] == "insufficient_credits"
    assert len(fake_openai.received) == 1
    assert only_record().fallback_refused == "insufficient_credits"


def test_shared_pool_without_credits_is_402(client, org, gateway_key, fake_openai):
    response = chat(client, gateway_key)
    assert response.status_code == 402
    assert response.get_json()["error"]["code"] == "insufficient_credits"
    assert fake_openai.received == []


def test_byok_success_is_never_blocked_by_zero_credits(client, org, gateway_key, fake_openai):
    assert chat(client, gateway_key, byok_conf=byok(USER_KEY)).status_code == 200


def test_monthly_fallback_cap_refuses_beyond_it(client, org, gateway_key, fake_openai):
    grant(org, "10")
    set_policy(org, monthly_cap="0")
    fake_openai.on_key(USER_KEY, Fault("status", 429))
    response = chat(client, gateway_key, byok_conf=byok(USER_KEY))
    assert response.status_code == 429
    assert response.get_json()["error"]["metadata"]["fallback_refused"] == "fallback_cap_reached"


def test_fallback_is_charged_once_and_ledger_balances(client, org, gateway_key, fake_openai):
    grant(org, "10")
    fake_openai.on_key(USER_KEY, Fault("status", 500))
    response = chat(client, gateway_key, byok_conf=byok(USER_KEY))
    charged = Decimal(str(response.get_json()["usage"]["cost"]))
    session = db.session()
    balance, reserved = balance_of(session, org.id)
    assert reserved == 0
    assert balance == Decimal("10") - charged == ledger_sum(session, org.id)
    assert only_record().charged == charged


def test_stream_falls_back_before_first_byte(client, org, gateway_key, fake_openai):
    grant(org, "10")
    fake_openai.on_key(USER_KEY, Fault("status", 429))
    response = chat(client, gateway_key, stream=True, byok_conf=byok(USER_KEY))
    assert response.status_code == 200
    assert response.headers["X-Gateway-Fallback"] == "1"
    events = sse_payloads(response.get_data(as_text=True))
    assert events[-1] == "[DONE]"


def test_stream_failure_after_first_byte_ends_with_error_event(client, org, gateway_key, fake_openai):
    grant(org, "10")
    fake_openai.on_key(USER_KEY, Fault("reset_mid_stream", after_events=3))
    response = chat(client, gateway_key, stream=True, byok_conf=byok(USER_KEY))
    assert response.status_code == 200  # headers were already sent
    text = response.get_data(as_text=True)
    assert "event: error" in text
    events = sse_payloads(text)
    assert events[-1]["error"]["code"] == "connection"
    assert "[DONE]" not in events
    assert len(fake_openai.received) == 1  # no fallback after the first byte
    record = only_record()
    assert record.status == "error" and record.error_class == "connection" and not record.fallback
    assert record.tokens_source == "estimated"


class TestSharedPoolKeys:
    @pytest.fixture
    def app_config(self, app_config):
        return {**app_config, "GATEWAY_OPENAI_SHARED_API_KEY": "sk-shared-a,sk-shared-b"}

    def test_another_platform_key_is_tried_and_retry_after_honoured(self, client, org, gateway_key, fake_openai):
        grant(org, "10")
        fake_openai.on_key("sk-shared-a", Fault("status", 429, headers={"retry-after": "30"}))
        used = set()
        for _ in range(4):
            response = chat(client, gateway_key)
            assert response.status_code == 200
        used = [r.headers["authorization"] for r in fake_openai.received]
        # key a answers 429 once, then sits out its retry-after: every later call goes to key b
        assert used.count("Bearer sk-shared-a") == 1
        assert used.count("Bearer sk-shared-b") == 4


def test_untranslatable_request_records_no_upstream_attempt(client, gateway_key, fake_openai):
    # Anthropic cannot take n > 1: a 400 from translation, before anything is sent.
    response = chat(client, gateway_key, model="anthropic/claude-sonnet-4-5", n=2,
                    byok_conf={"provider": "anthropic", "credentials": {"api_key": "sk-ant-x"}})
    assert response.status_code == 400
    assert "anthropic" in response.get_json()["error"]["message"]
    record = only_record()
    assert record.attempts == [] and record.http_status == 400


def test_reasoning_effort_raises_the_worst_case_reservation(app):
    from decimal import Decimal

    from app.billing.pricing import price_book
    from app.gateway.policy import FallbackPolicy
    from app.gateway.router import Credits, Router, Trace, plan
    from app.gateway.schema import parse_chat_request

    def worst(**params):
        req = parse_chat_request({"model": "anthropic/claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}],
                                  **params})
        route = plan(req, [], FallbackPolicy())
        credits = Credits(Decimal(0), lambda amount: True, lambda: Decimal(0))
        return Router(req, route, FallbackPolicy(), credits, app.config, Trace())._worst_case()

    assert price_book().lookup("anthropic", "claude-sonnet-4-5") is not None
    assert worst(reasoning_effort="high") > worst()
    assert worst(max_tokens=10, reasoning_effort="high") == worst(max_tokens=10)
