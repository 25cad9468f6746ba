"""Upstream HTTP: deadlines a slow drip cannot escape, no redirects, credentials per request only."""
from __future__ import annotations

import time

import pytest

from app.gateway import http
from app.gateway.errors import ErrorClass, UpstreamFailure
from app.gateway.providers.base import UpstreamRequest
from simulators.server import Fault
from tests.helpers import byok, chat, only_record


class TestDeadline:
    @pytest.fixture
    def app_config(self, app_config):
        # Each read returns quickly, so only the attempt deadline can stop a drip.
        return {**app_config, "UPSTREAM_READ_TIMEOUT": 5.0, "UPSTREAM_ATTEMPT_DEADLINE": 1.0}

    def test_slow_drip_is_cut_at_the_attempt_deadline(self, client, gateway_key, fake_openai):
        fake_openai.on_key("sk-drip", Fault("drip", delay=0.05))  # ~600 bytes at 20 bytes/s: 30 s
        started = time.monotonic()
        response = chat(client, gateway_key, byok_conf=byok("sk-drip", fallback=False))
        elapsed = time.monotonic() - started
        assert response.status_code == 504
        assert response.get_json()["error"]["code"] == "timeout"
        assert only_record().error_class == "timeout"
        assert elapsed < 20, "the drip was read to the end instead of being cut"

    def test_stream_drip_is_cut_too(self, client, gateway_key, fake_openai):
        fake_openai.on_key("sk-drip", Fault("drip", delay=0.002))  # first event in time, the rest not
        response = chat(client, gateway_key, stream=True, byok_conf=byok("sk-drip", fallback=False))
        text = response.get_data(as_text=True)
        assert "event: error" in text and '"code":"timeout"' in text


def test_redirects_are_not_followed(app, fake_openai):
    fake_openai.next(Fault("status", 307, body={}, headers={"Location": "http://127.0.0.1:9/steal"}))
    request = UpstreamRequest("POST", fake_openai.url + "/v1/chat/completions",
                              {"Authorization": "Bearer sk-x", "Content-Type": "application/json"}, b"{}")
    response = http.send(request, time.monotonic() + 5)
    assert response.status == 307
    response.close()
    assert len(fake_openai.received) == 1


def test_connection_refused_is_a_connection_failure(app):
    request = UpstreamRequest("POST", "http://127.0.0.1:9/v1/chat/completions", {}, b"{}")
    with pytest.raises(UpstreamFailure) as info:
        http.send(request, time.monotonic() + 5)
    assert info.value.error_class is ErrorClass.CONNECTION


def test_pooled_sessions_never_carry_credentials(client, gateway_key, fake_openai):
    chat(client, gateway_key, byok_conf=byok("sk-first-caller"))
    chat(client, gateway_key, byok_conf=byok("sk-second-caller"))
    assert [r.headers["authorization"] for r in fake_openai.received] == [
        "Bearer sk-first-caller", "Bearer sk-second-caller"]
    pool = http.pool()
    assert not pool.headers
    connection_pool = pool.connection_from_url(fake_openai.url)
    assert "authorization" not in {k.lower() for k in (connection_pool.headers or {})}
