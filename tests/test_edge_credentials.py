"""Credentials are checked at the edge: a value bound for an HTTP header is a clean secret or a 400 naming
the field — never a 500, never an echo, never a log line carrying it. Shared-pool keys get the same check
when the app is built."""
from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import create_app
from app.gateway.errors import ConfigurationError
from app.gateway.providers import REGISTRY
from tests.canary import LogCapture
from tests.conftest import base_config
from tests.helpers import byok, chat, records

# Every credential field that ends up in an HTTP header, per provider. A provider that adds one must declare it.
HEADER_FIELDS = {
    "openai": ("api_key", "organization", "project"),
    **{p: ("api_key",) for p in ("mistral", "groq", "deepseek", "xai", "together", "fireworks", "anthropic",
                                 "gemini", "azure")},
    "vertex": ("access_token",),
    "bedrock": ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"),
}
VALID = {
    **{p: {"api_key": "key-valid-0001"} for p in HEADER_FIELDS},
    "azure": {"api_key": "az-valid-0001", "endpoint": "https://myres.openai.azure.com", "api_version": "2024-10-21"},
    "vertex": {"project_id": "proj-123456", "region": "us-central1", "access_token": "ya29.valid-0001"},
    "bedrock": {"aws_access_key_id": "AKIAVALID00000000001", "aws_secret_access_key": "secret/valid+key0001",
                "region": "us-east-1"},
}
CASES = [(p, f) for p, fields in HEADER_FIELDS.items() for f in fields]
# A distinctive core that must never come back: in the answer, a log line or an upstream request.
CORE = "AKIACANARY9F3B2C7D41E0A6"
MANGLED = {
    "trailing newline": (CORE + "\n", "leading or trailing whitespace"),
    "trailing CRLF": (CORE + "\r\n", "leading or trailing whitespace"),
    "leading space": (" " + CORE, "leading or trailing whitespace"),
    "trailing tab": (CORE + "\t", "leading or trailing whitespace"),
    "inner space": (CORE[:6] + " " + CORE[6:], "spaces or control characters"),
    "inner NUL": (CORE[:6] + "\x00" + CORE[6:], "spaces or control characters"),
    "inner DEL": (CORE[:6] + "\x7f" + CORE[6:], "spaces or control characters"),
    "inner CR LF (header injection)": (CORE[:6] + "\r\nX-Evil: 1" + CORE[6:], "spaces or control characters"),
    "latin-1 letter": (CORE + "é", "non-ASCII"),
    "beyond latin-1": (CORE + "€", "non-ASCII"),
    "line separator": (CORE + "\u2028", "leading or trailing whitespace"),
    "inner line separator": (CORE[:6] + "\u2028" + CORE[6:], "non-ASCII"),
    "empty": ("", "is empty"),
}


def entry(provider: str, **credentials) -> dict:
    return {"provider": provider, "credentials": {**VALID[provider], **credentials}}


def assert_refused_without_trace(response, logs: LogCapture, param: str, reason: str, *upstreams) -> None:
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "invalid_request" and error["param"] == param
    assert error["message"].startswith(f"'{param}'") and reason in error["message"], error["message"]
    assert CORE not in response.get_data(as_text=True)
    assert CORE not in logs.text()
    assert "Traceback" not in logs.text()
    for fake in upstreams:
        assert fake.received == []


def test_declared_header_fields_match_the_providers():
    assert {p: tuple(REGISTRY[p].header_credentials) for p in REGISTRY} == HEADER_FIELDS


@pytest.mark.parametrize("provider, field", CASES)
def test_a_mangled_header_credential_is_a_400_naming_the_field(client, gateway_key, fake_openai, fake_azure,
                                                               provider, field):
    for how, (value, reason) in MANGLED.items():
        conf = [byok("sk-first-entry-is-fine"), entry(provider, **{field: value})]
        with LogCapture() as logs:
            response = chat(client, gateway_key, byok_conf=conf)
        assert_refused_without_trace(response, logs, f"byok_conf[1].credentials.{field}", reason, fake_openai,
                                     fake_azure)
    assert [r.http_status for r in records()] == [400] * len(MANGLED)


