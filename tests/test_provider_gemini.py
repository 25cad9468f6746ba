"""Gemini (AI Studio): translation both ways, error classes, and the gateway end to end against the fake."""
from __future__ import annotations

import orjson
import pytest

from app.gateway.errors import ErrorClass, InvalidRequest
from app.gateway.providers import REGISTRY
from app.gateway.providers.base import Credentials
from app.gateway.schema import parse_chat_request
from tests.canary import LogCapture, assert_nowhere
from tests.factories import grant
from simulators import gemini as fake_api
from simulators.gemini import FakeGemini
from simulators.server import Fault
from tests.helpers import byok, chat, only_record, sse_payloads

PROVIDER = REGISTRY["gemini"]
USER_KEY = "AIzaSyUserCanary-9fQ2mZ81xLp0TvW"
SHARED_KEY = "AIzaSySharedPool-0001"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "additionalProperties": False}}}]
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def _server():
    fake = FakeGemini().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(_server) -> FakeGemini:
    _server.reset()
    return _server


@pytest.fixture
def app_config(app_config, fake):
    return {**app_config, "GATEWAY_GEMINI_BASE_URL": fake.url, "GATEWAY_GEMINI_SHARED_API_KEY": SHARED_KEY}


def request(**body):
    return parse_chat_request({"model": "gemini/gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}], **body})


def body_of(req) -> dict:
    return orjson.loads(PROVIDER.build_request(req, "gemini-2.5-pro", Credentials({"api_key": "k"}), None).body)


# -- request out ---------------------------------------------------------------------------
def test_request_translation_golden():
    req = request(messages=[
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is here?"},
                                     {"type": "image_url", "image_url": {"url": PNG}}]},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"sky\": \"clear\"}"},
        {"role": "tool", "tool_call_id": "call_1", "content": "plain text"},
        {"role": "assistant", "content": "It is"},
    ], tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_completion_tokens=300,
        temperature=1.5, top_p=0.9, stop="END", seed=7, reasoning_effort="low",
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}})
    upstream = PROVIDER.build_request(req, "gemini-2.5-pro", Credentials({"api_key": USER_KEY}), None)
    assert upstream.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent"
    assert USER_KEY not in upstream.url and upstream.headers["x-goog-api-key"] == USER_KEY
    assert orjson.loads(upstream.body) == {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "What is here?"},
                                       {"inlineData": {"mimeType": "image/png", "data": PNG.split(",", 1)[1]}}]},
            {"role": "model", "parts": [{"text": "Let me check."},
                                        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"sky": "clear"}}},
                                       {"functionResponse": {"name": "get_weather", "response": {"content": "plain text"}}}]},
            {"role": "model", "parts": [{"text": "It is"}]},
        ],
        "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather for a city",
                                             "parametersJsonSchema": TOOLS[0]["function"]["parameters"]}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
        "generationConfig": {"maxOutputTokens": 300, "temperature": 1.5, "topP": 0.9, "seed": 7, "stopSequences": ["END"],
                             "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"},
                             "thinkingConfig": {"thinkingBudget": 1024}},
    }
    fake_api.validate_body(orjson.loads(upstream.body))


def test_stream_url_asks_for_sse():
    upstream = PROVIDER.build_request(request(stream=True), "gemini-2.5-flash", Credentials({"api_key": "k"}), "http://f/")
    assert upstream.url == "http://f/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"


@pytest.mark.parametrize("params, param", [
    ({"user": "u-1"}, "user"),
    ({"parallel_tool_calls": False}, "parallel_tool_calls"),
    ({"n": 3}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}]},
     "messages[0].content[0].image_url"),
    ({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}, "messages[0].tool_call_id"),
])
def test_unsupported_parameters_are_a_400_naming_them(params, param):
    with pytest.raises(InvalidRequest) as info:
        body_of(request(**params))
    assert info.value.param == param and "'gemini'" in info.value.message


