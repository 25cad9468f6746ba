"""Every answer carries X-Request-Id; every /v1 answer also says how it was served, errors before routing included."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import byok, chat

GATEWAY_HEADERS = ("X-Gateway-Provider", "X-Gateway-Credential", "X-Gateway-Fallback", "X-Gateway-Attempts")
NOT_SERVED = {"X-Gateway-Provider": "", "X-Gateway-Credential": "none", "X-Gateway-Fallback": "0",
              "X-Gateway-Attempts": "0"}


def served_as(response) -> dict[str, str | None]:
    return {name: response.headers.get(name) for name in GATEWAY_HEADERS}


@pytest.mark.parametrize("method, path", [
    ("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("GET", "/v1/generation?id=gen-x"),
])
@pytest.mark.parametrize("authorization", [None, "Bearer kw-not-a-key", "Basic abc"])
def test_a_401_for_a_bad_gateway_key_says_it_reached_no_provider(client, method, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = client.open(path, method=method, headers=headers, json={"model": "gpt-4o-mini", "messages": []})
    assert response.status_code == 401
    assert response.headers["X-Request-Id"].startswith("gen-")
    assert served_as(response) == NOT_SERVED
    assert response.json["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/v1/nowhere", 404), ("GET", "/v1", 404), ("GET", "/v1/chat/completions", 405),
    ("DELETE", "/v1/models", 405),
])
def test_routing_errors_under_v1_carry_every_header(client, method, path, status):
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.headers["X-Request-Id"].startswith("gen-")
    assert served_as(response) == NOT_SERVED
    assert response.is_json


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/nowhere", 404), ("GET", "/healthz/extra", 404), ("POST", "/healthz", 405), ("PUT", "/login", 405),
])
def test_routing_errors_outside_the_routes_carry_a_request_id(client, method, path, status):
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.headers["X-Request-Id"].startswith("gen-")
    assert "X-Gateway-Credential" not in response.headers  # only /v1 answers speak of providers


def test_request_ids_are_fresh_per_request_and_the_served_headers_win(client, gateway_key, fake_openai):
    ids = {client.get("/nowhere").headers["X-Request-Id"] for _ in range(5)}
    assert len(ids) == 5
    response = chat(client, gateway_key, byok_conf=byok("sk-user-key-0001"))
    assert response.status_code == 200
    assert response.headers["X-Request-Id"] == response.json["id"]
    assert served_as(response) == {"X-Gateway-Provider": "openai", "X-Gateway-Credential": "byok",
                                   "X-Gateway-Fallback": "0", "X-Gateway-Attempts": "1"}
    assert response.headers.getlist("X-Request-Id") == [response.json["id"]]  # stamped once, not twice


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
       prefix=st.sampled_from(["/v1/", "/", "/api/v1/", "/logs/", "/invoices/"]),
       rest=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_./", max_size=30))
def test_every_answer_has_a_request_id_and_every_v1_answer_its_gateway_headers(client, method, prefix, rest):
    response = client.open(prefix + rest, method=method)
    assert response.headers.get("X-Request-Id", "").startswith("gen-"), (method, prefix + rest)
    if response.request.path == "/v1" or response.request.path.startswith("/v1/"):
        assert all(name in response.headers for name in GATEWAY_HEADERS), (method, prefix + rest)
