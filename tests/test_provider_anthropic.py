"""Anthropic: translation both ways, error classes, and the gateway end to end against the fake."""
from __future__ import annotations

import orjson
import pytest

from app.gateway.errors import ErrorClass, InvalidRequest
from app.gateway.providers import REGISTRY
from app.gateway.providers.base import Credentials
from app.gateway.schema import parse_chat_request
from app.gateway.sse import SSEEvent
from tests.canary import LogCapture, assert_nowhere
from tests.factories import grant
from simulators import anthropic as fake_api
from simulators.anthropic import FakeAnthropic
from simulators.server import Fault
from tests.helpers import byok, chat, only_record, sse_payloads

PROVIDER = REGISTRY["anthropic"]
USER_KEY = "sk-ant-api03-user-canary-Zq81fT0pLm29xV"
SHARED_KEY = "sk-ant-shared-pool-0001"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def _server():
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(_server) -> FakeAnthropic:
    _server.reset()
    return _server


@pytest.fixture
def app_config(app_config, fake):
    return {**app_config, "GATEWAY_ANTHROPIC_BASE_URL": fake.url, "GATEWAY_ANTHROPIC_SHARED_API_KEY": SHARED_KEY}


def request(**body):
    return parse_chat_request({"model": "anthropic/claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}],
                               **body})


def body_of(req) -> dict:
    upstream = PROVIDER.build_request(req, "claude-sonnet-4-5", Credentials({"api_key": "k"}), "http://fake")
    return orjson.loads(upstream.body)


# -- request out -----------------------------------------------------------------------
def test_request_translation_golden():
    req = request(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is here?"},
                                     {"type": "image_url", "image_url": {"url": PNG}},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "You're"},
    ], tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_tokens=300, temperature=0.5, top_p=0.9,
        stop=["END"], user="user-42", stream=True)
    upstream = PROVIDER.build_request(req, "claude-sonnet-4-5", Credentials({"api_key": "k-1"}), None)
    assert upstream.url == "https://api.anthropic.com/v1/messages"
    assert upstream.headers == {"x-api-key": "k-1", "anthropic-version": "2023-06-01", "content-type": "application/json"}
    assert orjson.loads(upstream.body) == {
        "model": "claude-sonnet-4-5",
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is here?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG.split(",", 1)[1]}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather",
                                               "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                                         {"type": "text", "text": "Thanks"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "You're"}]},
        ],
        "max_tokens": 300, "temperature": 0.5, "top_p": 0.9, "stop_sequences": ["END"],
        "tools": [{"name": "get_weather", "description": "Weather for a city",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "metadata": {"user_id": "user-42"}, "stream": True,
    }
    fake_api.validate_body(orjson.loads(upstream.body))  # and the fake, written from the reference, accepts it


def test_default_max_tokens_and_thinking_budget():
    assert body_of(request())["max_tokens"] == 4096
    body = body_of(request(reasoning_effort="medium"))
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert body["max_tokens"] == 8192 + 4096
    assert "thinking" not in body_of(request(reasoning_effort="none"))
    assert body_of(request(max_completion_tokens=77))["max_tokens"] == 77


@pytest.mark.parametrize("params, param", [
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"logprobs": True}, "logprobs"),
    ({"n": 2}, "n"),
    ({"seed": 1}, "seed"),
    ({"temperature": 1.5}, "temperature"),
    ({"reasoning_effort": "high", "max_tokens": 1000}, "max_tokens"),
    ({"reasoning_effort": "low", "temperature": 0.2}, "temperature"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}]}]},
     "messages[0].content[0].image_url"),
])
def test_unsupported_parameters_are_a_400_naming_them(params, param):
    with pytest.raises(InvalidRequest) as info:
        body_of(request(**params))
    assert info.value.param == param
    assert param.split("[")[0] in info.value.message
    if "provider" in info.value.message:
        assert "'anthropic'" in info.value.message


