"""Anthropic Messages API (`POST /v1/messages`): the OpenAI request translated out, the answer back.

Choices a reader should know:
- `max_tokens` is required by Anthropic; without one from the client we send
  DEFAULT_MAX_TOKENS (plus the thinking budget when `reasoning_effort` asks for thinking).
- System and developer messages anywhere in the history become the top-level `system`.
- `reasoning_effort` maps to a thinking budget (THINKING_BUDGETS); thinking comes back
  as `reasoning_content`. Anthropic reports no separate thinking-token count, so
  `reasoning_tokens` stays 0 (thinking is inside `output_tokens` and priced as output).
- `response_format` json_object/json_schema, `n` > 1, penalties, logprobs and seed get a 400.
"""
from __future__ import annotations

from typing import Any

import orjson

from app.gateway.errors import InvalidRequest
from app.gateway.providers import anthropic_stream
from app.gateway.providers.base import Completion, Credentials, Provider, StreamState, UpstreamRequest
from app.gateway.providers.openai_input import (
    function_tools, image_of, max_tokens, reject_unknown, response_format, stop_list, text_of, tool_arguments,
    tool_choice, unsupported,
)
from app.gateway.schema import ChatRequest

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384}
SUPPORTED = {"max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "tools", "tool_choice",
             "parallel_tool_calls", "response_format", "reasoning_effort", "user", "n"}


def messages_body(req: ChatRequest, provider: str) -> dict[str, Any]:
    """The Messages API body (without `model`) for an OpenAI chat request."""
    reject_unknown(req, provider, SUPPORTED)
    system, messages = _messages(req.messages, provider)
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = [{"type": "text", "text": text} for text in system]
    budget = _thinking_budget(req, provider)
    limit = max_tokens(req)
    if budget is not None:
        if limit is not None and limit <= budget:
            raise InvalidRequest(
                f"'max_tokens' must be larger than the thinking budget ({budget}) that 'reasoning_effort' "
                f"selects for provider '{provider}'", param="max_tokens")
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    body["max_tokens"] = limit if limit is not None else DEFAULT_MAX_TOKENS + (budget or 0)
    _sampling(req, body, provider, thinking=budget is not None)
    _tools(req, body, provider, thinking=budget is not None)
    fmt = response_format(req)
    if fmt is not None and fmt[0] != "text":
        raise unsupported(provider, "response_format", f"{fmt[0]} output is not available")
    if req.params.get("user") is not None:
        body["metadata"] = {"user_id": req.params["user"]}
    if req.stream:
        body["stream"] = True
    return body


def _thinking_budget(req: ChatRequest, provider: str) -> int | None:
    effort = req.params.get("reasoning_effort")
    if effort is None or effort == "none":
        return None
    return THINKING_BUDGETS[effort]


def _sampling(req: ChatRequest, body: dict[str, Any], provider: str, thinking: bool) -> None:
    temperature, top_p = req.params.get("temperature"), req.params.get("top_p")
    if temperature is not None:
        if temperature > 1:
            raise unsupported(provider, "temperature", "values above 1 are not available (range 0 to 1)")
        if thinking and temperature != 1:
            raise unsupported(provider, "temperature", "must be 1 or unset when reasoning_effort enables thinking")
        body["temperature"] = temperature
    if top_p is not None:
        if thinking and top_p < 0.95:
            raise unsupported(provider, "top_p", "must be at least 0.95 when reasoning_effort enables thinking")
        body["top_p"] = top_p
    stops = stop_list(req)
    if stops:
        body["stop_sequences"] = stops


