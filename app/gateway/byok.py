"""Parse `byok_conf` into in-memory credentials. Nothing here is ever stored or logged.

Every value is checked here, at the edge, before anything is built from it: a
credential bound for an HTTP header must be a clean secret (app.validation),
the label is recorded so it must be clean text, and each provider checks the
fields that shape its URLs. A refusal names the field and never quotes a value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.gateway.errors import InvalidRequest
from app.gateway.providers import REGISTRY
from app.gateway.providers.base import Credentials, Provider, require_fields
from app.validation import secret_problem, text_problem

MAX_ENTRIES = 8
MAX_LABEL = 64
_ECHO = 40  # at most this much of a caller's name is quoted back, and only when it is clean text


@dataclass(slots=True, repr=False)
class ByokEntry:
    provider: str
    fallback: bool | None  # None: not said, the organization's default applies
    credentials: Credentials
    label: str
    where: str = "byok_conf"  # how errors name this entry: byok_conf, or byok_conf[i] in an array

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
    unknown = sorted(set(item) - {"provider", "fallback", "credentials", "label"}, key=str)
    if unknown:
        quoted = _quoted(unknown[0])
        raise InvalidRequest(f"'{where}' has an unknown field{quoted}",
                             param=f"{where}.{unknown[0]}" if quoted else where)
    provider = _provider(item.get("provider"), where)
    fallback = item.get("fallback")
    if fallback is not None and not isinstance(fallback, bool):
        raise InvalidRequest(f"'{where}.fallback' must be a boolean", param=f"{where}.fallback")
    label = _label(item.get("label"), where)
    raw = item.get("credentials")
    if not isinstance(raw, dict):
        raise InvalidRequest(f"'{where}.credentials' is required and must be an object", param=f"{where}.credentials")
    allowed = set(provider.required_credentials) | set(provider.optional_credentials)
    extra = sorted(set(raw) - allowed, key=str)
    if extra:
        raise InvalidRequest(
            f"'{where}.credentials' has an unknown field{_quoted(extra[0])} for provider '{provider.id}'",
            param=f"{where}.credentials",
        )
    _check_header_fields(provider, raw, where)
    creds = Credentials(raw)
    try:
        require_fields(provider, creds)
        provider.check_credentials(creds, config)
    except InvalidRequest as exc:
        raise exc.about_entry(where)
    return ByokEntry(provider=provider.id, fallback=fallback, credentials=creds, label=label, where=where)


def _provider(provider_id: Any, where: str) -> Provider:
    if not isinstance(provider_id, str) or not provider_id:
        raise InvalidRequest(f"'{where}.provider' is required and must be a string", param=f"{where}.provider")
    provider = REGISTRY.get(provider_id)
    if provider is None:
        raise InvalidRequest(f"'{where}.provider' names an unknown provider{_quoted(provider_id)}; known: "
                             f"{', '.join(sorted(REGISTRY))}", param=f"{where}.provider")
    return provider


def _label(label: Any, where: str) -> str:
    """The one thing about a key that is recorded: clean text, at most MAX_LABEL characters."""
    if label is None:
        return ""
    if not isinstance(label, str):
        raise InvalidRequest(f"'{where}.label' must be a string", param=f"{where}.label")
    problem = text_problem(label, MAX_LABEL)
    if problem:
        if problem.startswith("is longer"):
            problem = f"must be a string of at most {MAX_LABEL} characters"
        raise InvalidRequest(f"'{where}.label' {problem}", param=f"{where}.label")
    return label


def _check_header_fields(provider: Provider, raw: dict[str, Any], where: str) -> None:
    """Each credential that will travel in an HTTP header is a string fit for one, or a 400 naming it."""
    for name in provider.header_credentials:
        value = raw.get(name)
        if value is None:
            continue
        param = f"{where}.credentials.{name}"
        problem = secret_problem(value) if isinstance(value, str) else "must be a string"
        if problem:
            raise InvalidRequest(f"'{param}' {problem}", param=param)


def _quoted(name: Any) -> str:
    """` 'name'` when a caller's name is short clean text, else nothing: a message never carries raw input."""
    text = str(name)
    return f" '{text}'" if text_problem(text, _ECHO) is None else ""
