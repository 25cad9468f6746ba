"""OpenAI and the providers that speak its Chat Completions wire format (Mistral, Groq, DeepSeek, …)."""
from __future__ import annotations

import re
from typing import Any

import orjson

from app.gateway.errors import ErrorClass, UpstreamFailure, classify_status, parse_retry_after
from app.gateway.providers.base import (Completion, Credentials, Provider, StreamState, UpstreamRequest, Usage,
                                        json_object, token_count)
from app.gateway.schema import ChatRequest
from app.gateway.sse import SSEEvent

_SAFE_CODE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class OpenAICompatible(Provider):
    def __init__(self, provider_id: str, default_base_url: str, optional_credentials: tuple[str, ...] = (),
                 header_credentials: tuple[str, ...] | None = None):
        self.id = provider_id
        self.default_base_url = default_base_url
        self.optional_credentials = optional_credentials
        # OpenAI's optional organization and project travel in headers like the key.
        self.header_credentials = ("api_key", *optional_credentials) if header_credentials is None \
            else header_credentials

    # -- request -----------------------------------------------------------
    def request_headers(self, creds: Credentials) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {creds['api_key']}", "Content-Type": "application/json"}
        if creds.get("organization"):
            headers["OpenAI-Organization"] = str(creds["organization"])
        if creds.get("project"):
            headers["OpenAI-Project"] = str(creds["project"])
        return headers

    def request_url(self, model: str, creds: Credentials, base_url: str | None) -> str:
        return (base_url or self.default_base_url).rstrip("/") + "/chat/completions"

    def request_body(self, req: ChatRequest, model: str) -> dict[str, Any]:
        body = dict(req.params)
        body["model"] = model
        if req.stream:
            # Always ask for usage: recording needs it whether or not the client wants the chunk.
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return body

    def build_request(self, req: ChatRequest, model: str, creds: Credentials, base_url: str | None) -> UpstreamRequest:
        return UpstreamRequest(
            "POST", self.request_url(model, creds, base_url), self.request_headers(creds),
            orjson.dumps(self.request_body(req, model)),
        )

    # -- responses ---------------------------------------------------------
    def parse_response(self, body: bytes, req: ChatRequest, model: str) -> Completion:
        data = json_object(body)
        if not isinstance(data.get("choices"), list):
            raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="no 'choices' in completion")
        return Completion(body=data, usage=usage_from_openai(data.get("usage")))

    def classify_error(self, status: int, headers: dict[str, str], body: bytes) -> UpstreamFailure:
        error_class = classify_status(status)
        code = _error_code(body)
        # OpenAI answers an exhausted billing quota with 429 insufficient_quota: a budget, not a rate limit.
        if status == 429 and code == "insufficient_quota":
            error_class = ErrorClass.BUDGET
        return UpstreamFailure(error_class, status, retry_after=parse_retry_after(headers.get("retry-after")),
                               provider_code=code)

    # -- streaming ---------------------------------------------------------
    def convert_stream_event(self, event: SSEEvent, state: StreamState) -> list[dict[str, Any]]:
        data = event.data
        if data == "[DONE]":
            state.done = True
            return []
        payload = json_object(data)
        if "error" in payload:
            raise UpstreamFailure(ErrorClass.SERVER_ERROR, None, detail="error event in stream",
                                  provider_code=_code_of(payload.get("error")))
        if payload.get("usage"):
            state.usage = usage_from_openai(payload["usage"])
        choices = payload.get("choices")
        if not isinstance(choices, list):
            raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="stream chunk without 'choices'")
        if not choices:
            return []  # the usage-only chunk: the gateway re-emits it if the client asked
        for choice in choices:
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str):
                state.completion_chars += len(content)
            if choice.get("finish_reason"):
                state.finish_reason = choice["finish_reason"]
        payload.pop("usage", None)
        return [payload]


def usage_from_openai(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=token_count(usage.get("prompt_tokens")),
        completion_tokens=token_count(usage.get("completion_tokens")),
        cached_tokens=token_count(prompt_details.get("cached_tokens")),
        reasoning_tokens=token_count(completion_details.get("reasoning_tokens")),
    )



def _error_code(body: bytes) -> str | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return _code_of(data.get("error")) if isinstance(data, dict) else None


def _code_of(error: Any) -> str | None:
    """The provider's machine-readable error code or type, kept only if it looks like an identifier."""
    if not isinstance(error, dict):
        return None
    for key in ("code", "type"):
        value = error.get(key)
        if isinstance(value, str) and _SAFE_CODE.match(value):
            return value
    return None
