"""Canary credentials: for every provider and every secret field, a fresh random value, plain and mangled.

Each probe carries one random value that exists nowhere else, so a hit anywhere
names the probe (provider, field, mangling) that leaked. The mangled variants
are what careless callers really send: a key pasted with its line break, a
stray space, a byte that breaks a header.
"""
from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from typing import Any, Callable

from app.gateway.providers import REGISTRY

# Credential fields whose value is a secret: never stored, logged or echoed, in any form.
SECRET_FIELDS = frozenset({"api_key", "access_token", "service_account", "aws_access_key_id",
                           "aws_secret_access_key", "aws_session_token"})
# Fields that shape the upstream URL or name the caller's account: not keys, yet they stay out of logs too.
IDENTIFYING_FIELDS = frozenset({"endpoint", "api_version", "deployment", "project_id", "region", "organization",
                                "project"})


def _middle(insert: str) -> Callable[[str], str]:
    return lambda value: value[:len(value) // 2] + insert + value[len(value) // 2:]


MANGLES: dict[str, Callable[[str], str]] = {
    "plain": lambda value: value,
    "trailing newline": lambda value: value + "\n",
    "trailing CRLF": lambda value: value + "\r\n",
    "leading space": lambda value: " " + value,
    "NUL": _middle("\x00"),
    "tab": _middle("\t"),
    "non-ASCII": _middle("é"),
    "5000 characters": lambda value: (value * (5000 // len(value) + 1))[:5000],
    "quote": _middle('"'),
    "backslash": _middle("\\"),
}
AUDIT_LABEL = "keyway-audit"
SA_EMAIL = "keyway-audit@keyway-audit.iam.gserviceaccount.com"
AZURE_ENDPOINT = "https://keyway-audit.openai.azure.com"


@dataclass
class Probe:
    """One canary request: `byok_conf` to send, and the secret values a sweep must never find."""

    provider: str
    field: str
    mangle: str
    byok_conf: dict[str, Any]
    secrets: dict[str, str]  # credential field -> the value sent
    fake_credential: str | None = None  # how the simulator recognises this key (to script an echoing error)

    @property
    def name(self) -> str:
        return f"{self.provider}.{self.field} ({self.mangle})"

    @property
    def credentials(self) -> dict[str, Any]:
        return self.byok_conf["credentials"]

    def named_secrets(self) -> list[tuple[str, str]]:
        """(what a hit is called, value) for every secret this probe sends."""
        return [(self.name if name == self.field else f"{self.provider}.{name} (sent with {self.name})", value)
                for name, value in self.secrets.items()]


def secret_fields(provider_id: str) -> list[str]:
    provider = REGISTRY[provider_id]
    return [name for name in (*provider.required_credentials, *provider.optional_credentials) if name in SECRET_FIELDS]


def unclassified_fields() -> set[str]:
    """Credential fields of registered providers that are neither secret nor identifying (should be empty)."""
    names = {name for p in REGISTRY.values() for name in (*p.required_credentials, *p.optional_credentials)}
    return names - SECRET_FIELDS - IDENTIFYING_FIELDS


def _random(length: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _aws_key_id() -> str:
    return "AKIA" + _random(16, string.ascii_uppercase + string.digits)


def base_credentials(provider_id: str) -> dict[str, Any]:
    """Fresh, valid-looking credentials for `provider_id`: each secret a new random value."""
    if provider_id == "azure":
        return {"api_key": _random(32), "endpoint": AZURE_ENDPOINT, "api_version": "2024-10-21",
                "deployment": "keyway-audit-deployment"}
    if provider_id == "anthropic":
        return {"api_key": "sk-ant-api03-" + _random(40)}
    if provider_id == "gemini":
        return {"api_key": "AIza" + _random(35)}
    if provider_id == "vertex":
        return {"project_id": "keyway-audit-project", "region": "us-central1", "access_token": "ya29." + _random(60)}
    if provider_id == "bedrock":
        return {"aws_access_key_id": _aws_key_id(), "aws_secret_access_key": _random(40),
                "aws_session_token": "IQoJb3JpZ2luX2Vj" + _random(120), "region": "us-east-1"}
    return {"api_key": "sk-" + _random(40)}


def service_account(private_key_pem: str) -> dict[str, Any]:
    return {"type": "service_account", "project_id": "keyway-audit-project", "private_key_id": _random(40),
            "private_key": private_key_pem, "client_email": SA_EMAIL, "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token"}


def probe(provider_id: str, secret_field: str, mangle: str, private_key_pem: str) -> Probe:
    """One probe: fresh credentials with `secret_field` mangled."""
    creds = base_credentials(provider_id)
    if secret_field == "service_account":
        del creds["access_token"]
        account = service_account(private_key_pem)
        account["private_key"] = MANGLES[mangle](private_key_pem)
        creds["service_account"] = account
        hunted = {"service_account": private_key_pem, "service_account.private_key_id": account["private_key_id"]}
    else:
        creds[secret_field] = MANGLES[mangle](creds[secret_field])
        hunted = {name: str(creds[name]) for name in secret_fields(provider_id) if name in creds}
    conf = {"provider": provider_id, "fallback": False, "label": AUDIT_LABEL, "credentials": creds}
    made = Probe(provider_id, secret_field, mangle, conf, hunted)
    made.fake_credential = _seen_by_fake(provider_id, creds)
    return made


def _seen_by_fake(provider_id: str, creds: dict[str, Any]) -> str | None:
    if provider_id == "bedrock":
        return creds["aws_access_key_id"]
    return creds.get("access_token") or creds.get("api_key")


def probes(private_key_pem: str, mangles: tuple[str, ...] = tuple(MANGLES)) -> list[Probe]:
    """Every registered provider × every secret field × every mangling."""
    return [probe(provider_id, name, mangle, private_key_pem)
            for provider_id in REGISTRY for name in secret_fields(provider_id) for mangle in mangles]


def new_private_key_pem() -> str:
    """A throwaway RSA key for the service-account probes (the simulator verifies its signatures)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()