@pytest.mark.parametrize("provider, field", CASES)
def test_a_header_credential_that_is_not_a_string_is_a_400(client, gateway_key, fake_openai, provider, field):
    for value in (123, 1.5, True, ["k"], {"k": "v"}):
        response = chat(client, gateway_key, byok_conf=entry(provider, **{field: value}))
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert error["param"] == f"byok_conf.credentials.{field}" and "must be a string" in error["message"]
    assert fake_openai.received == []


_WHITESPACE = st.sampled_from(["\n", "\r", "\r\n", " ", "\t", "\x0b", "\x0c", "\xa0", "\u2028", "\u3000", "\ufeff"])
_CONTROL = st.characters(max_codepoint=0x1F) | st.just("\x7f")
_NON_ASCII = st.characters(min_codepoint=0x80, exclude_categories=("Cs",))
_MANGLE = st.one_of(
    st.tuples(st.just("prefix"), _WHITESPACE), st.tuples(st.just("suffix"), _WHITESPACE),
    st.tuples(st.just("middle"), _CONTROL | _NON_ASCII | st.just(" ")),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(CASES), mangle=_MANGLE)
def test_any_key_with_whitespace_control_or_non_ascii_is_refused_cleanly(client, gateway_key, fake_openai, case,
                                                                        mangle):
    provider, field = case
    where, bad = mangle
    value = {"prefix": bad + CORE, "suffix": CORE + bad, "middle": CORE[:5] + bad + CORE[5:]}[where]
    fake_openai.reset()
    with LogCapture() as logs:
        response = chat(client, gateway_key, byok_conf=entry(provider, **{field: value}))
    assert_refused_without_trace(response, logs, f"byok_conf.credentials.{field}", "", fake_openai)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=300))
def test_any_printable_ascii_key_reaches_the_provider_unchanged(client, gateway_key, fake_openai, key):
    fake_openai.reset()
    response = chat(client, gateway_key, byok_conf=byok(key, fallback=False))
    assert response.status_code == 200
    assert fake_openai.received[-1].headers["authorization"] == f"Bearer {key}"


# -- Vertex service accounts: a JSON object whose shape is checked before google-auth sees it ----------------
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n"
GOOD_SA = {"type": "service_account", "project_id": "proj-123456", "private_key_id": "0123abcd",
           "private_key": PEM, "client_email": "svc@proj-123456.iam.gserviceaccount.com", "client_id": "1234567890",
           "token_uri": "https://oauth2.googleapis.com/token"}
SA = "byok_conf.credentials.service_account"


@pytest.mark.parametrize("value, param, reason", [
    (42, SA, "JSON key object"),
    (["service_account"], SA, "JSON key object"),
    ("{not json", SA, "JSON key object"),
    ({**GOOD_SA, "type": "authorized_user"}, SA, "service_account"),
    ({k: v for k, v in GOOD_SA.items() if k != "client_email"}, f"{SA}.client_email", "is required"),
    ({k: v for k, v in GOOD_SA.items() if k != "private_key"}, f"{SA}.private_key", "is required"),
    ({**GOOD_SA, "client_email": 7}, f"{SA}.client_email", "must be a string"),
    ({**GOOD_SA, "client_email": "svc@x.iam\n.gserviceaccount.com"}, f"{SA}.client_email", "control character"),
    ({**GOOD_SA, "client_email": "not-an-email"}, f"{SA}.client_email", "e-mail address"),
    ({**GOOD_SA, "client_email": "a" * 300 + "@x.com"}, f"{SA}.client_email", "longer than"),
    ({**GOOD_SA, "private_key": "just text"}, f"{SA}.private_key", "PEM"),
    ({**GOOD_SA, "private_key": PEM.replace("MIIE", "MI\x00IE")}, f"{SA}.private_key", "NUL"),
    ({**GOOD_SA, "private_key": PEM + "A" * 20000}, f"{SA}.private_key", "longer than"),
    ({**GOOD_SA, "private_key": {"pem": PEM}}, f"{SA}.private_key", "must be a string"),
    ({**GOOD_SA, "private_key_id": "kid\r\nX-Evil: 1"}, f"{SA}.private_key_id", "control character"),
    ({**GOOD_SA, "private_key_id": "k" * 300}, f"{SA}.private_key_id", "longer than"),
    ({**GOOD_SA, "project_id": {"deep": [1]}}, f"{SA}.project_id", "must be a string"),
    ({**GOOD_SA, **{f"extra_{i}": "x" for i in range(40)}}, SA, "fields"),
])
def test_a_malformed_service_account_is_a_400_naming_the_field(client, gateway_key, value, param, reason):
    conf = {"provider": "vertex", "credentials": {"project_id": "proj-123456", "region": "us-central1",
                                                  "service_account": value}}
    response = chat(client, gateway_key, model="vertex/gemini-2.5-pro", byok_conf=conf)
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["param"] == param and reason in error["message"], error
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" not in response.get_data(as_text=True)


