"""Google Vertex AI: Gemini models (`publishers/google`) and Claude models (`publishers/anthropic`).

Credentials: `project_id`, `region`, and either `service_account` (the JSON key
object) or `access_token`. A service account is exchanged for an access token
with google-auth on every request that carries it: nothing derived from a BYOK
credential, token included, outlives the request, so there is no token cache.
That costs one token-endpoint round trip (an RSA signature and an HTTPS call,
typically 50-150 ms) per request; clients that pass `access_token` avoid it.
The token endpoint is always GATEWAY_VERTEX_TOKEN_URL (default Google's): a
`token_uri` inside a caller's key file is ignored, so a key cannot make the
gateway post to a host of the caller's choosing.

Shared pool (environment): GATEWAY_VERTEX_SHARED_PROJECT_ID,
GATEWAY_VERTEX_SHARED_REGION (default us-central1), and either
GATEWAY_VERTEX_SHARED_SERVICE_ACCOUNT_FILE (path to a JSON key) or
GATEWAY_VERTEX_SHARED_ACCESS_TOKEN. GATEWAY_VERTEX_BASE_URL replaces the
regional `https://{region}-aiplatform.googleapis.com` origin (tests, proxies).
"""
from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote

import orjson
from google.auth import exceptions as google_exceptions
from google.auth import transport as google_transport
from google.oauth2 import service_account

from app.gateway import http
from app.gateway.errors import ConfigurationError, ErrorClass, InvalidRequest, UpstreamFailure
from app.gateway.providers import anthropic_stream, gemini_stream, vertex_key
from app.gateway.providers.anthropic import messages_body
from app.gateway.providers.base import (Completion, Credentials, Provider, StreamState, UpstreamRequest,
                                        model_in_path)
from app.gateway.providers.vertex_key import service_account_info
from app.gateway.providers.gemini import generate_body
from app.gateway.schema import ChatRequest
from app.validation import secret_problem

ANTHROPIC_VERSION = "vertex-2023-10-16"
DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"
DEFAULT_REGION = "us-central1"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# Both shape a URL (the region even its host), so both follow Google's own naming strictly.
_REGION = re.compile(r"global|[a-z]{2,20}-[a-z]{2,20}[0-9]{1,2}")
_PROJECT = re.compile(r"(?:(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}:)?[a-z][a-z0-9-]{4,28}[a-z0-9]"
                      r"|[0-9]{1,20}")


def is_claude(model: str) -> bool:
    return model.startswith("claude")


