"""Bedrock ConverseStream: the application/vnd.amazon.eventstream body and its translation to OpenAI chunks.

The binary framing (prelude, headers, payload, CRCs) is decoded by botocore's
EventStreamBuffer. Each message is an event (`:event-type` messageStart,
contentBlockStart, contentBlockDelta, contentBlockStop, messageStop, metadata)
or an exception (`:exception-type`), which becomes an UpstreamFailure
classified exactly like the same error answered over HTTP.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any, Callable

import orjson
from botocore.eventstream import EventStreamBuffer, ParserError

from app.gateway.errors import ErrorClass, UpstreamFailure
from app.gateway.providers.base import StreamState, Usage, chunk, token_count

STOP_REASONS = {
    "end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "model_context_window_exceeded": "length",
    "tool_use": "tool_calls", "guardrail_intervened": "content_filter", "content_filtered": "content_filter",
}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


@dataclass(slots=True)
class BedrockEvent:
    kind: str  # event | exception | error
    name: str  # the event type, exception type or error code
    payload: dict[str, Any]


class EventStreamDecoder:
    """Feed it body bytes however they are split; it returns the complete event-stream messages."""

    def __init__(self) -> None:
        self._buffer = EventStreamBuffer()
        self._pending = 0  # bytes fed but not yet consumed by a complete message

    def feed(self, data: bytes) -> list[BedrockEvent]:
        self._buffer.add_data(data)
        self._pending += len(data)
        events = []
        try:
            for message in self._buffer:
                self._pending -= message.prelude.total_length
                events.append(_event_of(message.headers, message.payload))
        except (ParserError, KeyError, ValueError, struct.error):  # a bad CRC, length, header type or UTF-8
            raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="invalid event-stream framing") from None
        return events

    def close(self) -> list[BedrockEvent]:
        if self._pending:
            raise UpstreamFailure(ErrorClass.CONNECTION, 200, detail="stream ended inside an event")
        return []


def _event_of(headers: dict[str, Any], payload: bytes) -> BedrockEvent:
    kind = headers.get(":message-type")
    name = headers.get({"event": ":event-type", "exception": ":exception-type"}.get(kind, ":error-code"))
    if kind not in ("event", "exception", "error") or not isinstance(name, str):
        raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="event-stream message without a type")
    if kind == "error":
        return BedrockEvent(kind, name, {})
    try:
        body = orjson.loads(payload) if payload else {}
    except orjson.JSONDecodeError:
        raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="event payload is not JSON") from None
    if not isinstance(body, dict):
        raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="event payload is not an object")
    return BedrockEvent(kind, name, body)


def usage_from_bedrock(usage: Any) -> Usage | None:
    """Converse counts inputTokens without cache reads and writes; OpenAI's prompt_tokens includes both."""
    if not isinstance(usage, dict):
        return None
    fresh, read, write = (token_count(usage.get(k)) for k in ("inputTokens", "cacheReadInputTokens", "cacheWriteInputTokens"))
    return Usage(prompt_tokens=fresh + read + write, completion_tokens=token_count(usage.get("outputTokens")),
                 cached_tokens=read, cache_write_tokens=write)


def finish_reason(stop_reason: Any) -> str:
    return STOP_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def safe_name(value: Any) -> str | None:
    """A provider error type kept only if it looks like an identifier (never free text)."""
    return value if isinstance(value, str) and _SAFE_NAME.match(value) else None


# -- translation ---------------------------------------------------------------------
def convert_stream_event(event: BedrockEvent, state: StreamState,
                         classify: Callable[[str, int | None], UpstreamFailure]) -> list[dict[str, Any]]:
    if event.kind != "event":
        raise classify(event.name, None)
    handler = _HANDLERS.get(event.name)
    if handler is None:
        return []  # event types added to the API later carry nothing we translate
    return handler(event.payload, state)


def _message_start(payload: dict[str, Any], state: StreamState) -> list[dict[str, Any]]:
    return [chunk(state, state.model, {"role": "assistant", "content": ""})]


def _block_start(payload: dict[str, Any], state: StreamState) -> list[dict[str, Any]]:
    tool = (payload.get("start") or {}).get("toolUse")
    if not isinstance(tool, dict):
        return []
    if not isinstance(tool.get("toolUseId"), str) or not isinstance(tool.get("name"), str):
        raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="toolUse start without id or name")
    tools: dict[Any, int] = state.extra.setdefault("tools", {})
    index = tools[payload.get("contentBlockIndex")] = len(tools)
    call = {"index": index, "id": tool["toolUseId"], "type": "function",
            "function": {"name": tool["name"], "arguments": ""}}
    return [chunk(state, state.model, {"tool_calls": [call]})]


def _block_delta(payload: dict[str, Any], state: StreamState) -> list[dict[str, Any]]:
    delta = payload.get("delta")
    if not isinstance(delta, dict):
        raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="contentBlockDelta without a delta")
    if isinstance(delta.get("text"), str):
        state.completion_chars += len(delta["text"])
        return [chunk(state, state.model, {"content": delta["text"]})]
    if isinstance(delta.get("toolUse"), dict):
        index = state.extra.get("tools", {}).get(payload.get("contentBlockIndex"))
        fragment = delta["toolUse"].get("input")
        if index is None or not isinstance(fragment, str):
            raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="toolUse delta outside a toolUse block")
        state.completion_chars += len(fragment)
        return [chunk(state, state.model, {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})]
    reasoning = delta.get("reasoningContent")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("text"), str):
        state.completion_chars += len(reasoning["text"])
        return [chunk(state, state.model, {"reasoning_content": reasoning["text"]})]
    return []  # reasoning signatures, redacted reasoning, citations: nothing OpenAI clients read


def _message_stop(payload: dict[str, Any], state: StreamState) -> list[dict[str, Any]]:
    state.finish_reason = finish_reason(payload.get("stopReason"))
    state.done = True
    return [chunk(state, state.model, {}, state.finish_reason)]


def _metadata(payload: dict[str, Any], state: StreamState) -> list[dict[str, Any]]:
    usage = usage_from_bedrock(payload.get("usage"))
    if usage is not None:
        state.usage = usage
    return []


_HANDLERS = {
    "messageStart": _message_start, "contentBlockStart": _block_start, "contentBlockDelta": _block_delta,
    "contentBlockStop": lambda payload, state: [], "messageStop": _message_stop, "metadata": _metadata,
}
