"""Keys are never persisted: a canary BYOK key goes through every path, then every sink is swept."""
from __future__ import annotations

import secrets

import openai
import orjson
import pytest

from app.audit import canaries, traffic
from app.billing import journal, metering
from app.gateway.providers import REGISTRY
from tests.canary import LogCapture, assert_none_anywhere, assert_nowhere
from tests.factories import grant
from simulators.server import Fault
from tests.helpers import MESSAGES, byok, chat

CANARY = "sk-canary-" + secrets.token_urlsafe(30)
AZURE_CANARY = "az" + secrets.token_hex(20)


class TestCanarySweep:
    @pytest.fixture
    def app_config(self, app_config):
        return {**app_config, "UPSTREAM_READ_TIMEOUT": 0.5, "UPSTREAM_ATTEMPT_DEADLINE": 1.0}

    def test_canary_key_reaches_no_sink(self, app, client, org, gateway_key, fake_openai, fake_azure, live_server):
        grant(org, "10")
        responses: list[str] = []

        def keep(response):
            headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
            responses.append(headers + "\n" + response.get_data(as_text=True))
            return response

        scenarios = [
            (None, {}),                                             # success
            (None, {"stream": True, "stream_options": {"include_usage": True}}),
            (Fault("status", 401), {}),                             # the fake echoes the key in its body
            (Fault("status", 401), {"stream": True}),
            (Fault("status", 429, headers={"retry-after": "1"}), {}),   # falls back
            (Fault("status", 429), {"byok_conf_fallback": False}),
            (Fault("status", 500), {}),
            (Fault("stall", delay=2.0, after_events=0), {}),        # read timeout, then fallback
            (Fault("malformed"), {}),
            (Fault("malformed"), {"stream": True}),
            (Fault("reset_mid_stream", after_events=2), {"stream": True}),
        ]
        with LogCapture() as logs:
            for fault, extra in scenarios:
                fake_openai.on_key(CANARY, fault)
                fallback = extra.pop("byok_conf_fallback", None)
                conf = byok(CANARY, label="canary-team")
                if fallback is not None:
                    conf["fallback"] = fallback
                keep(chat(client, gateway_key, byok_conf=conf, **extra))
            fake_azure.on_key(AZURE_CANARY, Fault("status", 401, body={"error": {
                "code": "401", "message": f"Access denied: key {AZURE_CANARY} is invalid"}}))
            keep(chat(client, gateway_key, model="gpt-4o", byok_conf={
                "provider": "azure", "credentials": {"api_key": AZURE_CANARY, "endpoint": "https://r.openai.azure.com",
                                                     "api_version": "2024-10-21"}}))
            # a validation error that carries the key
            keep(chat(client, gateway_key, byok_conf={"provider": "openai", "credentials": {"api_key": CANARY, "x": CANARY}}))
            # and over real HTTP with the SDK, where the server's own logging runs too
            sdk = openai.OpenAI(base_url=live_server.url + "/v1", api_key=gateway_key, max_retries=0)
            fake_openai.on_key(CANARY, Fault("status", 401))
            with pytest.raises(openai.AuthenticationError) as info:
                sdk.chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES,
                                            extra_body={"byok_conf": byok(CANARY, fallback=False)})
            responses.append(str(info.value) + str(info.value.response.headers) + info.value.response.text)

        assert sum(1 for r in fake_openai.received if r.headers.get("authorization") == f"Bearer {CANARY}") >= 11
        for canary in (CANARY, AZURE_CANARY):
            assert_nowhere(canary, logs=logs, responses=responses, instance_path=app.instance_path)


def test_sweep_detects_a_leak(app, org):
    """The sweep itself must be able to fail: plant a piece of the canary in the database and in a log."""
    from app import db
    from app.models import AuditLog

    with db.session_scope() as session:
        session.add(AuditLog(org_id=org.id, action="oops", summary=f"key tail {CANARY[-12:]}"))
    with LogCapture() as logs:
        import logging

        logging.getLogger("x").debug("planted")
    with pytest.raises(AssertionError, match="database"):
        assert_nowhere(CANARY, logs=logs, responses=[], instance_path=app.instance_path)
    with pytest.raises(AssertionError, match="responses"):
        assert_nowhere("sk-other-" + "z" * 20, logs=logs, responses=["...zzzzzzzz..."], instance_path=app.instance_path)


# -- every provider, every secret field, plain and mangled ------------------------------------------------
@pytest.fixture(scope="module")
def audit_simulators():
    """The built-in simulators, knowing a canary key per provider × secret field × mangling."""
    pem = canaries.new_private_key_pem()
    probes = canaries.probes(pem)
    fakes, settings = traffic.simulators(probes, pem)
    running = traffic.servers(fakes)
    for fake in running:
        fake.start()
    yield probes, fakes, settings
    for fake in running:
        fake.stop()


def test_probes_cover_every_provider_and_secret_field(audit_simulators):
    probes, _, _ = audit_simulators
    assert canaries.unclassified_fields() == set(), "classify each credential field as secret or identifying"
    covered = {(p.provider, p.field, p.mangle) for p in probes}
    wanted = {(provider_id, name, mangle) for provider_id in REGISTRY for name in canaries.secret_fields(provider_id)
              for mangle in canaries.MANGLES}
    assert covered == wanted
    assert {p.provider for p in probes} == set(REGISTRY)
    assert {"trailing newline", "trailing CRLF", "leading space", "NUL", "tab", "non-ASCII", "5000 characters",
            "quote", "backslash"} < set(canaries.MANGLES)


class TestEveryProviderAndMangledKey:
    @pytest.fixture
    def app_config(self, app_config, audit_simulators):
        _, _, settings = audit_simulators
        return {**app_config, **settings, "METERING_MODE": "journal", "METERING_JOURNAL_DIR": "journal",
                "GATEWAY_AZURE_ALLOWED_HOSTS": "*.openai.azure.com"}

    def test_no_canary_reaches_any_sink(self, app, client, gateway_key, audit_simulators, monkeypatch):
        """Database, logs at DEBUG from every logger, journal lines, instance files, answers: zero hits.

        Only "no leak" is asserted: what status a mangled key gets is the edge validation's business."""
        probes, fakes, _ = audit_simulators
        journal_lines: list[bytes] = []
        append = journal.Segment.append

        def tee(segment, line: bytes) -> None:
            journal_lines.append(line)
            append(segment, line)

        monkeypatch.setattr(journal.Segment, "append", tee)

        def send(body):
            response = client.post("/v1/chat/completions", data=orjson.dumps(body),
                                   headers={"Authorization": f"Bearer {gateway_key}"})
            return response.status_code, dict(response.headers), response.get_data(as_text=True)

        with LogCapture() as logs:
            answers = traffic.exercise(probes, fakes, send)
            assert metering.flush(30)

        plain = {p.provider + "." + p.field: a[0] for p, scenario, a in answers
                 if p.mangle == "plain" and scenario == "answer"}
        assert set(plain.values()) == {200}, plain  # the keys really reached the simulators: the sweep is not vacuous
        assert journal_lines, "nothing went through the usage journal: its sweep would be vacuous"
        named = dict(named for p in probes for named in p.named_secrets())
        assert_none_anywhere(named, logs=logs, responses=[traffic.answer_text(a) for _, _, a in answers],
                             instance_path=app.instance_path, journal=journal_lines)
