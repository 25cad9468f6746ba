"""The /v1/chat/completions happy paths: shapes, headers, usage extras, recording."""
from __future__ import annotations

from decimal import Decimal

import orjson

from app.billing.ledger import balance_of
from app import db
from tests.factories import grant
from tests.helpers import byok, chat, only_record, sse_payloads


def test_shared_pool_completion_has_openai_shape_and_gateway_headers(client, org, gateway_key, fake_openai):
    grant(org, "10")
    response = chat(client, gateway_key)
    assert response.status_code == 200
    body = response.get_json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == fake_openai.reply
    assert body["id"] == response.headers["X-Request-Id"]
    assert body["id"] != "chatcmpl-fake123"  # the gateway's id, never the provider's
    assert response.headers["X-Gateway-Provider"] == "openai"
    assert response.headers["X-Gateway-Credential"] == "shared"
    assert response.headers["X-Gateway-Fallback"] == "0"
    assert response.headers["X-Gateway-Attempts"] == "1"
    usage = body["usage"]
    assert usage["is_byok"] is False
    assert Decimal(str(usage["cost"])) > 0
    assert Decimal(str(usage["cost"])) == Decimal(str(usage["cost_details"]["upstream_inference_cost"]))
    sent = fake_openai.received[-1]
    assert sent.headers["authorization"] == "Bearer sk-shared-pool-key-0001"
    assert sent.json()["model"] == "gpt-4o-mini"


def test_byok_request_uses_callers_key_and_costs_no_credits(client, org, gateway_key, fake_openai):
    response = chat(client, gateway_key, byok_conf=byok("sk-caller-own-key", label="team-a"))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["X-Gateway-Credential"] == "byok"
    usage = response.get_json()["usage"]
    assert usage["is_byok"] is True and usage["cost"] == 0
    assert usage["cost_details"]["upstream_inference_cost"] > 0
    sent = fake_openai.received[-1]
    assert sent.headers["authorization"] == "Bearer sk-caller-own-key"
    assert "byok_conf" not in sent.json()
    record = only_record()
    assert (record.credential, record.byok_label, record.charged) == ("byok", "team-a", Decimal(0))
    assert record.cost == Decimal(str(usage["cost_details"]["upstream_inference_cost"]))


