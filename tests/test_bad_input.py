"""Bad input gets a 400 (or 401/404/413) in the OpenAI error shape, naming what is wrong — never a 500."""
from __future__ import annotations

import orjson
import pytest

from tests.helpers import MESSAGES, chat, only_record, records


def post_raw(client, key: str, data: bytes, content_type: str = "application/json"):
    return client.post("/v1/chat/completions", data=data,
                       headers={"Authorization": f"Bearer {key}", "Content-Type": content_type})


def assert_openai_error(response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert set(error) >= {"message", "type", "code", "param"}
    for word in words:
        assert word in error["message"], error["message"]
    return error


@pytest.mark.parametrize("data, words", [
    (b"", ("empty",)),
    (b"{not json", ("not valid JSON",)),
    (b"[1, 2]", ("JSON object", "array")),
    (b'"hello"', ("JSON object", "string")),
])
def test_unparseable_bodies(client, gateway_key, data, words):
    assert_openai_error(post_raw(client, gateway_key, data), 400, *words)


@pytest.mark.parametrize("body, param, words", [
    ({"messages": MESSAGES}, "model", ("'model' is required",)),
    ({"model": 42, "messages": MESSAGES}, "model", ("'model' must be",)),
    ({"model": "openai/gpt-4o"}, "messages", ("'messages' is required",)),
    ({"model": "openai/gpt-4o", "messages": "hi"}, "messages", ("'messages' must be",)),
    ({"model": "openai/gpt-4o", "messages": []}, "messages", ("non-empty",)),
    ({"model": "openai/gpt-4o", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", ("role",)),
    ({"model": "openai/gpt-4o", "messages": MESSAGES, "temperature": "hot"}, "temperature", ("temperature",)),
    ({"model": "openai/gpt-4o", "messages": MESSAGES, "max_tokens": 0}, "max_tokens", ("max_tokens",)),
    ({"model": "openai/gpt-4o", "messages": MESSAGES, "frobnicate": True}, "frobnicate", ("unrecognized",)),
    ({"model": "openai/gpt-4o", "messages": MESSAGES, "stream": "yes"}, "stream", ("'stream' must be a boolean",)),
])
def test_invalid_chat_parameters(client, gateway_key, body, param, words):
    error = assert_openai_error(post_raw(client, gateway_key, orjson.dumps(body)), 400, *words)
    assert error["param"] == param


@pytest.mark.parametrize("conf, words", [
    ("openai", ("'byok_conf' must be an object or an array",)),
    (42, ("'byok_conf' must be an object or an array",)),
    ([], ("must not be empty",)),
    ({"provider": "nope", "credentials": {"api_key": "k"}}, ("unknown provider 'nope'",)),
    ({"credentials": {"api_key": "k"}}, ("'byok_conf.provider' is required",)),
    ({"provider": "openai"}, ("'byok_conf.credentials' is required",)),
    ({"provider": "openai", "credentials": {}}, ("missing required field 'api_key'",)),
    ({"provider": "openai", "credentials": {"api_key": "k"}, "fallback": "yes"}, ("'byok_conf.fallback' must be a boolean",)),
    ({"provider": "openai", "credentials": {"api_key": "k"}, "label": "x" * 65}, ("label",)),
    ({"provider": "openai", "credentials": {"api_key": "k", "secret": "s"}}, ("unknown field 'secret'",)),
    ([{"provider": "openai", "credentials": {"api_key": "k"}}, {"provider": "azure", "credentials": {"api_key": "k"}}],
     ("byok_conf[1].credentials is missing required field 'endpoint'",)),
])
def test_invalid_byok_conf(client, gateway_key, fake_openai, conf, words):
    assert_openai_error(chat(client, gateway_key, byok_conf=conf), 400, *words)
    assert fake_openai.received == []


def test_credential_values_never_appear_in_validation_errors(client, gateway_key):
    conf = {"provider": "azure", "credentials": {"api_key": "sk-secret-value-xyz", "endpoint": "https://bad.example",
                                                 "api_version": "v"}}
    response = chat(client, gateway_key, byok_conf=conf)
    assert response.status_code == 400
    assert "sk-secret-value-xyz" not in response.get_data(as_text=True)


def test_missing_and_wrong_gateway_key_are_401(client):
    no_key = client.post("/v1/chat/completions", json={"model": "openai/gpt-4o", "messages": MESSAGES})
    assert_openai_error(no_key, 401, "missing gateway API key")
    wrong = post_raw(client, "kw-not-a-real-key", orjson.dumps({"model": "openai/gpt-4o", "messages": MESSAGES}))
    error = assert_openai_error(wrong, 401, "invalid or revoked")
    assert error["type"] == "authentication_error"


def test_management_key_cannot_call_inference(client, org):
    from tests.factories import issue_key

    key = issue_key(org, scope="management")
    response = post_raw(client, key, orjson.dumps({"model": "openai/gpt-4o", "messages": MESSAGES}))
    assert_openai_error(response, 403, "scope")


def test_unknown_model_is_404(client, gateway_key):
    error = assert_openai_error(chat(client, gateway_key, model="no-such-model-anywhere"), 404, "no-such-model-anywhere")
    assert error["code"] == "model_not_found"
    assert_openai_error(chat(client, gateway_key, model="openai/gpt-9-imaginary"), 404, "not in the catalog")


def test_body_over_the_limit_is_413(client, gateway_key):
    huge = orjson.dumps({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x" * (11 * 1024 * 1024)}]})
    assert_openai_error(post_raw(client, gateway_key, huge), 413, "byte limit")


class TestConfigurableLimit:
    @pytest.fixture
    def app_config(self, app_config):
        return {**app_config, "MAX_CONTENT_LENGTH": 1000}

    def test_limit_is_configurable(self, client, gateway_key):
        body = orjson.dumps({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "y" * 2000}]})
        assert_openai_error(post_raw(client, gateway_key, body), 413, "1000 byte limit")


def test_validation_failures_are_recorded_once(client, gateway_key):
    chat(client, gateway_key, byok_conf={"provider": "nope", "credentials": {}})
    record = only_record()
    assert record.status == "error" and record.http_status == 400 and record.attempts == []


def test_unknown_route_and_method_answer_json(client, gateway_key):
    assert client.get("/v1/nothing-here").status_code == 404
    assert client.get("/v1/nothing-here").get_json()["error"]["type"] == "invalid_request_error"
    assert client.get("/v1/chat/completions").status_code == 405
    assert records() == []