# -- response in ----------------------------------------------------------------------------
def test_response_translation_golden():
    body = orjson.dumps({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Thinking...", "thought": True}, {"text": "Checking."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 20, "thoughtsTokenCount": 30,
                          "cachedContentTokenCount": 100, "totalTokenCount": 170},
        "responseId": "r1"})
    completion = PROVIDER.parse_response(body, request(), "gemini-2.5-pro")
    choice = completion.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert (message["content"], message["reasoning_content"]) == ("Checking.", "Thinking...")
    assert message["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}
    assert message["tool_calls"][0]["id"].startswith("call_")
    u = completion.usage
    # promptTokenCount already includes the cached tokens; completion tokens include the thoughts.
    assert (u.prompt_tokens, u.cached_tokens, u.completion_tokens, u.reasoning_tokens) == (120, 100, 50, 30)


@pytest.mark.parametrize("reason, finish", [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
                                            ("RECITATION", "content_filter"), ("OTHER", "stop")])
def test_finish_reasons(reason, finish):
    body = orjson.dumps({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]})
    assert PROVIDER.parse_response(body, request(), "m").body["choices"][0]["finish_reason"] == finish


def test_blocked_prompt_is_a_content_filter_finish():
    body = orjson.dumps({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}})
    completion = PROVIDER.parse_response(body, request(), "m")
    assert completion.body["choices"][0]["finish_reason"] == "content_filter"


def test_stream_translation_golden():
    body = fake_api.validate_body(body_of(request(stream=True, tools=TOOLS)))
    script = fake_api.Script(reply="Hi there friend.", tool_call={"name": "get_weather", "args": {"city": "Oslo"}},
                             cached_tokens=12, thoughts_tokens=9)
    raw = b"".join(b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in fake_api.chunks(body, "m", script))
    state = PROVIDER.new_stream_state(request(stream=True), "m")
    decoder = PROVIDER.stream_decoder()
    chunks = [c for e in decoder.feed(raw) + decoder.close() for c in PROVIDER.convert_stream_event(e, state)]
    chunks += PROVIDER.finish_stream(state)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas) == "Hi there friend."
    calls = [t for d in deltas for t in d.get("tool_calls", [])]
    assert len(calls) == 1 and calls[0]["index"] == 0 and calls[0]["function"]["arguments"] == "{\"city\":\"Oslo\"}"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    final = fake_api.chunks(body, "m", script)[-1]["usageMetadata"]
    assert state.done and state.usage.prompt_tokens == final["promptTokenCount"]
    assert (state.usage.cached_tokens, state.usage.reasoning_tokens) == (12, 9)
    assert state.usage.completion_tokens == final["candidatesTokenCount"] + 9


def test_stream_without_finish_reason_is_a_connection_failure():
    state = PROVIDER.new_stream_state(request(stream=True), "m")
    with pytest.raises(Exception) as info:
        PROVIDER.finish_stream(state)
    assert info.value.error_class is ErrorClass.CONNECTION


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("status, body, expected, retry", [
    (429, fake_api.error_body(429, USER_KEY), ErrorClass.RATE_LIMIT, 7.0),
    (503, fake_api.error_body(503, None), ErrorClass.OVERLOADED, None),
    (500, fake_api.google_error(500, "x"), ErrorClass.SERVER_ERROR, None),
    (500, {"error": {"code": 500, "message": "x", "status": "UNAVAILABLE"}}, ErrorClass.OVERLOADED, None),
    (403, fake_api.error_body(403, USER_KEY), ErrorClass.AUTH, None),
    (400, fake_api.api_key_invalid_body(USER_KEY), ErrorClass.AUTH, None),
    (400, fake_api.google_error(400, "bad"), ErrorClass.BAD_REQUEST, None),
    (404, fake_api.google_error(404, "no model"), ErrorClass.NOT_FOUND, None),
    (504, fake_api.google_error(504, "slow"), ErrorClass.TIMEOUT, None),
])
def test_error_classification(status, body, expected, retry):
    failure = PROVIDER.classify_error(status, {}, orjson.dumps(body))
    assert failure.error_class is expected and failure.retry_after == retry
    assert USER_KEY not in f"{failure} {failure.detail} {failure.provider_code}"


