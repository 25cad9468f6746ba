"""Parse `byok_conf` into in-memory credentials. Nothing here is ever stored or logged."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.gateway.errors import InvalidRequest
from app.gateway.providers import REGISTRY
from app.gateway.providers.base import Credentials, require_fields

MAX_ENTRIES = 8
MAX_LABEL = 64


@dataclass(slots=True, repr=False)
class ByokEntry:
    provider: str
    fallback: bool | None  # None: not said, the organization's default applies
    credentials: Credentials
    label: str

    def __repr__(self) -> str:
        return f"ByokEntry(provider={self.provider!r}, label={self.label!r})"


def parse_byok_conf(value: Any, config: dict[str, Any]) -> list[ByokEntry]:
    if value is None:
        return []
    if isinstance(value, dict):
        items, many = [value], False
    elif isinstance(value, list):
        items, many = value, True
        if not items:
            raise InvalidRequest("'byok_conf' array must not be empty", param="byok_conf")
        if len(items) > MAX_ENTRIES:
            raise InvalidRequest(f"'byok_conf' may list at most {MAX_ENTRIES} keys", param="byok_conf")
    else:
        raise InvalidRequest("'byok_conf' must be an object or an array of objects", param="byok_conf")
    return [_entry(item, f"byok_conf[{i}]" if many else "byok_conf", config) for i, item in enumerate(items)]


def _entry(item: Any, where: str, config: dict[str, Any]) -> ByokEntry:
    if not isinstance(item, dict):
        raise InvalidRequest(f"'{where}' must be an object", param=where)
    unknown = sorted(set(item) - {"provider", "fallback", "credentials", "label"})
    if unknown:
        raise InvalidRequest(f"'{where}' has an unknown field '{unknown[0]}'", param=f"{where}.{unknown[0]}")
    provider_id = item.get("provider")
    if not isinstance(provider_id, str) or not provider_id:
        raise InvalidRequest(f"'{where}.provider' is required and must be a string", param=f"{where}.provider")
    provider = REGISTRY.get(provider_id)
    if provider is None:
        raise InvalidRequest(
            f"'{where}.provider' names an unknown provider '{provider_id[:40]}'; known: {', '.join(sorted(REGISTRY))}",
            param=f"{where}.provider",
        )
    fallback = item.get("fallback")
    if fallback is not None and not isinstance(fallback, bool):
        raise InvalidRequest(f"'{where}.fallback' must be a boolean", param=f"{where}.fallback")
    label = item.get("label", "")
    if label is None:
        label = ""
    if not isinstance(label, str) or len(label) > MAX_LABEL:
        raise InvalidRequest(f"'{where}.label' must be a string of at most {MAX_LABEL} characters", param=f"{where}.label")
    raw = item.get("credentials")
    if not isinstance(raw, dict):
        raise InvalidRequest(f"'{where}.credentials' is required and must be an object", param=f"{where}.credentials")
    allowed = set(provider.required_credentials) | set(provider.optional_credentials)
    extra = sorted(set(raw) - allowed)
    if extra:
        raise InvalidRequest(
            f"'{where}.credentials' has an unknown field '{extra[0][:40]}' for provider '{provider_id}'",
            param=f"{where}.credentials",
        )
    creds = Credentials(raw)
    try:
        require_fields(provider, creds)
        provider.check_credentials(creds, config)
    except InvalidRequest as exc:
        exc.message = exc.message.replace("byok_conf", where, 1)
        exc.param = (exc.param or "").replace("byok_conf", where, 1)
        exc.args = (exc.message,)
        raise
    return ByokEntry(provider=provider_id, fallback=fallback, credentials=creds, label=label)
