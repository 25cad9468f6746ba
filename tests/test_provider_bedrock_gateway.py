"""Bedrock end to end: /v1/chat/completions with byok_conf against the fake Bedrock runtime."""
from __future__ import annotations

from typing import Any, Iterator

import openai
import orjson
import pytest
from sqlalchemy import select

from app import db
from app.models import UsageRecord
from tests.factories import grant
from simulators.bedrock import FakeBedrock, aws_fault, stream_exception
from simulators.server import Fault

MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
AKID = "AKIABYOKUSERKEY00001"
SECRET = "byokUserSecret/Key+00000000000000000000001"
TEMP_AKID = "ASIABYOKTEMPORARY001"
TOKEN = "IQoJb3JpZ2luX2VjEByokSessionTokenCanary0000000000000001"
SHARED_AKID = "AKIASHAREDPOOLKEY001"
SHARED_SECRET = "sharedPoolSecret/Key+000000000000000000001"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="session")
def _bedrock_server() -> Iterator[FakeBedrock]:
    fake = FakeBedrock(region="us-east-1").start()
    fake.add_key(AKID, SECRET)
    fake.add_key(TEMP_AKID, SECRET, session_token=TOKEN)
    fake.add_key(SHARED_AKID, SHARED_SECRET)
    yield fake
    fake.stop()


@pytest.fixture
def fake_bedrock(_bedrock_server) -> FakeBedrock:
    _bedrock_server.reset()
    return _bedrock_server


@pytest.fixture
def app_config(app_config, fake_bedrock) -> dict[str, Any]:
    return {**app_config, "GATEWAY_BEDROCK_BASE_URL": fake_bedrock.url,
            "GATEWAY_BEDROCK_SHARED_ACCESS_KEY_ID": SHARED_AKID,
            "GATEWAY_BEDROCK_SHARED_SECRET_ACCESS_KEY": SHARED_SECRET,
            "GATEWAY_BEDROCK_SHARED_REGION": "us-east-1"}


def byok(akid: str = AKID, secret: str = SECRET, **extra: Any) -> dict[str, Any]:
    credentials = {"aws_access_key_id": akid, "aws_secret_access_key": secret, "region": "us-east-1"}
    credentials.update(extra.pop("credentials", {}))
    return {"provider": "bedrock", "credentials": credentials, **extra}


def chat(client, key: str, **body: Any):
    payload = {"model": f"bedrock/{MODEL}", "messages": [{"role": "user", "content": "Say hello"}], **body}
    return client.post("/v1/chat/completions", data=orjson.dumps(payload),
                       headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})


def sse(text: str) -> list[Any]:
    out = []
    for block in text.split("\n\n"):
        data = "\n".join(line[6:] for line in block.split("\n") if line.startswith("data: "))
        if data:
            out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


def only_record() -> UsageRecord:
    db.session.remove()
    found = list(db.session.scalars(select(UsageRecord)))
    assert len(found) == 1
    return found[0]


# -- served by the caller's key -----------------------------------------------------------
def test_byok_completion_is_signed_translated_and_free(client, gateway_key, fake_bedrock):
    response = chat(client, gateway_key, byok_conf=byok(), max_tokens=100)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["choices"][0]["message"]["content"] == fake_bedrock.reply
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["model"] == f"bedrock/{MODEL}"
    assert body["usage"]["is_byok"] is True and body["usage"]["cost"] == 0
    assert body["usage"]["cost_details"]["upstream_inference_cost"] > 0
    assert response.headers["X-Gateway-Provider"] == "bedrock"
    assert response.headers["X-Gateway-Credential"] == "byok"
    sent = fake_bedrock.received[0]
    assert sent.path == "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"
    assert f"Credential={AKID}/" in sent.headers["authorization"]
    assert sent.json()["inferenceConfig"] == {"maxTokens": 100}
    record = only_record()
    assert (record.provider, record.model, record.credential, record.status) == ("bedrock", MODEL, "byok", "ok")
    assert record.prompt_tokens == body["usage"]["prompt_tokens"] and record.charged == 0


def test_temporary_credentials_send_the_session_token(client, gateway_key, fake_bedrock):
    response = chat(client, gateway_key, byok_conf=byok(TEMP_AKID, credentials={"aws_session_token": TOKEN}))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert fake_bedrock.received[0].headers["x-amz-security-token"] == TOKEN


