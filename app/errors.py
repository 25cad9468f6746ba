"""One error handler: the OpenAI error shape on /v1 and /api, an HTML page elsewhere; never a traceback.

An unexpected exception is logged with its type, the request id and its frames,
never with its message or arguments: those can carry request data, a provider
key among them (`ValueError: Invalid header value b'Bearer sk-…'`).
"""
from __future__ import annotations

import logging

import orjson
from flask import Flask, Response, g, render_template, request
from werkzeug.exceptions import HTTPException

from app.gateway.errors import GatewayError
from app.logs import frames

log = logging.getLogger(__name__)

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
          429: "rate_limit_error"}


def wants_json() -> bool:
    return request.path.startswith(("/v1/", "/api/")) or request.path in ("/v1", "/api")


def _json(payload: dict, status: int, headers: dict | None = None) -> Response:
    response = Response(orjson.dumps(payload), status=status, mimetype="application/json", headers=headers)
    request_id = getattr(g, "request_id", None)
    if request_id and "X-Request-Id" not in response.headers:
        response.headers["X-Request-Id"] = request_id
    return response


def register(app: Flask) -> None:
    @app.errorhandler(GatewayError)
    def gateway_error(exc: GatewayError):
        if wants_json():
            return _json(exc.to_dict(), exc.status, exc.headers)
        return _html(exc.status, exc.message)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            message = f"request body is larger than the {app.config['MAX_CONTENT_LENGTH']} byte limit"
        if wants_json():
            code = exc.name.lower().replace(" ", "_")
            return _json({"error": {"message": message, "type": _TYPES.get(status, "api_error"),
                                    "code": code, "param": None}}, status)
        return _html(status, message)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        # The route's pattern, not the path: a path is caller text.
        route = request.url_rule.rule if request.url_rule is not None else "(no route)"
        log.error("unhandled %s in request %s (%s %s)\n%s", type(exc).__name__, getattr(g, "request_id", "-"),
                  request.method, route, frames(exc))
        if wants_json():
            return _json({"error": {"message": "internal error; the request id identifies it in the logs",
                                    "type": "api_error", "code": "internal_error", "param": None}}, 500)
        return _html(500, "Something went wrong on our side.")


def _html(status: int, message: str):
    try:
        return render_template("error.html", status=status, message=message), status
    except Exception:
        return Response(f"{status}: {message}", status=status, mimetype="text/plain")
