"""Gemini answers (AI Studio and Vertex AI) in OpenAI's shape: responses, SSE chunks, errors, usage."""
from __future__ import annotations

import re
import time
import uuid
from typing import Any

import orjson

from app.gateway.errors import ErrorClass, UpstreamFailure, classify_status, parse_retry_after
from app.gateway.providers.base import (Completion, StreamState, Usage, assistant_message, chunk, json_object,
                                        token_count, tool_call)

FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
GOOGLE_STATUS = {
    "INVALID_ARGUMENT": ErrorClass.BAD_REQUEST, "FAILED_PRECONDITION": ErrorClass.BAD_REQUEST,
    "OUT_OF_RANGE": ErrorClass.BAD_REQUEST, "UNAUTHENTICATED": ErrorClass.AUTH,
    "PERMISSION_DENIED": ErrorClass.AUTH, "NOT_FOUND": ErrorClass.NOT_FOUND,
    "RESOURCE_EXHAUSTED": ErrorClass.RATE_LIMIT, "UNAVAILABLE": ErrorClass.OVERLOADED,
    "INTERNAL": ErrorClass.SERVER_ERROR, "UNKNOWN": ErrorClass.SERVER_ERROR,
    "DEADLINE_EXCEEDED": ErrorClass.TIMEOUT,
}
# AI Studio answers a wrong or expired key with 400 INVALID_ARGUMENT; its ErrorInfo reason says what it is.
AUTH_REASONS = {"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED", "ACCESS_TOKEN_EXPIRED",
                "ACCESS_TOKEN_TYPE_UNSUPPORTED", "CREDENTIALS_MISSING"}
_TYPE_WINS = {ErrorClass.RATE_LIMIT, ErrorClass.OVERLOADED, ErrorClass.TIMEOUT}
_SAFE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_DELAY = re.compile(r"^(\d+(?:\.\d+)?)s$")


def usage_of(meta: dict[str, Any]) -> Usage:
    """promptTokenCount already includes cached tokens; OpenAI's completion tokens include thoughts."""
    thoughts = token_count(meta.get("thoughtsTokenCount"))
    return Usage(prompt_tokens=token_count(meta.get("promptTokenCount")) + token_count(meta.get("toolUsePromptTokenCount")),
                 completion_tokens=token_count(meta.get("candidatesTokenCount")) + thoughts,
                 cached_tokens=token_count(meta.get("cachedContentTokenCount")), reasoning_tokens=thoughts)


def finish_reason(reason: str | None, called_tools: bool) -> str:
    if reason == "MAX_TOKENS":
        return "length"
    if reason in FILTERED:
        return "content_filter"
    return "tool_calls" if called_tools else "stop"


def parse_response(body: bytes, model: str) -> Completion:
    data = json_object(body)
    candidates = data.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        if not isinstance(data.get("promptFeedback"), dict):
            raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="no candidates in response")
        candidates = [{"finishReason": "SAFETY"}]  # the prompt itself was blocked
    candidate = candidates[0]
    texts, thoughts, calls = [], [], []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if "functionCall" in part:
            calls.append(_tool_call(part["functionCall"]))
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else texts).append(part["text"])
    message = assistant_message(texts, thoughts, calls)
    usage = usage_of(data.get("usageMetadata") or {})
    return Completion(body={
        "id": data.get("responseId") or "", "object": "chat.completion", "created": int(time.time()),
        "model": model, "usage": usage.to_openai(),
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish_reason(candidate.get("finishReason"), bool(calls))}],
    }, usage=usage)


def _tool_call(call: Any) -> dict[str, Any]:
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="functionCall without a name")
    call_id = call.get("id") if isinstance(call.get("id"), str) else f"call_{uuid.uuid4().hex[:24]}"
    return tool_call(call_id, call["name"], call.get("args"))


