"""Caller-supplied text, checked once at the edge: what may reach a header, a URL, a log line or the database.

Every check answers with the *reason* a value is unusable, never with the value
itself: the value may be a secret (a provider key pasted with a trailing
newline) or hostile (a NUL that PostgreSQL refuses, a line break that splits a
header). Callers turn the reason into their own 400 naming the field.
"""
from __future__ import annotations

import re
from typing import Any

# C0 controls and DEL; tab, LF and CR are allowed only where a value may span lines.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_EXCEPT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# A header-bound secret: printable ASCII without spaces (RFC 9110 field-value, minus what no key contains).
_SECRET = re.compile(r"[\x21-\x7e]+")

MAX_SECRET = 4096


class TextRejected(ValueError):
    """A caller-supplied string that must not go further; `reason` never contains the value."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def text_problem(value: str, max_length: int, *, multiline: bool = False) -> str | None:
    """Why `value` may not be stored or logged as text, or None when it may."""
    if len(value) > max_length:
        return f"is longer than {max_length} characters"
    if "\x00" in value:
        return "contains a NUL character"
    pattern = _CONTROL_EXCEPT_WHITESPACE if multiline else _CONTROL
    if pattern.search(value):
        return "contains a control character"
    if _has_lone_surrogate(value):
        return "is not valid Unicode"
    return None


def check_text(value: str, max_length: int, *, multiline: bool = False) -> str:
    """`value` unchanged, or TextRejected with the reason."""
    problem = text_problem(value, max_length, multiline=multiline)
    if problem:
        raise TextRejected(problem)
    return value


def secret_problem(value: str, max_length: int = MAX_SECRET) -> str | None:
    """Why `value` cannot be sent as a credential in an HTTP header, or None when it can."""
    if not value:
        return "is empty"
    if len(value) > max_length:
        return f"is longer than {max_length} characters"
    if _SECRET.fullmatch(value):
        return None
    if value != value.strip():
        return "has leading or trailing whitespace (a line break copied with the key?)"
    if not value.isascii():
        return "contains non-ASCII characters"
    return "contains spaces or control characters"


def check_secret(value: str, max_length: int = MAX_SECRET) -> str:
    problem = secret_problem(value, max_length)
    if problem:
        raise TextRejected(problem)
    return value


def nesting_problem(value: Any, max_depth: int) -> str | None:
    """Why a parsed JSON value is nested too deeply to be handled safely, or None when it is not.

    orjson encodes at most ~250 levels and decodes at most 1024: a bound well below
    both means no value that passed the edge can fail to round-trip later.
    """
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return f"is nested more than {max_depth} levels deep"
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return None


def _has_lone_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
