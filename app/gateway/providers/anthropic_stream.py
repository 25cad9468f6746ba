"""Anthropic answers in OpenAI's shape: a Message, its stream events, its errors and its usage."""
from __future__ import annotations

import re
import time
from typing import Any

import orjson

from app.gateway.errors import ErrorClass, UpstreamFailure, classify_status, parse_retry_after
from app.gateway.providers.base import (Completion, StreamState, Usage, assistant_message, chunk, json_object,
                                        token_count, tool_call)

FINISH = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
          "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter"}
ERROR_TYPES = {
    "invalid_request_error": ErrorClass.BAD_REQUEST, "request_too_large": ErrorClass.BAD_REQUEST,
    "authentication_error": ErrorClass.AUTH, "permission_error": ErrorClass.AUTH,
    "not_found_error": ErrorClass.NOT_FOUND, "rate_limit_error": ErrorClass.RATE_LIMIT,
    "billing_error": ErrorClass.BUDGET, "api_error": ErrorClass.SERVER_ERROR,
    "overloaded_error": ErrorClass.OVERLOADED, "timeout_error": ErrorClass.TIMEOUT,
}
# Error types more precise than any status they come with (a 400 "billing" error is a budget, not bad input).
_TYPE_WINS = {ErrorClass.BUDGET, ErrorClass.OVERLOADED, ErrorClass.RATE_LIMIT}
_SAFE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def usage_of(raw: dict[str, Any]) -> Usage:
    """Anthropic's input_tokens excludes cache reads and writes; OpenAI's prompt_tokens includes both."""
    fresh, read, write = token_count(raw.get("input_tokens")), token_count(raw.get("cache_read_input_tokens")), \
        token_count(raw.get("cache_creation_input_tokens"))
    return Usage(prompt_tokens=fresh + read + write, completion_tokens=token_count(raw.get("output_tokens")),
                 cached_tokens=read, cache_write_tokens=write)


def parse_message(body: bytes, model: str) -> Completion:
    data = json_object(body)
    content = data.get("content")
    if data.get("type") != "message" or not isinstance(content, list):
        raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="no message content")
    texts, thoughts, calls = [], [], []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "thinking":
            thoughts.append(block.get("thinking") or "")
        elif kind == "tool_use":
            calls.append(tool_call(block.get("id"), block.get("name"), block.get("input")))
    message = assistant_message(texts, thoughts, calls)
    usage = usage_of(data.get("usage") or {})
    return Completion(body={
        "id": data.get("id") or "", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": FINISH.get(data.get("stop_reason"), "stop")}],
        "usage": usage.to_openai(),
    }, usage=usage)


def classify_error(status: int, headers: dict[str, str], body: bytes) -> UpstreamFailure:
    """Status first, then Anthropic's error type (or Google's status when Vertex answers for it)."""
    error_class = classify_status(status)
    code = error_type(body)
    by_type = ERROR_TYPES.get(code or "")
    if by_type is not None and (by_type in _TYPE_WINS or error_class is ErrorClass.SERVER_ERROR):
        error_class = by_type
    return UpstreamFailure(error_class, status, retry_after=parse_retry_after(headers.get("retry-after")),
                           provider_code=code)


def error_type(body: bytes) -> str | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        for key in ("type", "status"):  # Anthropic's type; Google's status on Vertex
            if isinstance(error.get(key), str) and _SAFE.match(error[key]):
                return error[key]
    return None


# -- streaming ---------------------------------------------------------------------
def convert_event(event: Any, state: StreamState) -> list[dict[str, Any]]:
    payload = json_object(event.data.encode() if isinstance(event.data, str) else event.data)
    kind = payload.get("type")
    handler = _HANDLERS.get(kind)
    return handler(payload, state) if handler else []  # ping and future event types carry nothing for us


def _message_start(payload: dict[str, Any], state: StreamState) -> list[dict[str, Any]]:
    message = payload.get("message")
    if not isinstance(message, dict):
        raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="message_start without a message")
    state.extra["usage"] = {k: v for k, v in (message.get("usage") or {}).items() if k in _USAGE_KEYS}
    state.extra.setdefault("tools", {})
    return [chunk(state, state.model, {"role": "assistant", "content": ""})]


def _block_start(payload: dict[str, Any], state: StreamState) -> list[dict[str, Any]]:
    block = payload.get("content_block") or {}
    kind = block.get("type")
    if kind == "tool_use":
        tools = state.extra.setdefault("tools", {})
        index = tools[payload.get("index")] = len(tools)
        return [chunk(state, state.model, {"tool_calls": [{
            "index": index, "id": block.get("id"), "type": "function",
            "function": {"name": block.get("name"), "arguments": ""}}]})]
    if kind == "text" and block.get("text"):
        state.completion_chars += len(block["text"])
        return [chunk(state, state.model, {"content": block["text"]})]
    return []


def _block_delta(payload: dict[str, Any], state: StreamState) -> list[dict[str, Any]]:
    delta = payload.get("delta") or {}
    kind = delta.get("type")
    if kind == "text_delta":
        text = delta.get("text") or ""
        state.completion_chars += len(text)
        return [chunk(state, state.model, {"content": text})]
    if kind == "thinking_delta":
        text = delta.get("thinking") or ""
        state.completion_chars += len(text)
        return [chunk(state, state.model, {"reasoning_content": text})]
    if kind == "input_json_delta":
        index = state.extra.get("tools", {}).get(payload.get("index"))
        if index is None:
            raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="tool input for an unknown content block")
        part = delta.get("partial_json") or ""
        if not part:
            return []
        state.completion_chars += len(part)
        return [chunk(state, state.model, {"tool_calls": [{"index": index, "function": {"arguments": part}}]})]
    return []  # signature_delta, citations_delta


def _message_delta(payload: dict[str, Any], state: StreamState) -> list[dict[str, Any]]:
    usage = state.extra.setdefault("usage", {})
    # Each message_delta carries cumulative totals: the latest value wins, nothing is summed.
    usage.update({k: v for k, v in (payload.get("usage") or {}).items() if k in _USAGE_KEYS and v is not None})
    state.usage = usage_of(usage)
    reason = (payload.get("delta") or {}).get("stop_reason")
    if not reason:
        return []
    state.finish_reason = FINISH.get(reason, "stop")
    return [chunk(state, state.model, {}, state.finish_reason)]


def _message_stop(payload: dict[str, Any], state: StreamState) -> list[dict[str, Any]]:
    state.done = True
    return []


def _error(payload: dict[str, Any], state: StreamState) -> list[dict[str, Any]]:
    code = (payload.get("error") or {}).get("type")
    code = code if isinstance(code, str) and _SAFE.match(code) else None
    raise UpstreamFailure(ERROR_TYPES.get(code or "", ErrorClass.SERVER_ERROR), None,
                          detail="error event in stream", provider_code=code)


_HANDLERS = {"message_start": _message_start, "content_block_start": _block_start,
             "content_block_delta": _block_delta, "message_delta": _message_delta,
             "message_stop": _message_stop, "error": _error}