def test_shared_pool_serves_bedrock_without_byok_and_charges_credits(client, org, gateway_key, fake_bedrock):
    grant(org, "10")
    fake_bedrock.cache_read, fake_bedrock.cache_write = 40, 8
    response = chat(client, gateway_key)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["X-Gateway-Credential"] == "shared"
    assert f"Credential={SHARED_AKID}/" in fake_bedrock.received[0].headers["authorization"]
    usage = response.get_json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 40 and usage["cost"] > 0
    record = only_record()
    assert (record.cached_tokens, record.cache_write_tokens) == (40, 8)
    assert record.prompt_tokens >= 48 and record.charged > 0


def test_stream_translates_events_and_reports_usage_when_asked(client, gateway_key, fake_bedrock):
    response = chat(client, gateway_key, byok_conf=byok(), stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200
    events = sse(response.get_data(as_text=True))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == fake_bedrock.reply
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]] \
        == ["stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert fake_bedrock.received[0].path.endswith("/converse-stream")
    record = only_record()
    assert record.stream and record.tokens_source == "reported"


def test_tool_calls_round_trip_streaming_and_not(client, gateway_key, fake_bedrock):
    fake_bedrock.tool_call = {"name": "get_weather", "input": {"city": "Paris"}}
    plain = chat(client, gateway_key, byok_conf=byok(), tools=[WEATHER_TOOL])
    message = plain.get_json()["choices"][0]["message"]
    assert plain.get_json()["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"] == [{"id": "tooluse_fake01", "type": "function",
                                      "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]
    streamed = sse(chat(client, gateway_key, byok_conf=byok(), tools=[WEATHER_TOOL], stream=True).get_data(as_text=True))
    calls = [t for c in streamed[:-1] for t in c["choices"][0]["delta"].get("tool_calls", [])]
    assert {t["index"] for t in calls} == {0}
    assert orjson.loads("".join(t["function"]["arguments"] for t in calls)) == {"city": "Paris"}
    follow_up = chat(client, gateway_key, byok_conf=byok(), tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "Weather in Paris?"}, message,
        {"role": "tool", "tool_call_id": "tooluse_fake01", "content": "18C and sunny"}])
    assert follow_up.status_code == 200, follow_up.get_data(as_text=True)
    assert follow_up.get_json()["choices"][0]["message"]["content"] == fake_bedrock.reply


def test_reasoning_effort_enables_claude_thinking_and_returns_reasoning_content(client, gateway_key, fake_bedrock):
    fake_bedrock.reasoning = "The user greets me; greet back."
    response = chat(client, gateway_key, byok_conf=byok(), reasoning_effort="low", temperature=1)
    assert response.status_code == 200, response.get_data(as_text=True)
    message = response.get_json()["choices"][0]["message"]
    assert message["reasoning_content"] == fake_bedrock.reasoning and message["content"] == fake_bedrock.reply
    sent = fake_bedrock.received[0].json()
    assert sent["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 2048}}
    streamed = sse(chat(client, gateway_key, byok_conf=byok(), reasoning_effort="low", stream=True)
                   .get_data(as_text=True))
    deltas = [c["choices"][0]["delta"] for c in streamed[:-1]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == fake_bedrock.reasoning


def test_unsupported_parameter_is_a_400_before_any_upstream_call(client, gateway_key, fake_bedrock):
    response = chat(client, gateway_key, byok_conf=byok(), response_format={"type": "json_object"})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["param"] == "response_format" and "bedrock" in error["message"]
    assert fake_bedrock.received == []


def test_invalid_region_is_a_400(client, gateway_key, fake_bedrock):
    response = chat(client, gateway_key, byok_conf=byok(credentials={"region": "attacker.example#"}))
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "byok_conf.credentials.region"
    assert fake_bedrock.received == []


# -- fallback ------------------------------------------------------------------------------
@pytest.mark.parametrize("fault, reason", [
    (aws_fault("ThrottlingException", retry_after=2), "rate_limit"),
    (aws_fault("ServiceUnavailableException"), "overloaded"),
    (aws_fault("ModelNotReadyException"), "overloaded"),
    (aws_fault("InternalServerException"), "server_error"),
    (aws_fault("ModelTimeoutException"), "timeout"),
    (Fault("malformed"), "malformed_response"),
])
def test_byok_bedrock_failure_falls_back_to_shared_pool(client, org, gateway_key, fake_bedrock, fault, reason):
    grant(org, "10")
    fake_bedrock.on_key(AKID, fault)
    response = chat(client, gateway_key, byok_conf=byok())
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["X-Gateway-Credential"] == "shared"
    assert response.headers["X-Gateway-Fallback"] == "1"
    record = only_record()
    assert record.fallback and record.fallback_reason == reason
    assert [(a.credential, a.outcome) for a in record.attempts] == [("byok", "failed"), ("shared", "ok")]


@pytest.mark.parametrize("fault, status, error_class", [
    (aws_fault("AccessDeniedException"), 401, "auth"),
    (aws_fault("ExpiredTokenException"), 401, "auth"),
    (aws_fault("UnrecognizedClientException"), 401, "auth"),
    (aws_fault("ValidationException"), 400, "bad_request"),
])
def test_dead_key_and_bad_request_do_not_fall_back(client, org, gateway_key, fake_bedrock, fault, status, error_class):
    grant(org, "10")
    fake_bedrock.on_key(AKID, fault)
    response = chat(client, gateway_key, byok_conf=byok())
    assert response.status_code == status
    error = response.get_json()["error"]
    assert error["code"] == error_class
    assert [a["credential"] for a in error["metadata"]["attempts"]] == ["byok"]
    assert len(fake_bedrock.received) == 1
    assert fault.body["message"] not in response.get_data(as_text=True)
    assert not only_record().fallback


def test_wrong_secret_is_rejected_by_signature_and_does_not_fall_back(client, org, gateway_key, fake_bedrock):
    grant(org, "10")
    response = chat(client, gateway_key, byok_conf=byok(secret="wrong/secret+key000000000000000000000000"))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "auth"
    assert len(fake_bedrock.received) == 1


def test_throttling_exception_event_before_first_chunk_falls_back(client, org, gateway_key, fake_bedrock):
    grant(org, "10")
    fake_bedrock.on_key(AKID, stream_exception("ThrottlingException", after_events=0))
    response = chat(client, gateway_key, byok_conf=byok(), stream=True)
    events = sse(response.get_data(as_text=True))
    assert response.headers["X-Gateway-Fallback"] == "1" and events[-1] == "[DONE]"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in events[:-1]) == fake_bedrock.reply
    assert only_record().fallback_reason == "rate_limit"


@pytest.mark.parametrize("fault, error_class", [
    (stream_exception("InternalServerException", after_events=3), "server_error"),
    (Fault("reset_mid_stream", after_events=3), "connection"),
    (Fault("malformed"), "malformed_response"),
])
def test_failure_after_first_chunk_ends_stream_with_error_event(client, org, gateway_key, fake_bedrock, fault,
                                                                 error_class):
    grant(org, "10")
    fake_bedrock.on_key(AKID, fault)
    text = chat(client, gateway_key, byok_conf=byok(), stream=True).get_data(as_text=True)
    assert "event: error" in text and "[DONE]" not in text
    assert sse(text)[-1]["error"]["code"] == error_class
    record = only_record()
    assert record.status == "error" and record.error_class == error_class and not record.fallback


# -- the same OpenAI SDK code ------------------------------------------------------------------
def test_openai_sdk_works_unchanged_against_bedrock(live_server, gateway_key, fake_bedrock):
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key=gateway_key, max_retries=0)
    extra = {"byok_conf": byok()}
    done = client.chat.completions.create(model=f"bedrock/{MODEL}", messages=[{"role": "user", "content": "Hi"}],
                                          extra_body=extra)
    assert done.choices[0].message.content == fake_bedrock.reply
    stream = client.chat.completions.create(model=f"bedrock/{MODEL}", messages=[{"role": "user", "content": "Hi"}],
                                            stream=True, extra_body=extra)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == fake_bedrock.reply
    fake_bedrock.tool_call = {"name": "get_weather", "input": {"city": "Oslo"}}
    tools = client.chat.completions.create(model=f"bedrock/{MODEL}", tools=[WEATHER_TOOL], extra_body=extra,
                                           messages=[{"role": "user", "content": "Weather in Oslo?"}])
    assert tools.choices[0].message.tool_calls[0].function.name == "get_weather"