# -- response in -------------------------------------------------------------------------
def test_response_translation_golden():
    body = orjson.dumps({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "thinking", "thinking": "Let me see.", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 100,
                  "cache_creation_input_tokens": 5}})
    completion = PROVIDER.parse_response(body, request(), "claude-sonnet-4-5")
    choice = completion.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant", "content": "Checking.", "refusal": None, "reasoning_content": "Let me see.",
        "tool_calls": [{"id": "toolu_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}
    usage = completion.usage
    # OpenAI's prompt_tokens includes cache reads and writes; Anthropic's input_tokens does not.
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens, usage.completion_tokens) == (115, 100, 5, 20)
    assert completion.body["usage"]["prompt_tokens_details"] == {"cached_tokens": 100}


@pytest.mark.parametrize("stop, finish", [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
                                          ("tool_use", "tool_calls"), ("refusal", "content_filter")])
def test_finish_reasons(stop, finish):
    body = orjson.dumps({"id": "m", "type": "message", "content": [{"type": "text", "text": "x"}],
                         "stop_reason": stop, "usage": {"input_tokens": 1, "output_tokens": 1}})
    assert PROVIDER.parse_response(body, request(), "m").body["choices"][0]["finish_reason"] == finish


# -- stream in ---------------------------------------------------------------------------
def convert_all(raw: bytes, req=None):
    state = PROVIDER.new_stream_state(req or request(stream=True), "claude-sonnet-4-5")
    decoder = PROVIDER.stream_decoder()
    out = [c for e in decoder.feed(raw) + decoder.close() for c in PROVIDER.convert_stream_event(e, state)]
    return out + PROVIDER.finish_stream(state), state


def test_stream_translation_golden():
    body = fake_api.validate_body(body_of(request(stream=True, tools=TOOLS)))
    script = fake_api.Script(reply="Hi there.", thinking="Hmm.", tool_call={"name": "get_weather", "input": {"city": "Oslo"}},
                             cache_read=40, cache_write=3)
    chunks, state = convert_all(b"".join(fake_api.events(body, "claude-sonnet-4-5", script)))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Hmm."
    assert "".join(d.get("content", "") for d in deltas) == "Hi there."
    calls = [t for d in deltas for t in d.get("tool_calls", [])]
    assert calls[0] == {"index": 0, "id": "toolu_fake01", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}
    assert {t["index"] for t in calls} == {0}
    assert "".join(t["function"]["arguments"] for t in calls) == "{\"city\":\"Oslo\"}"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    expected = fake_api.usage(body, script)
    assert state.done and state.usage.cached_tokens == 40 and state.usage.cache_write_tokens == 3
    assert state.usage.prompt_tokens == expected["input_tokens"] + 43
    assert state.usage.completion_tokens == expected["output_tokens"]


def test_stream_usage_is_cumulative_not_summed():
    state = PROVIDER.new_stream_state(request(stream=True), "m")
    events = [{"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}},
              {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 5}},
              {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 12}}]
    for e in events:
        PROVIDER.convert_stream_event(SSEEvent(e["type"], orjson.dumps(e).decode()), state)
    assert (state.usage.prompt_tokens, state.usage.completion_tokens) == (9, 12)


def test_stream_without_message_stop_is_a_connection_failure():
    body = fake_api.validate_body(body_of(request(stream=True)))
    events = fake_api.events(body, "m", fake_api.Script())
    with pytest.raises(Exception) as info:
        convert_all(b"".join(events[:-1]))
    assert info.value.error_class is ErrorClass.CONNECTION


# -- errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("status, kind, expected", [
    (529, "overloaded_error", ErrorClass.OVERLOADED),
    (429, "rate_limit_error", ErrorClass.RATE_LIMIT),
    (401, "authentication_error", ErrorClass.AUTH),
    (403, "permission_error", ErrorClass.AUTH),
    (400, "invalid_request_error", ErrorClass.BAD_REQUEST),
    (404, "not_found_error", ErrorClass.NOT_FOUND),
    (500, "api_error", ErrorClass.SERVER_ERROR),
    (500, "overloaded_error", ErrorClass.OVERLOADED),
    (400, "billing_error", ErrorClass.BUDGET),
    (413, "request_too_large", ErrorClass.BAD_REQUEST),
])
def test_error_classification(status, kind, expected):
    body = orjson.dumps(fake_api.error_body(status, USER_KEY) | {"error": {"type": kind, "message": f"echo {USER_KEY}"}})
    failure = PROVIDER.classify_error(status, {"retry-after": "4"}, body)
    assert failure.error_class is expected and failure.status == status
    assert failure.provider_code == kind and failure.retry_after == 4.0
    assert USER_KEY not in str(failure) + failure.detail


# -- end to end ----------------------------------------------------------------------------
def test_chat_completion_through_the_gateway(client, gateway_key, fake):
    fake.script.cache_read = 50
    response = chat(client, gateway_key, model="anthropic/claude-sonnet-4-5", byok_conf=byok(USER_KEY, "anthropic"))
    assert response.status_code == 200, response.get_data(as_text=True)
    data = response.get_json()
    assert data["choices"][0]["message"]["content"] == fake.script.reply
    assert data["usage"]["prompt_tokens_details"]["cached_tokens"] == 50 and data["usage"]["is_byok"] is True
    sent = fake.received[-1]
    assert sent.headers["x-api-key"] == USER_KEY and sent.json()["max_tokens"] == 4096
    record = only_record()
    assert (record.provider, record.credential, record.cached_tokens, record.tokens_source) == \
        ("anthropic", "byok", 50, "reported")
    assert record.cost > 0


