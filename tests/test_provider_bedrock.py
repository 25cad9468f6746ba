"""The Bedrock adapter on its own: golden translations, SigV4 against the fake, event-stream decoding, errors."""
from __future__ import annotations

import base64
from typing import Iterator

import orjson
import pytest
import requests

from app.gateway.errors import ErrorClass, InvalidRequest, UpstreamFailure
from app.gateway.providers import REGISTRY
from app.gateway.providers.base import Credentials
from app.gateway.schema import parse_chat_request
from simulators.bedrock import FakeBedrock, exception_message, stream_messages
from simulators.bedrock_wire import encode_message

MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
AKID = "AKIAGOLDENTEST000001"
SECRET = "goldenSecret/Key+0000000000000000000000001"
TOKEN = "IQoJb3JpZ2luX2VjEGoldenSessionToken000000000000"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n-not-really-a-png").decode()
bedrock = REGISTRY["bedrock"]


def creds(**extra) -> Credentials:
    return Credentials({"aws_access_key_id": AKID, "aws_secret_access_key": SECRET, "region": "us-east-1", **extra})


def request(**body):
    return parse_chat_request({"model": f"bedrock/{MODEL}", "messages": [{"role": "user", "content": "Hi"}], **body})


def converse(**body) -> dict:
    return orjson.loads(bedrock.build_request(request(**body), MODEL, creds(), None).body)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeBedrock]:
    server = FakeBedrock().start()
    server.add_key(AKID, SECRET)
    server.add_key("AKIAGOLDENTEMPORARY1", SECRET, session_token=TOKEN)
    yield server
    server.stop()


# -- request out -------------------------------------------------------------------
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_golden_request_translates_every_part_of_the_conversation():
    body = converse(
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                         {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
            {"role": "assistant", "content": "A logo."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
            {"role": "user", "content": "Compare."},
            {"role": "assistant", "content": "Lyon is"},
        ],
        tools=[WEATHER_TOOL], tool_choice="auto", max_tokens=300, temperature=0.2, top_p=0.9, stop="END",
        user="team-a@example.com",
    )
    assert body == {
        "system": [{"text": "You are terse."}, {"text": "Answer in French."}],
        "messages": [
            {"role": "user", "content": [{"text": "What is this?"},
                                         {"image": {"format": "png", "source": {"bytes": PNG}}}]},
            {"role": "assistant", "content": [{"text": "A logo."}]},
            {"role": "user", "content": [{"text": "Weather in Paris?"}]},
            {"role": "assistant", "content": [
                {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Paris"}}},
                {"toolUse": {"toolUseId": "call_2", "name": "get_weather", "input": {"city": "Lyon"}}}]},
            {"role": "user", "content": [{"toolResult": {"toolUseId": "call_1", "content": [{"text": "18C"}]}},
                                         {"toolResult": {"toolUseId": "call_2", "content": [{"text": "21C"}]}},
                                         {"text": "Compare."}]},
            {"role": "assistant", "content": [{"text": "Lyon is"}]},
        ],
        "inferenceConfig": {"maxTokens": 300, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
        "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather for a city",
                                               "inputSchema": {"json": WEATHER_TOOL["function"]["parameters"]}}}],
                       "toolChoice": {"auto": {}}},
        "requestMetadata": {"user": "team-a@example.com"},
    }


@pytest.mark.parametrize("choice, expected", [
    ("required", {"any": {}}),
    ({"type": "function", "function": {"name": "get_weather"}}, {"tool": {"name": "get_weather"}}),
])
def test_tool_choice_maps_to_converse_tool_choice(choice, expected):
    assert converse(tools=[WEATHER_TOOL], tool_choice=choice)["toolConfig"]["toolChoice"] == expected


def test_tool_choice_none_sends_no_tools():
    assert "toolConfig" not in converse(tools=[WEATHER_TOOL], tool_choice="none")


