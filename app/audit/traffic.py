"""The audit's traffic: the built-in simulators set up to know the canary keys, and every probe sent through Keyway.

The simulators are the provider fakes of the `simulators` package (installed
with Keyway): they speak each provider's real wire format, and their error
bodies echo the caller's key as real providers do, which is the hardest case
for a gateway that must never pass a key on.
"""
from __future__ import annotations

from typing import Any, Callable

from app.audit.canaries import SA_EMAIL, Probe
from app.gateway.providers import REGISTRY

# (status, headers, body) of one answer
Answer = tuple[int, dict[str, str], str]
Send = Callable[[dict[str, Any]], Answer]

MESSAGES = [{"role": "user", "content": "Keyway key audit: say hello."}]
STREAM = {"stream": True, "stream_options": {"include_usage": True}}


def simulators(probes: list[Probe], private_key_pem: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The simulators (not started yet) by provider id, knowing every probe's key, and the settings pointing at them."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from app.demo_server import OPENAI_COMPATIBLE, simulated_providers

    fakes, env = simulated_providers()
    by_provider: dict[str, Any] = {}
    for provider_id in REGISTRY:
        if provider_id in OPENAI_COMPATIBLE:
            by_provider[provider_id] = next(f for f in fakes if f.name == "openai" and f.flavor == "openai")
        elif provider_id == "azure":
            by_provider[provider_id] = next(f for f in fakes if f.name == "openai" and f.flavor == "azure")
        else:
            by_provider[provider_id] = next(f for f in fakes if f.name == provider_id)
    vertex, bedrock = by_provider["vertex"], by_provider["bedrock"]
    vertex.register_service_account(SA_EMAIL, load_pem_private_key(private_key_pem.encode(), None).public_key())
    for probe in probes:
        creds = probe.credentials
        if probe.provider == "bedrock":
            bedrock.add_key(creds["aws_access_key_id"], creds["aws_secret_access_key"], creds.get("aws_session_token"))
        elif probe.provider == "vertex" and "access_token" in creds:
            vertex.accept_token(creds["access_token"])
    return by_provider, env


def servers(fakes: dict[str, Any]) -> list[Any]:
    """Each simulator once (the OpenAI-compatible providers share one)."""
    return list({id(fake): fake for fake in fakes.values()}.values())


def catalog_models() -> dict[str, str]:
    """One catalogued model per provider, so that every probe is an ordinary, priced request."""
    from app.billing.pricing import load_catalog

    models: dict[str, str] = {}
    for entry in load_catalog()["models"]:
        models.setdefault(entry["provider"], entry["model"])
    return models


def exercise(probes: list[Probe], fakes: dict[str, Any], send: Send) -> list[tuple[Probe, str, Answer]]:
    """Send every probe; plain keys also stream and meet upstream errors that echo them. Returns what came back."""
    from simulators.server import Fault

    models = catalog_models()
    answers = []
    for probe in probes:
        body = {"model": f"{probe.provider}/{models.get(probe.provider, 'keyway-audit-model')}", "messages": MESSAGES,
                "max_tokens": 16, "byok_conf": probe.byok_conf}
        scenarios: list[tuple[str, dict[str, Any], Any]] = [("answer", {}, None)]
        if probe.mangle == "plain":
            scenarios.append(("stream", STREAM, None))
            if probe.fake_credential is not None:
                scenarios += [("401 echoing the key", {}, Fault("status", 401)),
                              ("401 echoing the key, streamed", STREAM, Fault("status", 401)),
                              ("429 echoing the key", {}, Fault("status", 429))]
        fake = fakes[probe.provider]
        for scenario, extra, fault in scenarios:
            if fault is not None:
                fake.on_key(probe.fake_credential, fault)
            try:
                answers.append((probe, scenario, send({**body, **extra})))
            finally:
                if fault is not None:
                    fake.on_key(probe.fake_credential, None)
    return answers


def answer_text(answer: Answer) -> str:
    status, headers, body = answer
    return f"{status}\n" + "\n".join(f"{k}: {v}" for k, v in headers.items()) + "\n\n" + body