def classify_error(status: int, headers: dict[str, str], body: bytes) -> UpstreamFailure:
    """Status first, then Google's canonical status and ErrorInfo reason; RetryInfo when no header."""
    error_class = classify_status(status)
    error = _error_object(body)
    google_status = error.get("status") if isinstance(error.get("status"), str) else None
    reason, delay = _details(error.get("details"))
    by_status = GOOGLE_STATUS.get(google_status or "")
    if reason in AUTH_REASONS:
        error_class = ErrorClass.AUTH
    elif by_status is not None and (by_status in _TYPE_WINS or error_class is ErrorClass.SERVER_ERROR):
        error_class = by_status
    retry_after = parse_retry_after(headers.get("retry-after"))
    if retry_after is None and delay is not None:
        retry_after = parse_retry_after(delay)
    code = reason or google_status
    return UpstreamFailure(error_class, status, retry_after=retry_after,
                           provider_code=code if code and _SAFE.match(code) else None)


def _error_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    if isinstance(data, list) and data:  # streamGenerateContent without alt=sse wraps errors in an array
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


def _details(details: Any) -> tuple[str | None, str | None]:
    reason = delay = None
    for item in details if isinstance(details, list) else []:
        if not isinstance(item, dict):
            continue
        kind = item.get("@type") or ""
        if kind.endswith("google.rpc.ErrorInfo") and isinstance(item.get("reason"), str):
            reason = item["reason"]
        elif kind.endswith("google.rpc.RetryInfo"):
            match = _DELAY.match(str(item.get("retryDelay") or ""))
            delay = match.group(1) if match else None
    return reason, delay


# -- streaming: each SSE event is a whole GenerateContentResponse ---------------------------------
def convert_event(event: Any, state: StreamState) -> list[dict[str, Any]]:
    data = json_object(event.data.encode() if isinstance(event.data, str) else event.data)
    if "error" in data:
        failure = classify_error(500, {}, orjson.dumps(data))
        raise UpstreamFailure(failure.error_class, None, detail="error event in stream",
                              provider_code=failure.provider_code)
    out: list[dict[str, Any]] = []
    if not state.extra.get("started"):
        state.extra["started"] = True
        out.append(chunk(state, state.model, {"role": "assistant", "content": ""}))
    if isinstance(data.get("usageMetadata"), dict):
        state.usage = usage_of(data["usageMetadata"])
    candidates = data.get("candidates")
    if not candidates:
        if isinstance(data.get("promptFeedback"), dict) and data["promptFeedback"].get("blockReason"):
            return out + _finish(state, "SAFETY")
        return out
    candidate = candidates[0]
    for part in (candidate.get("content") or {}).get("parts") or []:
        out.extend(_part_chunks(part, state))
    if candidate.get("finishReason"):
        out += _finish(state, candidate["finishReason"])
    return out


def _part_chunks(part: dict[str, Any], state: StreamState) -> list[dict[str, Any]]:
    if "functionCall" in part:
        call = _tool_call(part["functionCall"])
        index = state.extra.get("tool_count", 0)
        state.extra["tool_count"] = index + 1
        state.completion_chars += len(call["function"]["arguments"])
        return [chunk(state, state.model, {"tool_calls": [{"index": index, **call}]})]
    text = part.get("text")
    if not isinstance(text, str) or not text:
        return []
    state.completion_chars += len(text)
    return [chunk(state, state.model, {"reasoning_content" if part.get("thought") else "content": text})]


def _finish(state: StreamState, reason: str) -> list[dict[str, Any]]:
    state.finish_reason = finish_reason(reason, state.extra.get("tool_count", 0) > 0)
    state.done = True  # Gemini has no end marker: the chunk with a finishReason is the last word
    return [chunk(state, state.model, {}, state.finish_reason)]


def finish(state: StreamState) -> list[dict[str, Any]]:
    if not state.done:
        raise UpstreamFailure(ErrorClass.CONNECTION, detail="stream ended before a finishReason")
    return []
