"""Vertex AI: Gemini and Claude models, the service-account token exchange, fallback and the canary sweep."""
from __future__ import annotations

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.gateway.errors import ErrorClass, InvalidRequest, UpstreamFailure
from app.gateway.providers import REGISTRY
from app.gateway.providers.base import Credentials
from app.gateway.schema import parse_chat_request
from tests.canary import LogCapture, assert_nowhere
from tests.factories import grant
from simulators import anthropic as fake_claude
from simulators.server import Fault
from simulators.vertex import TOKEN_ENDPOINT, FakeVertex
from tests.helpers import chat, only_record, sse_payloads

PROVIDER = REGISTRY["vertex"]
SHARED_TOKEN = "ya29.shared-pool-token-0001"
USER_TOKEN = "ya29.user-canary-token-Xk28dPq0Lz7"
EMAIL = "gateway-test@proj-123.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def service_account(rsa_key) -> dict:
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return {"type": "service_account", "project_id": "proj-123", "private_key_id": "kid-1", "private_key": pem,
            "client_email": EMAIL, "client_id": "1", "token_uri": "https://attacker.example/token"}


@pytest.fixture(scope="module")
def _server(rsa_key):
    fake = FakeVertex().start()
    fake.register_service_account(EMAIL, rsa_key.public_key())
    yield fake
    fake.stop()


@pytest.fixture
def fake(_server) -> FakeVertex:
    _server.reset()
    _server.accept_token(SHARED_TOKEN)
    return _server


@pytest.fixture
def app_config(app_config, fake):
    return {**app_config, "GATEWAY_VERTEX_BASE_URL": fake.url, "GATEWAY_VERTEX_TOKEN_URL": fake.token_url,
            "GATEWAY_VERTEX_SHARED_PROJECT_ID": "platform-proj", "GATEWAY_VERTEX_SHARED_REGION": "europe-west4",
            "GATEWAY_VERTEX_SHARED_ACCESS_TOKEN": SHARED_TOKEN}


def vertex_conf(**credentials) -> dict:
    return {"provider": "vertex", "credentials": {"project_id": "proj-123", "region": "us-east5", **credentials}}


def request(model="vertex/gemini-2.5-pro", **body):
    return parse_chat_request({"model": model, "messages": [{"role": "user", "content": "hi"}], **body})