def test_max_completion_tokens_wins_and_reasoning_effort_becomes_a_thinking_budget():
    body = converse(max_completion_tokens=20000, max_tokens=10, reasoning_effort="medium")
    assert body["inferenceConfig"] == {"maxTokens": 20000}
    assert body["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 8192}}
    assert converse(reasoning_effort="low")["inferenceConfig"] == {"maxTokens": 2048 + 4096}


@pytest.mark.parametrize("body, param", [
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"n": 2}, "n"),
    ({"seed": 7}, "seed"),
    ({"logprobs": True}, "logprobs"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"parallel_tool_calls": False, "tools": [WEATHER_TOOL]}, "parallel_tool_calls"),
    ({"tools": [{**WEATHER_TOOL, "function": {**WEATHER_TOOL["function"], "strict": True}}]}, "tools[0].function.strict"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}]},
     "messages[0].content[0].image_url"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "messages[0].content[0]"),
    ({"reasoning_effort": "high", "temperature": 0.5}, "temperature"),
    ({"reasoning_effort": "high", "top_p": 0.5}, "top_p"),
    ({"reasoning_effort": "high", "max_tokens": 1000}, "max_tokens"),
    ({"user": "bad\u00e9user"}, "user"),
])
def test_parameters_bedrock_cannot_honour_are_a_400_naming_parameter_and_provider(body, param):
    with pytest.raises(InvalidRequest) as info:
        converse(**body)
    assert info.value.status == 400 and info.value.param == param
    assert "'bedrock'" in info.value.message


def test_reasoning_effort_on_a_model_without_thinking_budgets_is_a_400():
    req = request(reasoning_effort="low")
    with pytest.raises(InvalidRequest) as info:
        bedrock.build_request(req, "amazon.nova-pro-v1:0", creds(), None)
    assert info.value.param == "reasoning_effort" and "bedrock" in info.value.message


def test_url_encodes_model_id_and_targets_the_regional_endpoint():
    up = bedrock.build_request(request(), MODEL, creds(region="eu-central-1"), None)
    assert up.url == ("https://bedrock-runtime.eu-central-1.amazonaws.com/model/"
                      "anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse")
    assert up.headers["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AKID}/")
    assert "/eu-central-1/bedrock/aws4_request" in up.headers["Authorization"]
    assert SECRET not in repr(up.headers)
    stream = bedrock.build_request(request(stream=True), MODEL, creds(), "http://127.0.0.1:9")
    assert stream.url == "http://127.0.0.1:9/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream"


# -- signing, checked by the fake with the secret it knows ------------------------------
def send(up):
    return requests.post(up.url, headers=up.headers, data=up.body, timeout=5)


def test_fake_accepts_botocore_signature_and_session_token(fake):
    assert send(bedrock.build_request(request(), MODEL, creds(), fake.url)).status_code == 200
    temporary = creds(aws_access_key_id="AKIAGOLDENTEMPORARY1", aws_session_token=TOKEN)
    up = bedrock.build_request(request(), MODEL, temporary, fake.url)
    assert "x-amz-security-token" in up.headers["Authorization"]
    assert send(up).status_code == 200


@pytest.mark.parametrize("change, error_type", [
    ({"aws_secret_access_key": "not-the-secret"}, "InvalidSignatureException"),
    ({"region": "eu-west-1"}, "InvalidSignatureException"),
    ({"aws_access_key_id": "AKIAUNKNOWNKEY000001"}, "UnrecognizedClientException"),
    ({"aws_session_token": "unexpected-token"}, "UnrecognizedClientException"),
])
def test_fake_rejects_what_aws_rejects_and_adapter_calls_it_auth(fake, change, error_type):
    response = send(bedrock.build_request(request(), MODEL, creds(**change), fake.url))
    assert response.status_code == 403
    assert response.headers["x-amzn-ErrorType"].startswith(error_type + ":")
    failure = bedrock.classify_error(403, {k.lower(): v for k, v in response.headers.items()}, response.content)
    assert failure.error_class is ErrorClass.AUTH and failure.provider_code == error_type


def test_signature_covers_the_body(fake):
    up = bedrock.build_request(request(), MODEL, creds(), fake.url)
    tampered = up.body.replace(b'"Hi"', b'"Ho"')
    response = requests.post(up.url, headers=up.headers, data=tampered, timeout=5)
    assert response.status_code == 403