def test_usage_record_keeps_tokens_cost_and_price_version(client, org, gateway_key, fake_openai):
    grant(org, "10")
    response = chat(client, gateway_key)
    usage = response.get_json()["usage"]
    record = only_record()
    assert record.request_id == response.headers["X-Request-Id"]
    assert (record.prompt_tokens, record.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert record.tokens_source == "reported"
    assert record.cost_status == "priced" and record.price_id is not None
    assert record.charged == record.cost
    assert [a.outcome for a in record.attempts] == ["ok"]
    balance, reserved = balance_of(db.session(), org.id)
    assert balance == Decimal("10") - record.charged and reserved == 0


def test_stream_forwards_chunks_and_usage_only_when_asked(client, gateway_key, fake_openai):
    plain = chat(client, gateway_key, stream=True, byok_conf=byok("sk-stream"))
    assert plain.status_code == 200
    assert plain.mimetype == "text/event-stream"
    events = sse_payloads(plain.get_data(as_text=True))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == fake_openai.reply
    assert not any(c.get("usage") for c in chunks)
    # The gateway asked upstream for usage regardless.
    assert fake_openai.received[-1].json()["stream_options"] == {"include_usage": True}

    with_usage = chat(client, gateway_key, stream=True, stream_options={"include_usage": True},
                      byok_conf=byok("sk-stream"))
    events = sse_payloads(with_usage.get_data(as_text=True))
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["is_byok"] is True
    assert usage_chunk["usage"]["completion_tokens"] > 0


def test_stream_is_recorded_once_with_time_to_first_token(client, gateway_key, fake_openai):
    response = chat(client, gateway_key, stream=True, byok_conf=byok("sk-stream"))
    response.get_data()
    record = only_record()
    assert record.stream is True and record.status == "ok"
    assert record.ttft_ms is not None and record.ttft_ms <= record.latency_ms
    assert record.tokens_source == "reported" and record.completion_tokens > 0


def test_abandoned_stream_is_recorded_with_what_was_received(client, gateway_key, fake_openai):
    response = chat(client, gateway_key, stream=True, byok_conf=byok("sk-abandon"))
    stream = response.response
    first = next(iter(stream))
    assert first.startswith(b"data: ")
    response.close()  # the client goes away after the first chunk
    record = only_record()
    assert record.http_status == 499 and record.error_class == "client_closed"
    assert record.tokens_source == "estimated"
    assert record.completion_tokens >= 0 and record.prompt_tokens > 0


def test_bare_model_resolves_through_byok_provider(client, gateway_key, fake_openai):
    response = chat(client, gateway_key, model="my-finetune", byok_conf=byok("sk-x", provider="mistral"))
    assert response.status_code == 200
    assert response.headers["X-Gateway-Provider"] == "mistral"
    assert fake_openai.received[-1].json()["model"] == "my-finetune"
    record = only_record()
    assert record.cost is None and record.cost_status == "unpriced"  # never shown as $0


def test_bare_catalog_model_goes_to_its_provider(client, org, gateway_key, fake_openai):
    grant(org, "5")
    response = chat(client, gateway_key, model="gpt-4o-mini")
    assert response.status_code == 200
    assert response.headers["X-Gateway-Provider"] == "openai"


def test_azure_uses_deployment_url_and_api_key_header(client, gateway_key, fake_azure):
    conf = {"provider": "azure", "credentials": {"api_key": "azure-key-123", "endpoint": "https://myres.openai.azure.com",
                                                 "api_version": "2024-10-21", "deployment": "prod-4o"}}
    response = chat(client, gateway_key, model="gpt-4o", byok_conf=conf)
    assert response.status_code == 200, response.get_data(as_text=True)
    sent = fake_azure.received[-1]
    assert sent.path == "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
    assert sent.headers["api-key"] == "azure-key-123"
    assert "authorization" not in sent.headers
    assert "model" not in sent.json()


def test_azure_endpoint_outside_allow_list_is_rejected(client, gateway_key, fake_azure):
    conf = {"provider": "azure", "credentials": {"api_key": "k", "endpoint": "https://evil.example.com",
                                                 "api_version": "2024-10-21"}}
    response = chat(client, gateway_key, model="gpt-4o", byok_conf=conf)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert "evil.example.com" in error["message"] and "allowed" in error["message"]
    assert fake_azure.received == []


def test_models_lists_catalog_with_prices(client, gateway_key):
    response = client.get("/v1/models", headers={"Authorization": f"Bearer {gateway_key}"})
    assert response.status_code == 200
    models = {m["id"]: m for m in response.get_json()["data"]}
    mini = models["openai/gpt-4o-mini"]
    assert mini["pricing"]["input"] == 0.15 and mini["pricing"]["output"] == 0.6
    assert mini["pricing"]["source"].startswith("https://")


def test_generation_lookup_is_scoped_to_the_organization(client, org, gateway_key, fake_openai):
    from tests.factories import OrganizationFactory, issue_key

    response = chat(client, gateway_key, byok_conf=byok("sk-gen"))
    request_id = response.headers["X-Request-Id"]
    mine = client.get(f"/v1/generation?id={request_id}", headers={"Authorization": f"Bearer {gateway_key}"})
    assert mine.status_code == 200
    data = mine.get_json()["data"]
    assert data["id"] == request_id and data["credential"] == "byok" and len(data["attempts"]) == 1
    other_key = issue_key(OrganizationFactory())
    theirs = client.get(f"/v1/generation?id={request_id}", headers={"Authorization": f"Bearer {other_key}"})
    assert theirs.status_code == 404
    assert theirs.get_json()["error"]["code"] == "not_found"


def test_healthz_answers_when_database_is_reachable(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json()["database"] == "ok"


def test_response_body_is_valid_json_with_exact_decimal_cost(client, org, gateway_key):
    grant(org, "1")
    raw = chat(client, gateway_key).get_data()
    parsed = orjson.loads(raw)
    assert "cost" in parsed["usage"]
    assert b'"cost":0.' in raw  # a plain decimal number, not a string or exponent
