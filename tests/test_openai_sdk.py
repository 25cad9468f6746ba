"""The official OpenAI Python SDK as a real client over real HTTP."""
from __future__ import annotations

import openai
import pytest

from tests.factories import grant
from simulators.server import Fault
from tests.helpers import MESSAGES, only_record

BYOK = {"byok_conf": {"provider": "openai", "credentials": {"api_key": "sk-sdk-user-key"}, "label": "sdk"}}


@pytest.fixture
def sdk(live_server, gateway_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key=gateway_key, max_retries=0, timeout=20)


def test_non_streaming_with_byok_extra_body(sdk, fake_openai):
    completion = sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES, extra_body=BYOK)
    assert completion.choices[0].message.content == fake_openai.reply
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.model_extra["is_byok"] is True
    assert fake_openai.received[-1].headers["authorization"] == "Bearer sk-sdk-user-key"
    assert only_record().byok_label == "sdk"


def test_streaming_with_usage(sdk, fake_openai):
    stream = sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES, stream=True,
                                         stream_options={"include_usage": True}, extra_body=BYOK)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == fake_openai.reply
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_raw_response_exposes_gateway_headers(sdk, org):
    grant(org, "5")
    raw = sdk.chat.completions.with_raw_response.create(model="openai/gpt-4o-mini", messages=MESSAGES)
    assert raw.headers["x-gateway-credential"] == "shared"
    assert raw.headers["x-request-id"] == raw.parse().id


def test_bad_gateway_key_raises_authentication_error(live_server):
    client = openai.OpenAI(base_url=live_server.url + "/v1", api_key="kw-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES)
    assert info.value.status_code == 401


def test_no_credits_raises_402(sdk):
    with pytest.raises(openai.APIStatusError) as info:
        sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES)
    assert info.value.status_code == 402
    assert info.value.body["code"] == "insufficient_credits"


def test_byok_rate_limit_without_fallback_raises_rate_limit_error(sdk, fake_openai):
    fake_openai.on_key("sk-sdk-user-key", Fault("status", 429, headers={"retry-after": "1"}))
    body = {"byok_conf": {**BYOK["byok_conf"], "fallback": False}}
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES, extra_body=body)
    assert info.value.response.headers["retry-after"] == "1"


def test_mid_stream_failure_raises_in_the_sdk(sdk, fake_openai):
    fake_openai.on_key("sk-sdk-user-key", Fault("reset_mid_stream", after_events=2))
    stream = sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES, stream=True, extra_body=BYOK)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