# -- end to end ---------------------------------------------------------------------------------
def test_chat_completion_through_the_gateway(client, gateway_key, fake):
    fake.script.cached_tokens, fake.script.thoughts_tokens = 30, 11
    response = chat(client, gateway_key, model="gemini/gemini-2.5-pro", byok_conf=byok(USER_KEY, "gemini"))
    assert response.status_code == 200, response.get_data(as_text=True)
    data = response.get_json()
    assert data["choices"][0]["message"]["content"] == fake.script.reply
    assert data["usage"]["completion_tokens_details"]["reasoning_tokens"] == 11
    sent = fake.received[-1]
    assert "key=" not in sent.path and sent.headers["x-goog-api-key"] == USER_KEY
    record = only_record()
    assert (record.provider, record.cached_tokens, record.reasoning_tokens) == ("gemini", 30, 11)


def test_streaming_through_the_gateway(client, gateway_key, fake):
    response = chat(client, gateway_key, model="gemini/gemini-2.5-flash", stream=True,
                    stream_options={"include_usage": True}, byok_conf=byok(USER_KEY, "gemini"))
    payloads = sse_payloads(response.get_data(as_text=True))
    assert payloads[-1] == "[DONE]"
    assert "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads[:-1] if p["choices"]) == fake.script.reply
    assert only_record().tokens_source == "reported"


@pytest.mark.parametrize("fault, reason", [
    (Fault("status", 429), "rate_limit"),
    (Fault("status", 503), "overloaded"),
    (Fault("reset_mid_stream", after_events=0), "connection"),
])
def test_byok_failure_falls_back_to_the_shared_gemini_pool(client, org, gateway_key, fake, fault, reason):
    grant(org, "10")
    fake.on_key(USER_KEY, fault)
    response = chat(client, gateway_key, model="gemini/gemini-2.5-pro", stream=fault.kind != "status",
                    byok_conf=byok(USER_KEY, "gemini"))
    assert response.status_code == 200
    response.get_data()
    assert [r.headers["x-goog-api-key"] for r in fake.received] == [USER_KEY, SHARED_KEY]
    record = only_record()
    assert record.fallback and record.fallback_reason == reason and record.credential == "shared"


@pytest.mark.parametrize("fault", [Fault("status", 403), Fault("status", 400, body=fake_api.api_key_invalid_body(USER_KEY))])
def test_dead_key_does_not_fall_back(client, org, gateway_key, fake, fault):
    grant(org, "10")
    fake.on_key(USER_KEY, fault)
    response = chat(client, gateway_key, model="gemini/gemini-2.5-pro", byok_conf=byok(USER_KEY, "gemini"))
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "auth"
    assert len(fake.received) == 1


def test_openai_sdk_stream_tools(live_server, gateway_key, fake):
    from openai import OpenAI

    fake.script.tool_call = {"name": "get_weather", "args": {"city": "Oslo"}}
    sdk = OpenAI(base_url=live_server.url + "/v1", api_key=gateway_key, max_retries=0)
    stream = sdk.chat.completions.create(model="gemini/gemini-2.5-pro", messages=[{"role": "user", "content": "Oslo?"}],
                                         tools=TOOLS, stream=True, extra_body={"byok_conf": byok(USER_KEY, "gemini")})
    chunks = list(stream)
    calls = [t for c in chunks if c.choices for t in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "get_weather" and orjson.loads(calls[0].function.arguments) == {"city": "Oslo"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_canary_sweep_gemini_key(client, org, gateway_key, fake, app):
    grant(org, "10")
    responses = []
    with LogCapture() as logs:
        for fault in (Fault("status", 400, body=fake_api.api_key_invalid_body(USER_KEY)), Fault("status", 429),
                      Fault("status", 403), Fault("malformed"), None):
            fake.on_key(USER_KEY, fault)
            for stream in (False, True):
                r = chat(client, gateway_key, model="gemini/gemini-2.5-pro", stream=stream,
                         byok_conf=byok(USER_KEY, "gemini"))
                responses.append(r.get_data(as_text=True) + str(dict(r.headers)))
    assert all("key=" not in r.path for r in fake.received)
    assert_nowhere(USER_KEY, logs=logs, responses=responses, instance_path=app.instance_path)