# -- shared-pool keys from the configuration ---------------------------------------------------------------
@pytest.mark.parametrize("variable, value, extra", [
    ("GATEWAY_OPENAI_SHARED_API_KEY", "sk-good-0001," + CORE[:4] + "\n" + CORE[4:], {}),
    ("GATEWAY_OPENAI_SHARED_API_KEY", CORE + "\x00", {}),
    ("GATEWAY_ANTHROPIC_SHARED_API_KEY", CORE + "é", {}),
    ("GATEWAY_GROQ_SHARED_API_KEY", CORE[:4] + " " + CORE[4:], {}),
    ("GATEWAY_AZURE_SHARED_API_KEY", CORE + "€", {"GATEWAY_AZURE_SHARED_ENDPOINT": "https://shared.openai.azure.com"}),
    ("GATEWAY_AZURE_SHARED_ENDPOINT", "https://127.0.0.1\\@" + CORE + ".openai.azure.com",
     {"GATEWAY_AZURE_SHARED_API_KEY": "az-shared-0001"}),
    ("GATEWAY_VERTEX_SHARED_ACCESS_TOKEN", CORE + "\r\n", {"GATEWAY_VERTEX_SHARED_PROJECT_ID": "platform-proj"}),
    ("GATEWAY_VERTEX_SHARED_REGION", "us-central1/" + CORE,
     {"GATEWAY_VERTEX_SHARED_PROJECT_ID": "platform-proj", "GATEWAY_VERTEX_SHARED_ACCESS_TOKEN": "ya29.ok"}),
    ("GATEWAY_BEDROCK_SHARED_SECRET_ACCESS_KEY", "s1," + CORE[:4] + "\t" + CORE[4:],
     {"GATEWAY_BEDROCK_SHARED_ACCESS_KEY_ID": "AKIASHARED0000000001,AKIASHARED0000000002"}),
])
def test_an_unusable_shared_pool_setting_stops_the_app_naming_the_variable(database_url, variable, value, extra):
    with pytest.raises(ConfigurationError) as info:
        create_app(base_config(database_url, **{variable: value, **extra}))
    message = str(info.value)
    assert message.startswith(variable) and CORE not in message and CORE[:8] not in repr(info.value.args)


def test_clean_shared_pool_settings_start(database_url):
    app = create_app(base_config(database_url, GATEWAY_OPENAI_SHARED_API_KEY=" sk-a-0001 , sk-b-0002 ",
                                 GATEWAY_BEDROCK_SHARED_ACCESS_KEY_ID="AKIASHARED0000000001",
                                 GATEWAY_BEDROCK_SHARED_SECRET_ACCESS_KEY="s1/+x"))
    assert app is not None
    assert [c["api_key"] for c in REGISTRY["openai"].shared_pool()] == ["sk-a-0001", "sk-b-0002"]
    assert REGISTRY["bedrock"].shared_pool()[0]["aws_secret_access_key"] == "s1/+x"
    assert orjson.dumps(REGISTRY["openai"].shared_pool()[0].fields())  # field names only, never values