# -- translation -------------------------------------------------------------------------------
def test_gemini_model_url_and_body():
    creds = Credentials({"project_id": "proj-1234", "region": "us-central1", "access_token": "t"})
    req = request(stream=True, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    upstream = PROVIDER.build_request(req, "gemini-2.5-pro", creds, None)
    assert upstream.url == ("https://us-central1-aiplatform.googleapis.com/v1/projects/proj-1234/locations/us-central1/"
                            "publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse")
    assert upstream.headers["Authorization"] == "Bearer t"
    assert orjson.loads(upstream.body)["contents"][0]["parts"] == [
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png"}}]


def test_claude_model_uses_raw_predict_with_vertex_version():
    creds = Credentials({"project_id": "proj-1234", "region": "global", "access_token": "t"})
    upstream = PROVIDER.build_request(request("vertex/claude-sonnet-4-5"), "claude-sonnet-4-5@20250929", creds, None)
    assert upstream.url == ("https://aiplatform.googleapis.com/v1/projects/proj-1234/locations/global/"
                            "publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict")
    body = orjson.loads(upstream.body)
    assert body["anthropic_version"] == "vertex-2023-10-16" and "model" not in body and body["max_tokens"] == 4096
    fake_claude.validate_body(body, vertex=True)


@pytest.mark.parametrize("credentials, param", [
    ({"region": "us-central1.evil.com"}, "byok_conf.credentials.region"),
    ({"project_id": "../x"}, "byok_conf.credentials.project_id"),
    ({"access_token": "t", "service_account": {"type": "service_account"}}, "byok_conf.credentials"),
    ({}, "byok_conf.credentials"),
    ({"service_account": {"type": "authorized_user"}}, "byok_conf.credentials.service_account"),
])
def test_bad_credentials_are_a_400(credentials, param):
    creds = Credentials({"project_id": "proj-123", "region": "us-east5", **credentials})
    with pytest.raises(InvalidRequest) as info:
        PROVIDER.check_credentials(creds, {})
    assert info.value.param == param


@pytest.mark.parametrize("status, body, expected", [
    (429, {"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}, ErrorClass.RATE_LIMIT),
    (401, {"error": {"code": 401, "message": "x", "status": "UNAUTHENTICATED"}}, ErrorClass.AUTH),
    (403, {"error": {"code": 403, "message": "x", "status": "PERMISSION_DENIED"}}, ErrorClass.AUTH),
    (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, ErrorClass.OVERLOADED),
    (503, {"error": {"code": 503, "message": "x", "status": "UNAVAILABLE"}}, ErrorClass.OVERLOADED),
])
def test_error_classification(status, body, expected):
    assert PROVIDER.classify_error(status, {}, orjson.dumps(body)).error_class is expected


# -- the token exchange ---------------------------------------------------------------------------
def test_service_account_is_exchanged_at_the_configured_token_url_every_time(app, fake, service_account):
    creds = Credentials({"project_id": "proj-123", "region": "us-east5", "service_account": service_account})
    first = PROVIDER.authorize(creds, deadline=_far())
    second = PROVIDER.authorize(creds, deadline=_far())
    # No cache: two requests, two exchanges, and the key file's own token_uri was never used.
    assert [first["access_token"], second["access_token"]] == fake.issued
    assert [r.path for r in fake.received] == ["/token", "/token"]
    assert "service_account" not in first.fields()


def test_token_endpoint_refusal_is_an_auth_failure(app, fake, service_account):
    fake.on_key(TOKEN_ENDPOINT, Fault("status", 400))
    creds = Credentials({"project_id": "proj-123", "region": "us-east5", "service_account": service_account})
    with pytest.raises(UpstreamFailure) as info:
        PROVIDER.authorize(creds, deadline=_far())
    assert info.value.error_class is ErrorClass.AUTH


def test_key_signed_by_someone_else_is_refused(app, fake, service_account):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    creds = Credentials({"project_id": "proj-123", "region": "us-east5",
                         "service_account": {**service_account, "private_key": other}})
    with pytest.raises(UpstreamFailure) as info:
        PROVIDER.authorize(creds, deadline=_far())
    assert info.value.error_class is ErrorClass.AUTH and fake.issued == []


def _far() -> float:
    import time

    return time.monotonic() + 10


# -- end to end ------------------------------------------------------------------------------------
def test_gemini_on_vertex_with_service_account(client, gateway_key, fake, service_account):
    fake.gemini.cached_tokens = 8
    response = chat(client, gateway_key, model="vertex/gemini-2.5-pro",
                    byok_conf=vertex_conf(service_account=service_account))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["choices"][0]["message"]["content"] == fake.gemini.reply
    token_call, model_call = fake.received
    assert token_call.path == "/token"
    assert model_call.headers["authorization"] == f"Bearer {fake.issued[0]}"
    assert model_call.path.startswith("/v1/projects/proj-123/locations/us-east5/publishers/google/")
    record = only_record()
    assert (record.provider, record.credential, record.cached_tokens) == ("vertex", "byok", 8)


def test_claude_on_vertex_streams_with_access_token(client, gateway_key, fake):
    fake.accept_token(USER_TOKEN)
    response = chat(client, gateway_key, model="vertex/claude-sonnet-4-5", stream=True,
                    stream_options={"include_usage": True}, byok_conf=vertex_conf(access_token=USER_TOKEN))
    payloads = sse_payloads(response.get_data(as_text=True))
    assert "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads[:-1] if p["choices"]) == \
        fake.claude.reply
    assert fake.received[-1].path.endswith("/publishers/anthropic/models/claude-sonnet-4-5:streamRawPredict")
    assert only_record().tokens_source == "reported"


def test_byok_429_falls_back_to_the_shared_vertex_pool(client, org, gateway_key, fake):
    grant(org, "10")
    fake.accept_token(USER_TOKEN)
    fake.on_key(USER_TOKEN, Fault("status", 429))
    response = chat(client, gateway_key, model="vertex/gemini-2.5-pro", byok_conf=vertex_conf(access_token=USER_TOKEN))
    assert response.status_code == 200
    assert [r.headers["authorization"] for r in fake.received] == [f"Bearer {USER_TOKEN}", f"Bearer {SHARED_TOKEN}"]
    assert "/locations/europe-west4/" in fake.received[-1].path
    record = only_record()
    assert record.fallback and record.fallback_reason == "rate_limit"


def test_expired_token_401_does_not_fall_back(client, org, gateway_key, fake):
    grant(org, "10")
    response = chat(client, gateway_key, model="vertex/gemini-2.5-pro",
                    byok_conf=vertex_conf(access_token="ya29.not-issued"))
    assert response.status_code == 401 and len(fake.received) == 1


def test_canary_sweep_service_account_and_token(client, org, gateway_key, fake, app, service_account):
    grant(org, "10")
    fake.accept_token(USER_TOKEN)
    responses = []
    with LogCapture() as logs:
        for model in ("vertex/gemini-2.5-pro", "vertex/claude-sonnet-4-5"):
            for stream in (False, True):
                for conf in (vertex_conf(service_account=service_account), vertex_conf(access_token=USER_TOKEN)):
                    r = chat(client, gateway_key, model=model, stream=stream, byok_conf=conf)
                    responses.append(r.get_data(as_text=True) + str(dict(r.headers)))
        fake.on_key(TOKEN_ENDPOINT, Fault("status", 400))
        fake.on_key(USER_TOKEN, Fault("status", 401))
        for conf in (vertex_conf(service_account=service_account), vertex_conf(access_token=USER_TOKEN)):
            r = chat(client, gateway_key, model="vertex/gemini-2.5-pro", byok_conf=conf)
            assert r.status_code == 401
            responses.append(r.get_data(as_text=True) + str(dict(r.headers)))
    secret = service_account["private_key"].split("-----")[2].replace("\n", "")
    assert_nowhere(secret, logs=logs, responses=responses, instance_path=app.instance_path)
    assert_nowhere(USER_TOKEN, logs=logs, responses=responses, instance_path=app.instance_path)
    for issued in fake.issued:
        assert_nowhere(issued, logs=logs, responses=responses, instance_path=app.instance_path)
