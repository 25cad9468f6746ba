"""A fake Anthropic Messages API (`POST /v1/messages`), from the API reference.

It checks what the real API checks (x-api-key, anthropic-version, JSON, model,
max_tokens, message roles and block types, tool_result pairing, thinking budget
and sampling rules, unknown fields), answers with a Message or the SSE event
sequence (message_start, ping, content_block_start/delta/stop with text, thinking
and input_json deltas, message_delta with cumulative usage, message_stop), speaks
Anthropic's error shape and applies scripted faults. The same behaviour serves
Claude on Vertex AI (`rawPredict`, model in the URL, `anthropic_version` in the body).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from simulators.server import Fault, FakeServer, Received, Reject, stream_events

KNOWN = {"model", "messages", "max_tokens", "system", "temperature", "top_p", "top_k", "stop_sequences",
         "stream", "tools", "tool_choice", "metadata", "thinking", "service_tier"}
BLOCKS = {"user": {"text", "image", "tool_result", "document"},
          "assistant": {"text", "tool_use", "thinking", "redacted_thinking"}}
ERRORS = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
          403: "permission_error", 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
          500: "api_error", 529: "overloaded_error"}


def count_tokens(text: str) -> int:
    return max(1, len(text) // 4)


@dataclass
class Script:
    """What the fake model answers; tests set fields, reset() restores the defaults."""

    reply: str = "Hello from the fake Claude. All systems nominal."
    tool_call: dict[str, Any] | None = None  # {"name": ..., "input": {...}} when the request offers that tool
    thinking: str = ""
    cache_read: int = 0
    cache_write: int = 0
    stop_reason: str = "end_turn"
    extra: dict[str, Any] = field(default_factory=dict)


def invalid(message: str) -> Reject:
    return Reject(400, {"type": "error", "error": {"type": "invalid_request_error", "message": message}})


def validate_body(body: Any, vertex: bool = False) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    extra = sorted(set(body) - KNOWN - ({"anthropic_version"} if vertex else set()))
    if extra:
        raise invalid(f"{extra[0]}: Extra inputs are not permitted")
    if vertex:
        if body.get("anthropic_version") != "vertex-2023-10-16":
            raise invalid("anthropic_version: Input should be 'vertex-2023-10-16'")
        if "model" in body:
            raise invalid("model: Extra inputs are not permitted (the model is in the URL)")
    elif not isinstance(body.get("model"), str):
        raise invalid("model: Field required")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        raise invalid("max_tokens: Field required")
    _check_messages(body.get("messages"))
    _check_sampling(body)
    _check_tools(body)
    return body


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise invalid("messages: at least one message is required")
    previous_tool_ids: set[str] = set()
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in BLOCKS:
            raise invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks:
            raise invalid(f"messages.{i}.content: must be a string or a non-empty list of blocks")
        tool_ids = set()
        for j, block in enumerate(blocks):
            kind = block.get("type")
            if kind not in BLOCKS[role]:
                raise invalid(f"messages.{i}.content.{j}.type: '{kind}' is not allowed in a {role} message")
            if kind == "text" and not block.get("text"):
                raise invalid(f"messages.{i}.content.{j}.text: text content blocks must be non-empty")
            if kind == "image":
                _check_image(block.get("source") or {}, f"messages.{i}.content.{j}")
            if kind == "tool_use":
                if not isinstance(block.get("input"), dict) or not block.get("id") or not block.get("name"):
                    raise invalid(f"messages.{i}.content.{j}: tool_use needs id, name and an input object")
                tool_ids.add(block["id"])
            if kind == "tool_result" and block.get("tool_use_id") not in previous_tool_ids:
                raise invalid(f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks")
        previous_tool_ids = tool_ids


def _check_image(source: dict[str, Any], where: str) -> None:
    if source.get("type") == "base64":
        if source.get("media_type") not in ("image/jpeg", "image/png", "image/gif", "image/webp") or not source.get("data"):
            raise invalid(f"{where}.source: base64 images need media_type and data")
    elif source.get("type") == "url":
        if not str(source.get("url", "")).startswith("https://"):
            raise invalid(f"{where}.source.url: must be an https URL")
    else:
        raise invalid(f"{where}.source.type: Input should be 'base64' or 'url'")


def _check_sampling(body: dict[str, Any]) -> None:
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 1:
        raise invalid("temperature: Input should be less than or equal to 1")
    thinking = body.get("thinking")
    if thinking is not None:
        budget = thinking.get("budget_tokens")
        if thinking.get("type") != "enabled" or not isinstance(budget, int) or budget < 1024:
            raise invalid("thinking.budget_tokens: Input should be greater than or equal to 1024")
        if budget >= body["max_tokens"]:
            raise invalid("`max_tokens` must be greater than `thinking.budget_tokens`")
        if temperature not in (None, 1):
            raise invalid("`temperature` may only be set to 1 when thinking is enabled")
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) and s.strip() for s in stops)):
        raise invalid("stop_sequences: each stop sequence must contain non-whitespace")


def _check_tools(body: dict[str, Any]) -> None:
    names = set()
    for k, tool in enumerate(body.get("tools") or []):
        if not re.match(r"^[a-zA-Z0-9_-]{1,128}$", str(tool.get("name"))) or not isinstance(tool.get("input_schema"), dict):
            raise invalid(f"tools.{k}: a tool needs a valid name and an input_schema object")
        names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        if choice.get("type") not in ("auto", "any", "tool", "none"):
            raise invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
        if choice["type"] == "tool" and choice.get("name") not in names:
            raise invalid("tool_choice.name: no tool of that name")


# -- answers -------------------------------------------------------------------------
def message(body: dict[str, Any], model: str, script: Script) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if script.thinking:
        content.append({"type": "thinking", "thinking": script.thinking, "signature": "sig-fake"})
    content.append({"type": "text", "text": script.reply})
    stop = script.stop_reason
    call = _tool_call(body, script)
    if call:
        content.append(call)
        stop = "tool_use"
    return {"id": "msg_fake01", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop, "stop_sequence": None, "usage": usage(body, script)}


def usage(body: dict[str, Any], script: Script) -> dict[str, Any]:
    prompt = count_tokens(orjson.dumps([body.get("system"), body["messages"]]).decode())
    total = prompt + script.cache_read + script.cache_write
    return {"input_tokens": total - script.cache_read - script.cache_write, "output_tokens":
            count_tokens(script.reply + script.thinking) + (8 if _tool_call(body, script) else 0),
            "cache_read_input_tokens": script.cache_read, "cache_creation_input_tokens": script.cache_write}


def _tool_call(body: dict[str, Any], script: Script) -> dict[str, Any] | None:
    offered = {t["name"] for t in body.get("tools") or []}
    if script.tool_call is None or script.tool_call["name"] not in offered:
        return None
    return {"type": "tool_use", "id": "toolu_fake01", "name": script.tool_call["name"], "input": script.tool_call["input"]}


def events(body: dict[str, Any], model: str, script: Script) -> list[bytes]:
    full = message(body, model, script)
    final_usage = full["usage"]
    start = {**full, "content": [], "stop_reason": None, "usage": {**final_usage, "output_tokens": 1}}
    out = [_event("message_start", {"type": "message_start", "message": start}), _event("ping", {"type": "ping"})]
    for index, block in enumerate(full["content"]):
        out += _block_events(index, block)
    out.append(_event("message_delta", {"type": "message_delta",
                                        "delta": {"stop_reason": full["stop_reason"], "stop_sequence": None},
                                        "usage": final_usage}))
    out.append(_event("message_stop", {"type": "message_stop"}))
    return out


def _block_events(index: int, block: dict[str, Any]) -> list[bytes]:
    kind = block["type"]
    empty = {"text": {"type": "text", "text": ""}, "thinking": {"type": "thinking", "thinking": ""},
             "tool_use": {**block, "input": {}}}[kind]
    out = [_event("content_block_start", {"type": "content_block_start", "index": index, "content_block": empty})]
    if kind == "text":
        deltas = [{"type": "text_delta", "text": w} for w in re.findall(r"\S+\s*", block["text"])]
    elif kind == "thinking":
        deltas = [{"type": "thinking_delta", "thinking": w} for w in re.findall(r"\S+\s*", block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    else:
        raw = orjson.dumps(block["input"]).decode()
        deltas = [{"type": "input_json_delta", "partial_json": ""}]
        deltas += [{"type": "input_json_delta", "partial_json": raw[i:i + 7]} for i in range(0, len(raw), 7)]
    out += [_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
    out.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\n".encode() + b"data: " + orjson.dumps(payload) + b"\n\n"


def error_body(status: int, credential: str | None) -> dict[str, Any]:
    kind = ERRORS.get(status, "api_error")
    text = {401: f"invalid x-api-key {credential}", 429: f"Number of requests has exceeded your rate limit ({credential})",
            529: "Overloaded"}.get(status, f"error {status}")
    return {"type": "error", "error": {"type": kind, "message": text}}


def answer(handler, body: dict[str, Any], model: str, script: Script, fault: Fault | None) -> None:
    """A Message, or its event stream, with any scripted fault applied."""
    if not body.get("stream"):
        handler.send_json(200, message(body, model, script), {"request-id": "req_fake01"}, fault=fault)
        return
    out = events(body, model, script)
    if fault is not None and fault.kind == "malformed":
        out[2] = b"event: content_block_start\ndata: {\"type\": \"content_block_start\", \"index\n\n"
    if fault is not None and fault.kind == "stream_error":  # Anthropic reports overload mid-stream this way
        out = out[:fault.after_events] + [_event("error", {"type": "error", "error": {
            "type": "overloaded_error", "message": "Overloaded"}})]
    stream_events(handler, out, fault)


class FakeAnthropic(FakeServer):
    name = "anthropic"

    def __init__(self) -> None:
        super().__init__()
        self.script = Script()

    def reset(self) -> None:
        super().reset()
        self.script = Script()

    def credential(self, handler) -> str | None:
        return handler.headers.get("x-api-key")

    def error_body(self, status: int, credential: str | None) -> Any:
        return error_body(status, credential)

    def handle(self, handler, received: Received, fault: Fault | None) -> None:
        if urlsplit(received.path).path != "/v1/messages":
            raise Reject(404, {"type": "error", "error": {"type": "not_found_error", "message": "Not Found"}})
        if not received.headers.get("x-api-key"):
            raise Reject(401, {"type": "error", "error": {"type": "authentication_error",
                                                          "message": "x-api-key header is required"}})
        if not received.headers.get("anthropic-version"):
            raise invalid("anthropic-version: header is required")
        if "application/json" not in received.headers.get("content-type", ""):
            raise invalid("content-type must be application/json")
        try:
            body = validate_body(received.json())
        except orjson.JSONDecodeError:
            raise invalid("request body is not valid JSON") from None
        answer(handler, body, body["model"], self.script, fault)
