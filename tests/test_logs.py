"""Logging that cannot leak: quiet third-party loggers, every record scrubbed, tracebacks without messages."""
from __future__ import annotations

import http.client
import logging
import re
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import create_app, logs
from simulators.vertex import FakeVertex
from tests.canary import Canaries, LogCapture
from tests.helpers import chat

# Random letters and digits, no credential shape at all: only never logging the message keeps them out.
SHAPELESS = "zq" + secrets.token_hex(16)
KEYLIKE = "sk-canary-" + secrets.token_urlsafe(24)


def leaked(text: str, *canaries: str) -> set[str]:
    return Canaries({c: c for c in canaries}).found_in(text)


# -- the unexpected-exception handler ------------------------------------------------------------------
def boom():
    raise ValueError(f"Invalid header value b'Bearer {KEYLIKE}\\n'", SHAPELESS)


def chained():
    try:
        boom()
    except ValueError as exc:
        raise RuntimeError(f"while sending {SHAPELESS}") from exc


@pytest.mark.parametrize("path", ["/v1/boom", "/dashboard-boom", "/v1/chained"])
def test_an_unexpected_exception_logs_type_request_id_and_frames_never_its_message(app, path):
    app.add_url_rule("/v1/boom", "boom_v1", boom)
    app.add_url_rule("/dashboard-boom", "boom_page", boom)
    app.add_url_rule("/v1/chained", "chained", chained)
    with LogCapture() as captured:
        response = app.test_client().get(path)
    text = captured.text()
    assert response.status_code == 500
    assert leaked(text + response.get_data(as_text=True), SHAPELESS, KEYLIKE) == set()
    request_id = response.headers["X-Request-Id"]
    error = next(line for line in captured.lines if line.startswith("ERROR app.errors unhandled"))
    assert request_id in error and ("RuntimeError" if "chained" in path else "ValueError") in error
    assert re.search(r'File ".*test_logs\.py", line \d+, in boom', text)
    if "chained" in path:
        assert re.search(r'File ".*test_logs\.py", line \d+, in chained', text)


def test_frames_keep_each_chained_type_and_frame_but_no_message():
    try:
        chained()
    except RuntimeError as exc:
        text = logs.frames(exc)
    assert leaked(text, SHAPELESS, KEYLIKE) == set()
    assert text.splitlines()[0].startswith("ValueError (message withheld")
    assert "RuntimeError (message withheld" in text
    assert re.search(r"line \d+, in boom", text) and re.search(r"line \d+, in chained", text)


# -- the record scrubber -------------------------------------------------------------------------------
TOKEN = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", min_size=24, max_size=60)
SHAPES = [
    "Authorization: Bearer {t}", "'authorization': 'Bearer {t}'", "{{'api-key': '{t}'}}", "x-goog-api-key: {t}",
    "X-Api-Key={t}", "GET /v1beta/models/gemini:generateContent?key={t}&alt=sse", "POST /x?alt=sse&key={t}",
    "x-amz-security-token:{t}", "X-Amz-Signature={t}", '"aws_secret_access_key": "{t}"',
    "Authorization: AWS4-HMAC-SHA256 Credential=AKIA/x, SignedHeaders=host, Signature={t}",
    "sk-{t}", "sk-ant-api03-{t}", "AIza{t}", "ya29.{t}", "key kw-{t} used", "IQoJb3JpZ2luX2Vj{t}",
    "eyJhbGciOiJSUzI1NiJ9.eyJ{t}.{t}", "-----BEGIN PRIVATE KEY-----\n{t}\n{t}\n-----END PRIVATE KEY-----",
    "-----BEGIN RSA PRIVATE KEY-----\\n{t}", "ValueError: Invalid header value b'Bearer {t}\\n'",
]


@settings(max_examples=150, deadline=None)
@given(shape=st.sampled_from(SHAPES), token=TOKEN, before=st.text(max_size=20), after=st.sampled_from(["", " ok", "\n"]))
def test_every_credential_shape_is_redacted_whatever_surrounds_it(shape, token, before, after):
    text = before + " " + shape.format(t=token) + after
    assert token not in logs.redact(text)
    assert token[:12] not in logs.redact(text)


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=80))
def test_ordinary_text_is_left_alone(text):
    triggers = re.compile(r"(?i)bearer|basic|aws4|key|token|secret|signature|password|auth|cookie|sk|eyJ|AIza|ya29"
                          r"|BEGIN|AKIA|ASIA|IQoJ|FwoG|FQoG|kw|pk|rk|fw|xai|gsk|sig|code|api|credential")
    plain = text
    while triggers.search(plain):  # until no trigger word is left, even one that a removal put together
        plain = triggers.sub("", plain)
    assert logs.redact(plain) == plain