class Vertex(Provider):
    id = "vertex"
    required_credentials = ("project_id", "region")
    optional_credentials = ("service_account", "access_token")
    header_credentials = ("access_token",)

    def __init__(self) -> None:
        self.token_url = DEFAULT_TOKEN_URL

    def configure(self, config: dict[str, Any]) -> None:
        self.token_url = config.get("GATEWAY_VERTEX_TOKEN_URL") or DEFAULT_TOKEN_URL
        super().configure(config)

    # -- credentials -------------------------------------------------------------------
    def check_credentials(self, creds: Credentials, config: dict[str, Any]) -> None:
        where = "byok_conf.credentials"
        problem = _url_fields_problem(creds["project_id"], creds["region"])
        if problem:
            name, what = problem
            raise InvalidRequest(f"'{where}.{name}' is not {what}", param=f"{where}.{name}")
        has_sa, has_token = creds.get("service_account") is not None, creds.get("access_token") is not None
        if has_sa == has_token:
            raise InvalidRequest(f"{where} for provider 'vertex' needs exactly one of 'service_account' or "
                                 "'access_token'", param=where)
        if has_sa:
            service_account_info(creds["service_account"], f"{where}.service_account")

    def shared_credentials(self, config: dict[str, Any]) -> list[Credentials]:
        project = config.get("GATEWAY_VERTEX_SHARED_PROJECT_ID", "")
        region = config.get("GATEWAY_VERTEX_SHARED_REGION") or DEFAULT_REGION
        token = config.get("GATEWAY_VERTEX_SHARED_ACCESS_TOKEN", "")
        path = config.get("GATEWAY_VERTEX_SHARED_SERVICE_ACCOUNT_FILE", "")
        if not project or not (token or path):
            return []
        problem = _url_fields_problem(project, region)
        if problem:
            raise ConfigurationError(f"GATEWAY_VERTEX_SHARED_{problem[0].upper()} is not {problem[1]}")
        if token:
            return [Credentials({"project_id": project, "region": region, "access_token": token})]
        return [Credentials({"project_id": project, "region": region, "service_account": _key_file(path)})]

    def authorize(self, creds: Credentials, deadline: float) -> Credentials:
        """A service account becomes an access token for this request only (never cached)."""
        if creds.get("access_token"):
            return creds
        info = {**service_account_info(creds["service_account"], "service_account"), "token_uri": self.token_url}
        try:
            sa = service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
        except (ValueError, KeyError, TypeError):
            raise UpstreamFailure(ErrorClass.AUTH, None, detail="the service account key could not be read") from None
        try:
            sa.refresh(_DeadlineRequest(deadline))
        except google_exceptions.RefreshError as exc:
            retryable = bool(getattr(exc, "retryable", False))
            raise UpstreamFailure(ErrorClass.SERVER_ERROR if retryable else ErrorClass.AUTH, None,
                                  detail="the service account token exchange failed") from None
        except google_exceptions.TransportError:
            raise UpstreamFailure(ErrorClass.CONNECTION, None, detail="could not reach the token endpoint") from None
        if not isinstance(sa.token, str) or secret_problem(sa.token):  # it goes into a header next
            raise UpstreamFailure(ErrorClass.MALFORMED, None, detail="the token endpoint returned an unusable token")
        return Credentials({"project_id": creds["project_id"], "region": creds["region"], "access_token": sa.token},
                           trusted=creds.trusted)

    # -- request ---------------------------------------------------------------------
    def build_request(self, req: ChatRequest, model: str, creds: Credentials, base_url: str | None) -> UpstreamRequest:
        region = creds["region"]
        if _url_fields_problem(creds["project_id"], region):  # checked at the edge; never built into a URL unchecked
            raise InvalidRequest("byok_conf.credentials has an invalid project_id or region", param="byok_conf.credentials")
        model = model_in_path(model, self.id)
        host = "aiplatform.googleapis.com" if region == "global" else f"{region}-aiplatform.googleapis.com"
        origin = (base_url or f"https://{host}").rstrip("/")
        path = f"/v1/projects/{quote(creds['project_id'], safe='')}/locations/{region}"
        headers = {"Authorization": f"Bearer {creds['access_token']}", "Content-Type": "application/json"}
        if is_claude(model):
            body = {"anthropic_version": ANTHROPIC_VERSION, **messages_body(req, self.id)}
            method = "streamRawPredict" if req.stream else "rawPredict"
            url = f"{origin}{path}/publishers/anthropic/models/{quote(model, safe='@')}:{method}"
        else:
            body = generate_body(req, self.id, image_urls=True)
            method = "streamGenerateContent?alt=sse" if req.stream else "generateContent"
            url = f"{origin}{path}/publishers/google/models/{quote(model, safe='@')}:{method}"
        return UpstreamRequest("POST", url, headers, orjson.dumps(body))

    # -- responses ----------------------------------------------------------------------
    def parse_response(self, body: bytes, req: ChatRequest, model: str) -> Completion:
        if is_claude(model):
            return anthropic_stream.parse_message(body, model)
        return gemini_stream.parse_response(body, model)

    def classify_error(self, status: int, headers: dict[str, str], body: bytes) -> UpstreamFailure:
        # Vertex answers in Google's error shape, Claude's rawPredict sometimes in Anthropic's: try both.
        failure = gemini_stream.classify_error(status, headers, body)
        if failure.provider_code is None:
            failure = anthropic_stream.classify_error(status, headers, body)
        return failure

    def new_stream_state(self, req: ChatRequest, model: str) -> StreamState:
        state = StreamState(model=model)
        state.extra["claude"] = is_claude(model)
        return state

    def convert_stream_event(self, event: Any, state: StreamState) -> list[dict[str, Any]]:
        if state.extra["claude"]:
            return anthropic_stream.convert_event(event, state)
        return gemini_stream.convert_event(event, state)

    def finish_stream(self, state: StreamState) -> list[dict[str, Any]]:
        if state.extra["claude"]:
            return super().finish_stream(state)
        return gemini_stream.finish(state)


def _url_fields_problem(project_id: Any, region: Any) -> tuple[str, str] | None:
    """(field, what it should be) for a project id or region that may not shape a URL, else None."""
    if not isinstance(project_id, str) or not _PROJECT.fullmatch(project_id):
        return "project_id", "a Google Cloud project id (e.g. my-project-123) or number"
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        return "region", "a Vertex AI region (e.g. us-central1, or global)"
    return None


def _key_file(path: str) -> dict[str, str]:
    variable = "GATEWAY_VERTEX_SHARED_SERVICE_ACCOUNT_FILE"
    try:
        with open(path, "rb") as fh:
            raw = fh.read(vertex_key.MAX_JSON + 1)
    except OSError as exc:
        raise ConfigurationError(f"{variable} could not be read ({type(exc).__name__})") from None
    try:
        return service_account_info(raw.decode("utf-8", errors="replace"), "service_account")
    except InvalidRequest as exc:
        raise ConfigurationError(f"{variable}: {exc.message}") from None


class _Response(google_transport.Response):
    def __init__(self, status: int, headers: dict[str, str], data: bytes):
        self._status, self._headers, self._data = status, headers, data

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> dict[str, str]:
        return self._headers

    @property
    def data(self) -> bytes:
        return self._data


class _DeadlineRequest(google_transport.Request):
    """google-auth's transport over the gateway's pooled sessions, bounded by the attempt deadline.

    Written here rather than google-auth's requests transport because that one can log
    request and response bodies (an assertion, a token) when the `google` logger is on.
    """

    def __init__(self, deadline: float):
        self._deadline = deadline

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise google_exceptions.TransportError("token exchange deadline exceeded")
        try:
            status, response_headers, content = http.fetch(
                method, url, body, dict(headers or {}), min(self._deadline, time.monotonic() + 30.0))
        except UpstreamFailure:
            raise google_exceptions.TransportError("token endpoint unreachable") from None
        return _Response(status, response_headers, content)
