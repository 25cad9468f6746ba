"""The edge check: every request's path, query arguments and form fields, before any view, CSRF check or query.

What passes is well-formed text: valid UTF-8 behind well-formed percent-escapes,
no NUL or control character (tab, CR and LF only in multi-line form fields),
each within a length bound. What fails is a 400 naming the parameter and the
reason (app.validation), never the value: the value may be a password, and a
NUL would otherwise reach PostgreSQL as an error. Views still check what each
parameter means (its format, its column width); this only guarantees that
whatever a view reads is text it can safely compare, store, log or render.
"""
from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes, urlsplit

from flask import Flask, abort, request

from app.errors import wants_json
from app.gateway.errors import InvalidRequest
from app.validation import text_problem

MAX_PATH = 2048
MAX_NAME = 100
MAX_QUERY_VALUE = 2048
MAX_FORM_VALUE = 10_000
MAX_PARAMS = 100
MAX_FORM_FIELDS = 500
# Form fields typed into a <textarea>: the only values where tab, CR and LF are text.
MULTILINE_FIELDS = frozenset({"reason"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class _Refused(Exception):
    def __init__(self, message: str, param: str | None):
        super().__init__(message)
        self.message, self.param = message, param


def register(app: Flask) -> None:
    app.before_request(check_request)


def check_request() -> None:
    """Refuse the request with a 400 if any part a caller wrote is not acceptable text."""
    try:
        _check_path(request.environ)
        _check_pairs("query parameter", _raw_pairs(request.environ.get("QUERY_STRING", ""), "query parameter"),
                     MAX_QUERY_VALUE, MAX_PARAMS)
        if request.mimetype in FORM_TYPES:
            _check_pairs("form field", _form_pairs(), MAX_FORM_VALUE, MAX_FORM_FIELDS, MULTILINE_FIELDS)
    except _Refused as refusal:
        if wants_json():
            raise InvalidRequest(refusal.message, param=refusal.param) from None
        abort(400, description=refusal.message)


def _check_path(environ: dict) -> None:
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        path = raw.split("?", 1)[0] if raw.startswith("/") else urlsplit(raw).path
        if _BAD_ESCAPE.search(path):
            raise _Refused("path has a malformed percent-escape", "path")
        data = unquote_to_bytes(path.encode("latin-1", "replace"))
    else:  # the server decoded the escapes already: PATH_INFO holds the raw bytes as latin-1
        data = environ.get("PATH_INFO", "").encode("latin-1", "replace")
    text = _utf8(data, "path is not valid UTF-8", "path")
    problem = text_problem(text, MAX_PATH)
    if problem:
        raise _Refused(f"path {problem}", "path")


def _raw_pairs(encoded: str, kind: str) -> list[tuple[str, str]]:
    """Name/value pairs of an application/x-www-form-urlencoded string, decoded strictly."""
    if not encoded:
        return []
    if _BAD_ESCAPE.search(encoded):
        raise _Refused(f"a {kind} has a malformed percent-escape (a bare '%' must be sent as %25)", None)
    pairs = []
    for part in encoded.split("&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition("=")
        name = _utf8(_unquote(raw_name), f"a {kind} name is not valid UTF-8", None)
        _check_name(kind, name)
        pairs.append((name, _utf8(_unquote(raw_value), f"{kind} '{name}' is not valid UTF-8", name)))
    return pairs


def _form_pairs() -> list[tuple[str, str]]:
    if request.mimetype == "multipart/form-data":
        # Werkzeug decodes multipart fields itself; their text is still checked below.
        return list(request.form.items(multi=True))
    body = request.get_data(cache=True).decode("latin-1")  # cached: the form parser reads the same bytes
    return _raw_pairs(body, "form field")


def _check_pairs(kind: str, pairs: list[tuple[str, str]], limit: int, count: int,
                 multiline: frozenset[str] = frozenset()) -> None:
    if len(pairs) > count:
        raise _Refused(f"more than {count} {kind}s", None)
    for name, value in pairs:
        _check_name(kind, name)
        problem = text_problem(value, limit, multiline=name in multiline)
        if problem:
            raise _Refused(f"{kind} '{name}' {problem}", name)


def _check_name(kind: str, name: str) -> None:
    # The name is echoed in the refusal only once it is known to be clean.
    problem = text_problem(name, MAX_NAME)
    if problem:
        raise _Refused(f"a {kind} name {problem}", None)


def _unquote(text: str) -> bytes:
    return unquote_to_bytes(text.replace("+", " ").encode("latin-1", "replace"))


def _utf8(data: bytes, message: str, param: str | None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused(message, param) from None
