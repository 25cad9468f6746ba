"""An unexpected exception while preparing or calling upstream is a failed attempt (connection before an
answer, malformed after), answered 502-class: never an unhandled exception carrying request data to a log."""
from __future__ import annotations

import pytest

from app.gateway import http
from app.gateway.providers import REGISTRY
from tests.canary import LogCapture
from tests.factories import grant
from tests.helpers import byok, chat, only_record, sse_payloads

KEY = "sk-unexpected-canary-7Hq2Zx"


def _boom(*args, **kwargs):
    # What a library might do: put the request's data (here the key) into its exception message.
    raise ValueError(f"Invalid header value b'Bearer {KEY}\\n'")


@pytest.mark.parametrize("stage, target, error_class, status", [
    ("authorize", (REGISTRY["openai"], "authorize"), "connection", None),
    ("build_request", (REGISTRY["openai"], "build_request"), "connection", None),
    ("send", (http, "send"), "connection", None),
    ("parse_response", (REGISTRY["openai"], "parse_response"), "malformed_response", 200),
])
def test_an_unexpected_exception_is_a_failed_attempt(client, gateway_key, monkeypatch, stage, target, error_class,
                                                     status):
    monkeypatch.setattr(*target, _boom)
    with LogCapture() as logs:
        response = chat(client, gateway_key, byok_conf=byok(KEY, fallback=False))
    assert response.status_code == 502, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == error_class
    assert error["metadata"]["attempts"] == [{"provider": "openai", "credential": "byok", "status": status,
                                              "error_class": error_class, "outcome": "failed"}]
    assert KEY not in response.get_data(as_text=True) and KEY not in logs.text()
    assert "Traceback" not in logs.text() and "ValueError" in logs.text()  # the type is kept, never the message
    record = only_record()
    assert record.error_class == error_class and record.http_status == 502


def test_an_unexpected_exception_falls_back_like_a_connection_failure(client, gateway_key, org, fake_openai,
                                                                     monkeypatch):
    grant(org, "10")
    original = REGISTRY["openai"].build_request

    def fail_for_byok(req, model, creds, base_url):
        if creds["api_key"] == KEY:
            _boom()
        return original(req, model, creds, base_url)

    monkeypatch.setattr(REGISTRY["openai"], "build_request", fail_for_byok)
    response = chat(client, gateway_key, byok_conf=byok(KEY))
    assert response.status_code == 200
    assert response.headers["X-Gateway-Fallback"] == "1"
    assert only_record().fallback_reason == "connection"


@pytest.mark.parametrize("after_chunks", [0, 2])
def test_an_unexpected_exception_in_a_stream_translation_ends_cleanly(client, gateway_key, fake_openai, monkeypatch,
                                                                     after_chunks):
    original = REGISTRY["openai"].convert_stream_event
    seen = []

    def convert(event, state):
        seen.append(event)
        if len(seen) > after_chunks:
            raise KeyError(f"choices {KEY}")
        return original(event, state)

    monkeypatch.setattr(REGISTRY["openai"], "convert_stream_event", convert)
    with LogCapture() as logs:
        response = chat(client, gateway_key, stream=True, byok_conf=byok(KEY, fallback=False))
        text = response.get_data(as_text=True)
    if after_chunks == 0:  # before the first byte: an ordinary failed attempt
        assert response.status_code == 502 and response.get_json()["error"]["code"] == "malformed_response"
    else:  # after it: the stream ends with an error event
        assert response.status_code == 200
        assert sse_payloads(text)[-1]["error"]["code"] == "malformed_response"
    assert KEY not in text and KEY not in logs.text() and "Traceback" not in logs.text()
    assert only_record().error_class == "malformed_response"
