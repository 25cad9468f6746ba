"""A UsageEvent as one line of JSON: the journal's line format, and how the quarantine keeps an event.

Strings are escaped, never raw: a NUL, a line break or any other control
character inside a model name or a label stays inside its JSON string, so a
line is always one line and the text can be stored in a database column that
refuses NUL. A lone surrogate, which orjson refuses, falls back to the
standard library's ASCII-only encoding; decoding accepts both.
"""
from __future__ import annotations

import json
from dataclasses import asdict, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from app.billing.events import AttemptEvent, UsageEvent

EVENT_FIELDS = frozenset(f.name for f in fields(UsageEvent))


def encode(event: UsageEvent) -> bytes:
    """The event as one JSON line, ending in a newline."""
    try:
        return orjson.dumps(event, default=_default) + b"\n"
    except TypeError:
        return json.dumps(asdict(event), default=_default, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot journal {type(value).__name__}")


def decode(line: bytes | str) -> UsageEvent:
    """The event of one line; ValueError, TypeError or KeyError if the line is not one."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        data = json.loads(line)
    data["created_at"] = datetime.fromisoformat(data["created_at"])
    for name in ("charge", "reserved"):
        data[name] = Decimal(data[name])
    data["cost"] = Decimal(data["cost"]) if data["cost"] is not None else None
    data["attempts"] = [AttemptEvent(**a) for a in data["attempts"]]
    return UsageEvent(**data)


def encode_for_keeping(event: UsageEvent) -> str:
    """encode(), or, for an event holding a value JSON cannot carry, its plain fields and the names of the others.

    Such an event can be inspected but not decoded again (the extra key
    makes decode() refuse it), so a retry never records a stand-in value.
    Only UsageEvent's own fields are ever kept.
    """
    try:
        return encode(event).decode().rstrip("\n")
    except TypeError:
        pass
    kept: dict[str, Any] = {}
    dropped = []
    for name in sorted(EVENT_FIELDS):
        value = getattr(event, name, None)
        if value is None or isinstance(value, (str, int, float, bool, Decimal, datetime)):
            kept[name] = value
        else:
            dropped.append(name)
    kept["unencodable"] = dropped
    return json.dumps(kept, default=_default, ensure_ascii=True, separators=(",", ":"))