def test_a_record_with_a_key_in_its_arguments_is_written_redacted():
    with LogCapture() as captured:
        logging.getLogger("app.some.module").info("calling upstream with %s", {"Authorization": f"Bearer {KEYLIKE}"})
        logging.getLogger("app.some.module").warning("failed: %r", ValueError(f"bad key {KEYLIKE}"))
    assert leaked(captured.text(), KEYLIKE) == set()
    assert "calling upstream with {'Authorization': '[redacted]'}" in captured.text()


def test_a_traceback_outside_the_request_loggers_keeps_its_message_redacted():
    with LogCapture() as captured:
        try:
            raise ConnectionError(f"journal replay failed near {KEYLIKE}")
        except ConnectionError:
            logging.getLogger("app.billing.journal").exception("replay postponed")
    assert leaked(captured.text(), KEYLIKE) == set()
    assert "ConnectionError: journal replay failed near [redacted]" in captured.text()


# -- quiet libraries -----------------------------------------------------------------------------------
def test_chatty_libraries_stay_at_warning_whatever_log_level_says(app_config):
    for name in logs.QUIET:
        logging.getLogger(name).setLevel(logging.DEBUG)
    http.client.HTTPConnection.debuglevel = 1
    create_app({**app_config, "LOG_LEVEL": "DEBUG"})
    assert logging.getLogger().level == logging.DEBUG
    for name in (*logs.QUIET, "urllib3.connectionpool", "botocore.auth", "google.auth.transport.requests"):
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING, name
    assert http.client.HTTPConnection.debuglevel == 0
    create_app({**app_config, "LOG_LEVEL": "ERROR"})
    assert logging.getLogger("urllib3").getEffectiveLevel() == logging.ERROR


def test_quiet_loggers_lowered_again_by_someone_are_withheld_below_warning(app):
    with LogCapture() as captured:  # lowers every logger to DEBUG, urllib3 and botocore included
        logging.getLogger("urllib3.connectionpool").debug('http://h:1 "POST /v1/projects/%s HTTP/1.1" 200', SHAPELESS)
        logging.getLogger("botocore.auth").debug("CanonicalRequest:\nx-amz-security-token:%s", SHAPELESS)
        logging.getLogger("urllib3.connectionpool").warning("Connection pool is full, discarding connection: h")
    assert leaked(captured.text(), SHAPELESS) == set()
    assert "DEBUG urllib3.connectionpool urllib3.connectionpool output below WARNING withheld" in captured.text()
    assert "WARNING urllib3.connectionpool Connection pool is full" in captured.text()


# -- what the finding was: URL fields in DEBUG logs ----------------------------------------------------
@pytest.fixture(scope="module")
def _vertex_server():
    fake = FakeVertex().start()
    yield fake
    fake.stop()


@pytest.fixture
def app_config(app_config, _vertex_server):
    return {**app_config, "GATEWAY_VERTEX_BASE_URL": _vertex_server.url, "LOG_LEVEL": "DEBUG"}


def test_debug_logs_carry_no_azure_deployment_or_api_version_nor_vertex_project(app, client, gateway_key,
                                                                                _vertex_server):
    # An API version must look like one (YYYY-MM-DD[-preview]); a random far-future date is still a canary.
    version = f"{2100 + secrets.randbelow(800)}-{1 + secrets.randbelow(12):02d}-{1 + secrets.randbelow(28):02d}-preview"
    deployment, project = "dep" + secrets.token_hex(8), "proj" + secrets.token_hex(8)
    token = "ya29." + secrets.token_urlsafe(30)
    _vertex_server.accept_token(token)
    with LogCapture() as captured:
        azure = chat(client, gateway_key, model="gpt-4o", byok_conf={"provider": "azure", "credentials": {
            "api_key": "az" + secrets.token_hex(16), "endpoint": "https://res.openai.azure.com",
            "api_version": version, "deployment": deployment}})
        vertex = chat(client, gateway_key, model="vertex/gemini-2.5-pro", byok_conf={"provider": "vertex", "credentials": {
            "project_id": project, "region": "us-central1", "access_token": token}})
    assert (azure.status_code, vertex.status_code) == (200, 200)
    assert leaked(captured.text(), deployment, version, project, token) == set()
    assert "urllib3" in captured.text()  # urllib3 did speak, and was withheld