# -- response in -------------------------------------------------------------------------
def test_golden_response_with_reasoning_tool_call_and_cache_usage():
    body = {"output": {"message": {"role": "assistant", "content": [
        {"reasoningContent": {"reasoningText": {"text": "User wants weather.", "signature": "sig"}}},
        {"text": "Checking."},
        {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}}]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 10, "outputTokens": 20, "totalTokens": 130, "cacheReadInputTokens": 80,
                  "cacheWriteInputTokens": 20},
        "metrics": {"latencyMs": 100}}
    completion = bedrock.parse_response(orjson.dumps(body), request(), MODEL)
    choice = completion.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant", "content": "Checking.", "refusal": None, "reasoning_content": "User wants weather.",
        "tool_calls": [{"id": "tooluse_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}
    usage = completion.usage
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens, usage.completion_tokens) == \
        (110, 80, 20, 20)
    assert completion.body["usage"]["prompt_tokens_details"] == {"cached_tokens": 80}


@pytest.mark.parametrize("stop_reason, finish", [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("guardrail_intervened", "content_filter"), ("content_filtered", "content_filter"),
])
def test_stop_reason_maps_to_finish_reason(stop_reason, finish):
    body = {"output": {"message": {"role": "assistant", "content": [{"text": "x"}]}}, "stopReason": stop_reason,
            "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}}
    assert bedrock.parse_response(orjson.dumps(body), request(), MODEL).body["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize("raw", [b"{not json", b'{"output": {}}', b"[]"])
def test_malformed_response_is_classified_malformed(raw):
    with pytest.raises(UpstreamFailure) as info:
        bedrock.parse_response(raw, request(), MODEL)
    assert info.value.error_class is ErrorClass.MALFORMED


# -- stream in -----------------------------------------------------------------------------
BLOCKS = [{"reasoningContent": {"reasoningText": {"text": "Think about it.", "signature": "c2ln"}}},
          {"text": "Checking the weather — Zürich ✓."},
          {"toolUse": {"toolUseId": "tooluse_a", "name": "get_weather", "input": {"city": "Paris"}}},
          {"toolUse": {"toolUseId": "tooluse_b", "name": "get_weather", "input": {"city": "Lyon, France"}}}]
USAGE = {"inputTokens": 7, "outputTokens": 40, "totalTokens": 57, "cacheReadInputTokens": 10}
WIRE = b"".join(stream_messages(BLOCKS, "tool_use", USAGE))


def translate(pieces: list[bytes]):
    state = bedrock.new_stream_state(request(stream=True), MODEL)
    decoder = bedrock.stream_decoder()
    chunks = [c for piece in pieces for event in decoder.feed(piece) for c in bedrock.convert_stream_event(event, state)]
    chunks += [c for event in decoder.close() for c in bedrock.convert_stream_event(event, state)]
    chunks += bedrock.finish_stream(state)
    return [c["choices"][0] for c in chunks], state


def test_golden_stream_translation():
    choices, state = translate([WIRE])
    deltas = [c["delta"] for c in choices]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Think about it."
    assert "".join(d.get("content") or "" for d in deltas) == "Checking the weather — Zürich ✓."
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert [c for c in calls if "id" in c] == [
        {"index": 0, "id": "tooluse_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 1, "id": "tooluse_b", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]
    for index, city in ((0, "Paris"), (1, "Lyon, France")):
        args = "".join(c["function"]["arguments"] for c in calls if c["index"] == index)
        assert orjson.loads(args) == {"city": city}
    assert [c["finish_reason"] for c in choices if c["finish_reason"]] == ["tool_calls"]
    assert state.done and state.finish_reason == "tool_calls"
    assert (state.usage.prompt_tokens, state.usage.cached_tokens, state.usage.completion_tokens) == (17, 10, 40)


def test_stream_decodes_the_same_however_the_bytes_are_split():
    expected, _ = translate([WIRE])
    for cut in range(len(WIRE) + 1):
        assert translate([WIRE[:cut], WIRE[cut:]])[0] == expected, f"split at byte {cut}"
    assert translate([WIRE[i:i + 1] for i in range(len(WIRE))])[0] == expected


def test_stream_cut_inside_an_event_or_before_message_stop_is_a_failure():
    with pytest.raises(UpstreamFailure) as info:
        translate([WIRE[:-3]])
    assert info.value.error_class is ErrorClass.CONNECTION
    messages = stream_messages(BLOCKS, "tool_use", USAGE)
    with pytest.raises(UpstreamFailure):
        translate([b"".join(messages[:4])])


def test_corrupted_crc_is_malformed():
    broken = bytearray(WIRE)
    broken[30] ^= 0x01
    with pytest.raises(UpstreamFailure) as info:
        translate([bytes(broken)])
    assert info.value.error_class is ErrorClass.MALFORMED


@pytest.mark.parametrize("exception_type, error_class", [
    ("throttlingException", ErrorClass.RATE_LIMIT),
    ("serviceUnavailableException", ErrorClass.OVERLOADED),
    ("internalServerException", ErrorClass.SERVER_ERROR),
    ("modelStreamErrorException", ErrorClass.SERVER_ERROR),
    ("validationException", ErrorClass.BAD_REQUEST),
])
def test_exception_event_in_stream_is_classified_like_the_http_error(exception_type, error_class):
    start = stream_messages([], "end_turn", USAGE)[0]
    with pytest.raises(UpstreamFailure) as info:
        translate([start + exception_message(exception_type, "key AKIA... was throttled")])
    assert info.value.error_class is error_class
    assert "AKIA" not in str(info.value) and "throttled" not in info.value.detail


def test_error_message_type_in_stream_is_a_server_error():
    error = encode_message({":message-type": "error", ":error-code": "InternalFailure", ":error-message": "boom"}, b"")
    with pytest.raises(UpstreamFailure) as info:
        translate([error])
    assert info.value.error_class is ErrorClass.SERVER_ERROR and info.value.provider_code == "InternalFailure"


# -- errors over HTTP -----------------------------------------------------------------------
@pytest.mark.parametrize("status, error_type, error_class", [
    (429, "ThrottlingException", ErrorClass.RATE_LIMIT),
    (503, "ServiceUnavailableException", ErrorClass.OVERLOADED),
    (429, "ModelNotReadyException", ErrorClass.OVERLOADED),
    (500, "InternalServerException", ErrorClass.SERVER_ERROR),
    (424, "ModelErrorException", ErrorClass.SERVER_ERROR),
    (408, "ModelTimeoutException", ErrorClass.TIMEOUT),
    (403, "AccessDeniedException", ErrorClass.AUTH),
    (403, "UnrecognizedClientException", ErrorClass.AUTH),
    (403, "ExpiredTokenException", ErrorClass.AUTH),
    (400, "ValidationException", ErrorClass.BAD_REQUEST),
    (404, "ResourceNotFoundException", ErrorClass.NOT_FOUND),
    (502, None, ErrorClass.SERVER_ERROR),
    (503, None, ErrorClass.OVERLOADED),
])
def test_http_errors_are_classified_status_first_then_by_type(status, error_type, error_class):
    headers = {"x-amzn-errortype": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/"} \
        if error_type else {}
    failure = bedrock.classify_error(status, headers, b'{"message": "secret AKIA1234 was bad"}')
    assert failure.error_class is error_class and failure.status == status
    assert failure.provider_code == error_type
    assert "AKIA1234" not in f"{failure} {failure.detail}"


def test_error_type_from_body_and_retry_after():
    failure = bedrock.classify_error(400, {"retry-after": "4"},
                                     b'{"__type": "com.amazon.coral.service#ThrottlingException", "message": "x"}')
    assert failure.error_class is ErrorClass.RATE_LIMIT and failure.retry_after == 4


# -- credentials ------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("region", "us-east-1.evil.example/"), ("region", "US-EAST-1"), ("region", 5),
    ("aws_access_key_id", "not an id"), ("aws_secret_access_key", ["x"]),
])
def test_unusable_credentials_are_a_400_that_does_not_echo_them(field, value):
    with pytest.raises(InvalidRequest) as info:
        bedrock.check_credentials(creds(**{field: value}), {})
    assert info.value.param == f"byok_conf.credentials.{field}"
    assert str(value) not in info.value.message


def test_shared_pool_credentials_come_from_aligned_env_lists():
    config = {"GATEWAY_BEDROCK_SHARED_ACCESS_KEY_ID": "AKIASHARED0000000001, AKIASHARED0000000002",
              "GATEWAY_BEDROCK_SHARED_SECRET_ACCESS_KEY": "s1,s2", "GATEWAY_BEDROCK_SHARED_REGION": "us-west-2"}
    pool = bedrock.shared_credentials(config)
    assert [(c["aws_access_key_id"], c["aws_secret_access_key"], c["region"]) for c in pool] == [
        ("AKIASHARED0000000001", "s1", "us-west-2"), ("AKIASHARED0000000002", "s2", "us-west-2")]
    assert bedrock.shared_credentials({**config, "GATEWAY_BEDROCK_SHARED_SECRET_ACCESS_KEY": "s1"}) == []
    assert bedrock.shared_credentials({}) == []
