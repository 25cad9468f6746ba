"""Logging that cannot leak a credential, whatever LOG_LEVEL says and whichever handler writes the line.

Two mechanisms, both installed by `configure()` from create_app:

- Libraries that print URLs, headers or bodies when they debug (urllib3: the
  request line carries an Azure deployment and api-version, a Vertex project;
  botocore: the canonical request with the session token; google.auth,
  requests, http.client, gunicorn's access log ...) are held at WARNING. Their
  records below WARNING are withheld even if something lowers their level again.
- Every log record, from every logger, passes through a record factory that
  masks anything shaped like a credential before any handler sees it: header
  values, `key=` query parameters, AWS signatures and session tokens, PEM
  blocks, JWTs, `sk-…` style tokens. A traceback logged by the request-serving
  loggers keeps only exception types and frames: an exception's message can
  carry request data (`ValueError: Invalid header value b'Bearer sk-…'`).

A record factory rather than a handler filter because a factory sees every
record whichever handler ends up writing it, including handlers added later
(gunicorn's, an operator's, a test's).
"""
from __future__ import annotations

import http.client
import logging
import re
import traceback

# Loggers whose output below WARNING may carry URLs, headers, bodies or signatures.
QUIET = ("urllib3", "requests", "botocore", "boto3", "s3transfer", "google.auth", "google.oauth2",
         "google_auth_httplib2", "httpx", "httpcore", "hpack", "openai", "gunicorn.access")
# Loggers that report failures while serving a request: their tracebacks keep frames, never messages.
REQUEST_LOGGERS = frozenset({"app", "flask.app", "werkzeug", "gunicorn.error", "app.errors"})
REDACTED = "[redacted]"
WITHHELD = "%s output below WARNING withheld: it can carry URLs, headers or credentials"

_HEADER_NAMES = (r"authorization|proxy-authorization|api-key|x-api-key|x-goog-api-key|x-amz-security-token"
                 r"|x-amz-signature|x-amz-credential|cookie|set-cookie|x-gateway-key")
_FIELD_NAMES = (r"api_key|apikey|access_token|refresh_token|id_token|session_token|security_token|client_secret"
                r"|private_key|secret_access_key|aws_secret_access_key|aws_session_token|aws_access_key_id"
                r"|password|secret|signature")
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM blocks, complete or cut short (a private key in a service account).
    (re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?(?:-----END \1-----|\Z)", re.S), REDACTED),
    # Header and field values: `Authorization: Bearer …`, `'api-key': '…'`, `"aws_session_token": "…"`.
    (re.compile(rf"(?i)(\b(?:{_HEADER_NAMES}|{_FIELD_NAMES})\b['\"]?\s*[:=]\s*(?:b?['\"])?)[^'\"\r\n,}}]*"),
     r"\1" + REDACTED),
    # Credential-bearing query parameters: ?key=…, &X-Amz-Signature=…, &access_token=….
    (re.compile(r"(?i)([?&;](?:key|api[-_]?key|access[-_]?token|token|sig|signature|x-amz-[a-z-]+|code"
                r"|client_secret|password)=)[^&\s'\"#]*"), r"\1" + REDACTED),
    # An authorization scheme followed by its token, wherever it appears.
    (re.compile(r"(?i)\b(bearer|basic|aws4-hmac-sha256)\s+[^\s'\"]+"), r"\1 " + REDACTED),
    # JWTs (a Google ID token, a signed service-account assertion).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED),
    # Provider key shapes: OpenAI/Anthropic/Groq/xAI/… `sk-…`, Google `AIza…` and `ya29.…`, Keyway's `kw-…`.
    (re.compile(r"\b(?:sk|rk|pk|gsk|xai|fw|kw)[-_][A-Za-z0-9_\-]{12,}"), REDACTED),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"), REDACTED),
    (re.compile(r"\bya29\.[0-9A-Za-z_\-.]+"), REDACTED),
    # AWS access key ids and the usual prefixes of STS session tokens.
    (re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{12,}\b"), REDACTED),
    (re.compile(r"(?:IQoJb3JpZ2lu|FwoGZXIvYXdz|FQoGZXIvYXdz)[A-Za-z0-9/+=]+"), REDACTED),
)


def redact(text: str) -> str:
    """`text` with everything shaped like a credential replaced by [redacted]."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def frames(exc: BaseException) -> str:
    """A traceback without messages: each chained exception's type and its frames (file, line, function)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    lines = []
    for error in reversed(chain):
        kind = type(error)
        name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        lines.append(f"{name} (message withheld: it can carry request data)")
        for frame, lineno in traceback.walk_tb(error.__traceback__):
            lines.append(f'  File "{frame.f_code.co_filename}", line {lineno}, in {frame.f_code.co_name}')
    return "\n".join(lines)


def quiet(name: str) -> bool:
    return any(name == q or name.startswith(q + ".") for q in QUIET)


def scrub(record: logging.LogRecord) -> None:
    """Make one record safe to write: withheld if it comes from a quiet logger below WARNING, else redacted."""
    if record.levelno < logging.WARNING and quiet(record.name):
        record.msg, record.args = WITHHELD, (record.name,)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return
    message = record.getMessage()
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, ()
    if record.exc_info and record.exc_info[1] is not None:
        error = record.exc_info[1]
        if record.name in REQUEST_LOGGERS:
            record.exc_text = frames(error)
        else:
            record.exc_text = redact("".join(traceback.format_exception(error)).rstrip("\n"))
        # Formatters print exc_text when it is set; dropping exc_info stops any of them from re-rendering the message.
        record.exc_info = None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def _scrubbing(factory):
    def make(*args, **kwargs) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            scrub(record)
        except Exception:  # a record that cannot be formatted cannot be checked either
            record.msg, record.args = "log record withheld: it could not be checked for credentials", ()
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return record

    make.keyway_scrubbing = True  # type: ignore[attr-defined]
    return make


def configure(level: str | int) -> None:
    """Root logging at `level` (a stderr handler if there is none), quiet libraries, scrubbed records."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # Alembic announces its plugins at INFO on import; migrations speak up only when something is wrong.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # http.client prints whole requests, headers included, to stdout when its debuglevel is raised.
    http.client.HTTPConnection.debuglevel = 0
    if not getattr(logging.getLogRecordFactory(), "keyway_scrubbing", False):
        logging.setLogRecordFactory(_scrubbing(logging.getLogRecordFactory()))
