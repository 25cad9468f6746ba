"""The shape of a Google service-account key, checked before google-auth (or a log line) ever sees it.

Only the fields a token exchange uses are kept; `token_uri` and `universe_domain`
are dropped, so a key file cannot choose where the gateway posts or how it signs.
"""
from __future__ import annotations

import re
from typing import Any

import orjson

from app.gateway.errors import InvalidRequest
from app.validation import text_problem

MAX_FIELDS = 32
MAX_JSON = 64 * 1024
MAX_PRIVATE_KEY = 16 * 1024
MAX_EMAIL = 254
MAX_ID = 256
MAX_OTHER = 2048
USED = ("type", "client_email", "private_key", "private_key_id", "project_id", "client_id")
_EMAIL = re.compile(r"[^@\s]{1,64}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,63}")


def service_account_info(value: Any, where: str) -> dict[str, str]:
    """The used fields of a service-account key given as an object (or its JSON text), or a 400 naming the field."""
    if isinstance(value, str) and len(value) <= MAX_JSON:
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{where}' must be the JSON key object of a service account", param=where)
    if len(value) > MAX_FIELDS:
        raise InvalidRequest(f"'{where}' has more than {MAX_FIELDS} fields", param=where)
    if value.get("type") != "service_account":
        raise InvalidRequest(f"'{where}' must be a JSON key object with \"type\": \"service_account\"", param=where)
    for name, item in value.items():
        _check_field(name, item, where)
    for name in ("client_email", "private_key"):
        if not value.get(name):
            raise InvalidRequest(f"'{where}.{name}' is required", param=f"{where}.{name}")
    if not _EMAIL.fullmatch(value["client_email"]):
        raise InvalidRequest(f"'{where}.client_email' is not an e-mail address", param=f"{where}.client_email")
    key = value["private_key"]
    if "-----BEGIN " not in key or "PRIVATE KEY-----" not in key or "-----END " not in key:
        raise InvalidRequest(f"'{where}.private_key' is not a PEM private key", param=f"{where}.private_key")
    return {name: value[name] for name in USED if name in value}


def _check_field(name: Any, item: Any, where: str) -> None:
    if text_problem(name, 64):
        raise InvalidRequest(f"'{where}' has a field name that is not short clean text", param=where)
    param = f"{where}.{name}"
    if not isinstance(item, str):
        raise InvalidRequest(f"'{param}' must be a string", param=param)
    limit = {"private_key": MAX_PRIVATE_KEY, "client_email": MAX_EMAIL}.get(name, MAX_ID if name in USED else MAX_OTHER)
    problem = text_problem(item, limit, multiline=name == "private_key")
    if problem:
        raise InvalidRequest(f"'{param}' {problem}", param=param)