def test_streaming_through_the_gateway(client, gateway_key, fake):
    response = chat(client, gateway_key, model="anthropic/claude-sonnet-4-5", stream=True,
                    stream_options={"include_usage": True}, byok_conf=byok(USER_KEY, "anthropic"))
    payloads = sse_payloads(response.get_data(as_text=True))
    assert payloads[-1] == "[DONE]"
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads[:-1] if p["choices"])
    assert text == fake.script.reply
    assert payloads[-2]["usage"]["completion_tokens"] > 0
    record = only_record()
    assert record.status == "ok" and record.stream and record.tokens_source == "reported"


@pytest.mark.parametrize("fault, reason", [
    (Fault("status", 429, headers={"retry-after": "2"}), "rate_limit"),
    (Fault("status", 529), "overloaded"),
    (Fault("stream_error", after_events=0), "overloaded"),
])
def test_byok_failure_falls_back_to_the_shared_anthropic_pool(client, org, gateway_key, fake, fault, reason):
    grant(org, "10")
    fake.on_key(USER_KEY, fault)
    response = chat(client, gateway_key, model="anthropic/claude-sonnet-4-5", stream=fault.kind == "stream_error",
                    byok_conf=byok(USER_KEY, "anthropic"))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["X-Gateway-Credential"] == "shared"
    assert [r.headers["x-api-key"] for r in fake.received] == [USER_KEY, SHARED_KEY]
    response.get_data()
    record = only_record()
    assert record.fallback and record.fallback_reason == reason and record.charged > 0


def test_byok_401_does_not_fall_back(client, org, gateway_key, fake):
    grant(org, "10")
    fake.on_key(USER_KEY, Fault("status", 401))
    response = chat(client, gateway_key, model="anthropic/claude-sonnet-4-5", byok_conf=byok(USER_KEY, "anthropic"))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "auth"
    assert len(fake.received) == 1
    assert USER_KEY[:12] not in response.get_data(as_text=True)


def test_openai_sdk_tools_round_trip(live_server, gateway_key, fake):
    from openai import OpenAI

    fake.script.tool_call = {"name": "get_weather", "input": {"city": "Oslo"}}
    sdk = OpenAI(base_url=live_server.url + "/v1", api_key=gateway_key, max_retries=0)
    extra = {"byok_conf": byok(USER_KEY, "anthropic")}
    first = sdk.chat.completions.create(model="anthropic/claude-sonnet-4-5", messages=[{"role": "user", "content": "Oslo?"}],
                                        tools=TOOLS, extra_body=extra)
    call = first.choices[0].message.tool_calls[0]
    assert (call.function.name, orjson.loads(call.function.arguments)) == ("get_weather", {"city": "Oslo"})
    fake.script.tool_call = None
    stream = sdk.chat.completions.create(
        model="anthropic/claude-sonnet-4-5", tools=TOOLS, stream=True, extra_body=extra,
        messages=[{"role": "user", "content": "Oslo?"}, first.choices[0].message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == fake.script.reply
    assert fake.received[-1].json()["messages"][-1]["content"][0]["type"] == "tool_result"


def test_canary_sweep_anthropic_key(client, org, gateway_key, fake, app):
    grant(org, "10")
    responses = []
    with LogCapture() as logs:
        for fault in (Fault("status", 401), Fault("status", 429), Fault("status", 400), None):
            fake.on_key(USER_KEY, fault)
            for stream in (False, True):
                r = chat(client, gateway_key, model="anthropic/claude-sonnet-4-5", stream=stream,
                         byok_conf=byok(USER_KEY, "anthropic"))
                responses.append(r.get_data(as_text=True) + str(dict(r.headers)))
        bad = chat(client, gateway_key, model="anthropic/claude-sonnet-4-5", temperature=1.7,
                   byok_conf=byok(USER_KEY, "anthropic"))
        responses.append(bad.get_data(as_text=True))
        assert bad.status_code == 400 and "'anthropic'" in bad.get_json()["error"]["message"]
    assert_nowhere(USER_KEY, logs=logs, responses=responses, instance_path=app.instance_path)