def _tools(req: ChatRequest, body: dict[str, Any], provider: str, thinking: bool) -> None:
    tools = function_tools(req, provider)
    if tools:
        body["tools"] = [{"name": t["name"], **({"description": t["description"]} if t["description"] else {}),
                          "input_schema": t["parameters"]} for t in tools]
    choice = tool_choice(req)
    parallel = req.params.get("parallel_tool_calls")
    mode = choice[0] if choice else None
    if thinking and mode in ("required", "function"):
        raise unsupported(provider, "tool_choice", "a forced tool cannot be combined with reasoning_effort")
    if mode is None and parallel is False and tools:
        mode = "auto"
    if mode is None or (not tools and mode != "none"):
        return
    if mode == "none":
        body["tool_choice"] = {"type": "none"}
        return
    out: dict[str, Any] = {"type": {"auto": "auto", "required": "any", "function": "tool"}[mode]}
    if mode == "function":
        out["name"] = choice[1]
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    body["tool_choice"] = out


def _messages(messages: list[dict[str, Any]], provider: str) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role, where = message["role"], f"messages[{i}]"
        if role in ("system", "developer"):
            system.append(text_of(message.get("content"), where, provider))
            continue
        if role == "user":
            _append(out, "user", _user_blocks(message.get("content"), where, provider))
        elif role == "assistant":
            _append(out, "assistant", _assistant_blocks(message, where, provider))
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise InvalidRequest(f"'{where}.tool_call_id' is required", param=f"{where}.tool_call_id")
            text = text_of(message.get("content"), where, provider)
            _append(out, "user", [{"type": "tool_result", "tool_use_id": call_id, "content": text}])
        else:
            raise unsupported(provider, f"{where}.role", f"role '{role}' (use tools and tool messages)")
    return system, out


def _append(out: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Consecutive turns of one role become one message (tool results then the user's text)."""
    if out and out[-1]["role"] == role:
        out[-1]["content"].extend(blocks)
    else:
        out.append({"role": role, "content": blocks})


def _user_blocks(content: Any, where: str, provider: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks = []
    for j, part in enumerate(content):
        kind = part["type"]
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text") or ""})
        elif kind == "image_url":
            image = image_of(part, f"{where}.content[{j}]", provider)
            source = ({"type": "url", "url": image.url} if image.url else
                      {"type": "base64", "media_type": image.media_type, "data": image.data})
            blocks.append({"type": "image", "source": source})
        else:
            raise unsupported(provider, f"{where}.content[{j}]", f"content part type '{kind[:32]}'")
    return blocks


def _assistant_blocks(message: dict[str, Any], where: str, provider: str) -> list[dict[str, Any]]:
    blocks = []
    text = text_of(message.get("content"), where, provider)
    if text:
        blocks.append({"type": "text", "text": text})
    if message.get("function_call"):
        raise unsupported(provider, f"{where}.function_call", "use tool_calls")
    for k, call in enumerate(message.get("tool_calls") or []):
        name = (call.get("function") or {}).get("name")
        if not isinstance(call.get("id"), str) or not isinstance(name, str):
            raise InvalidRequest(f"'{where}.tool_calls[{k}]' needs an id and a function name",
                                 param=f"{where}.tool_calls[{k}]")
        blocks.append({"type": "tool_use", "id": call["id"], "name": name,
                       "input": tool_arguments(call, f"{where}.tool_calls[{k}]")})
    return blocks


class Anthropic(Provider):
    id = "anthropic"
    default_base_url = "https://api.anthropic.com"

    def build_request(self, req: ChatRequest, model: str, creds: Credentials, base_url: str | None) -> UpstreamRequest:
        body = {"model": model, **messages_body(req, self.id)}
        headers = {"x-api-key": str(creds["api_key"]), "anthropic-version": API_VERSION,
                   "content-type": "application/json"}
        url = (base_url or self.default_base_url).rstrip("/") + "/v1/messages"
        return UpstreamRequest("POST", url, headers, orjson.dumps(body))

    def parse_response(self, body: bytes, req: ChatRequest, model: str) -> Completion:
        return anthropic_stream.parse_message(body, model)

    def classify_error(self, status, headers, body):
        return anthropic_stream.classify_error(status, headers, body)

    def convert_stream_event(self, event: Any, state: StreamState) -> list[dict[str, Any]]:
        return anthropic_stream.convert_event(event, state)
