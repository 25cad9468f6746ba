"""Gateway errors: each carries an HTTP status and a class, rendered in the OpenAI error shape.

Messages are written by the gateway. A provider's raw error body never
becomes a message: providers echo keys back in them.
"""
from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorClass(str, Enum):
    """What went wrong upstream, decided status-first by each provider adapter."""

    RATE_LIMIT = "rate_limit"          # 429, quota exhausted
    OVERLOADED = "overloaded"          # 529, provider "overloaded"/"unavailable"
    SERVER_ERROR = "server_error"      # other 5xx
    TIMEOUT = "timeout"                # connect/read timeout, attempt deadline
    CONNECTION = "connection"          # refused, reset, closed mid-body
    MALFORMED = "malformed_response"   # 2xx whose body is not what the wire format says
    AUTH = "auth"                      # 401/403: revoked or wrong key
    BUDGET = "budget"                  # 402: provider budget exhausted
    BAD_REQUEST = "bad_request"        # 400-class: the shared pool would reject it too
    NOT_FOUND = "not_found"            # 404 model/deployment unknown to this provider


# The status the client sees when this class ends the request.
CLIENT_STATUS = {
    ErrorClass.RATE_LIMIT: 429,
    ErrorClass.OVERLOADED: 503,
    ErrorClass.SERVER_ERROR: 502,
    ErrorClass.TIMEOUT: 504,
    ErrorClass.CONNECTION: 502,
    ErrorClass.MALFORMED: 502,
    ErrorClass.AUTH: 401,
    ErrorClass.BUDGET: 402,
    ErrorClass.BAD_REQUEST: 400,
    ErrorClass.NOT_FOUND: 404,
}


class GatewayError(Exception):
    status = 500
    type = "api_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status: int | None = None, metadata: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.metadata = metadata or {}
        self.headers = headers or {}

    def about_entry(self, where: str) -> "GatewayError":
        """The same error naming the byok_conf entry it is about: 'byok_conf.x' becomes 'byok_conf[1].x'."""
        if where and where != "byok_conf":
            self.message = self.message.replace("byok_conf", where, 1)
            self.param = self.param.replace("byok_conf", where, 1) if self.param else self.param
            self.args = (self.message,)
        return self

    def to_dict(self) -> dict[str, Any]:
        err: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code, "param": self.param}
        if self.metadata:
            err["metadata"] = self.metadata
        return {"error": err}


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class InsufficientCredits(GatewayError):
    status = 402
    type = "insufficient_quota"
    code = "insufficient_credits"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class ConfigurationError(Exception):
    """A setting the app cannot start with; the message names the variable, never its value."""


class UpstreamFailure(Exception):
    """One failed upstream attempt, as classified by the provider adapter (never holds a raw body)."""

    def __init__(self, error_class: ErrorClass, status: int | None = None, *,
                 retry_after: float | None = None, provider_code: str | None = None, detail: str = ""):
        self.error_class = error_class
        self.status = status
        self.retry_after = retry_after
        # A short, gateway-written, key-free description (e.g. the provider's error *type*).
        self.provider_code = provider_code
        self.detail = detail
        super().__init__(f"{error_class.value} (status {status})")


class UpstreamError(GatewayError):
    """The final upstream failure returned to the client."""

    type = "upstream_error"

    def __init__(self, failure: UpstreamFailure, provider: str, metadata: dict[str, Any]):
        cls = failure.error_class
        status = CLIENT_STATUS[cls]
        if cls is ErrorClass.SERVER_ERROR and failure.status and 500 <= failure.status <= 599:
            status = failure.status
        if cls is ErrorClass.TIMEOUT:
            status = 504
        message = _UPSTREAM_MESSAGES[cls].format(provider=provider, status=failure.status or "-")
        if failure.detail:
            message += f": {failure.detail}"
        headers = {}
        if failure.retry_after is not None and cls is ErrorClass.RATE_LIMIT:
            headers["Retry-After"] = str(int(failure.retry_after + 0.999))
        super().__init__(message, code=cls.value, status=status, metadata=metadata, headers=headers)
        self.type = {
            ErrorClass.RATE_LIMIT: "rate_limit_error",
            ErrorClass.AUTH: "authentication_error",
            ErrorClass.BAD_REQUEST: "invalid_request_error",
            ErrorClass.NOT_FOUND: "invalid_request_error",
            ErrorClass.BUDGET: "insufficient_quota",
        }.get(cls, "upstream_error")
        self.failure = failure


_UPSTREAM_MESSAGES = {
    ErrorClass.RATE_LIMIT: "{provider} rate limit or quota exceeded (upstream status {status})",
    ErrorClass.OVERLOADED: "{provider} is overloaded (upstream status {status})",
    ErrorClass.SERVER_ERROR: "{provider} returned a server error (upstream status {status})",
    ErrorClass.TIMEOUT: "{provider} did not answer within the deadline",
    ErrorClass.CONNECTION: "connection to {provider} failed",
    ErrorClass.MALFORMED: "{provider} returned a malformed response",
    ErrorClass.AUTH: "{provider} rejected the credentials (upstream status {status})",
    ErrorClass.BUDGET: "{provider} budget or billing limit reached (upstream status {status})",
    ErrorClass.BAD_REQUEST: "{provider} rejected the request (upstream status {status})",
    ErrorClass.NOT_FOUND: "{provider} does not know this model or deployment (upstream status {status})",
}


def classify_status(status: int) -> ErrorClass:
    """The default status-first classification that adapters refine with the provider's error type."""
    if status == 429:
        return ErrorClass.RATE_LIMIT
    if status in (401, 403):
        return ErrorClass.AUTH
    if status == 402:
        return ErrorClass.BUDGET
    if status == 404:
        return ErrorClass.NOT_FOUND
    if status in (503, 529):
        return ErrorClass.OVERLOADED
    if status >= 500:
        return ErrorClass.SERVER_ERROR
    return ErrorClass.BAD_REQUEST


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 3600 else None
