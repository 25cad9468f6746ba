"""The OpenAI Chat Completions request as Keyway accepts it: parsed once, validated, typed."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from app.gateway.errors import InvalidRequest
from app.validation import nesting_problem, text_problem

# The width of usage_records.model: a longer name could be answered but never recorded.
MAX_MODEL = 128
# Far below what orjson can encode (~250 levels): nothing that passes the edge fails to re-encode later.
MAX_DEPTH = 64

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}

# Every top-level Chat Completions parameter Keyway knows; anything else is a 400, not a silent drop.
KNOWN_PARAMS = {
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
    "top_p", "n", "stop", "tools", "tool_choice", "parallel_tool_calls", "response_format", "reasoning_effort",
    "user", "seed", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "logit_bias",
    "metadata", "store", "service_tier", "modalities", "prediction", "audio", "web_search_options",
    "verbosity", "prompt_cache_key", "safety_identifier", "functions", "function_call",
}


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    # Everything the client sent except byok_conf, for adapters to translate.
    params: dict[str, Any] = field(default_factory=dict)
    # Size of the serialized messages, for the worst-case credit reservation.
    prompt_bytes: int = 0

    @property
    def max_output_tokens(self) -> int | None:
        value = self.params.get("max_completion_tokens", self.params.get("max_tokens"))
        return value if isinstance(value, int) else None

    @property
    def choices(self) -> int:
        n = self.params.get("n")
        return n if isinstance(n, int) and n > 0 else 1


def parse_body(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = exc.args[0].split(":")[0]
        if reason.startswith(("depth limit", "recursion limit")):  # orjson's own bound, far above ours
            raise InvalidRequest(f"request body is nested more than {MAX_DEPTH} levels deep") from None
        raise InvalidRequest(f"request body is not valid JSON ({reason})") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"request body must be a JSON object, not {_json_type(body)}")
    problem = nesting_problem(body, MAX_DEPTH)
    if problem:
        raise InvalidRequest(f"request body {problem}")
    return body


def parse_chat_request(body: dict[str, Any]) -> ChatRequest:
    """Validate the OpenAI parameters (byok_conf already removed by the caller)."""
    unknown = sorted(set(body) - KNOWN_PARAMS)
    if unknown:
        if text_problem(unknown[0], 64):
            raise InvalidRequest("unrecognized request argument (its name is not short clean text)")
        raise InvalidRequest(f"unrecognized request argument: {unknown[0]}", param=unknown[0])
    model = body.get("model")
    if model is None:
        raise InvalidRequest("'model' is required", param="model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' must be a non-empty string", param="model")
    problem = text_problem(model.strip(), MAX_MODEL)
    if problem:
        raise InvalidRequest(f"'model' {problem}", param="model")
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest("'messages' is required", param="messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        _check_message(i, message)
    stream = _optional(body, "stream", bool, False)
    options = _optional(body, "stream_options", dict, None)
    if options is not None and not stream:
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true", param="stream_options")
    include_usage = bool(options and options.get("include_usage") is True)
    for name in ("max_tokens", "max_completion_tokens", "n", "top_logprobs", "seed"):
        value = _optional(body, name, int, None)
        if value is not None and name != "seed" and value < (0 if name == "top_logprobs" else 1):
            raise InvalidRequest(f"'{name}' must be a positive integer", param=name)
    _number_range(body, "temperature", 0, 2)
    _number_range(body, "top_p", 0, 1)
    _number_range(body, "presence_penalty", -2, 2)
    _number_range(body, "frequency_penalty", -2, 2)
    stop = body.get("stop")
    if stop is not None and not (isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))):
        raise InvalidRequest("'stop' must be a string or an array of strings", param="stop")
    _optional(body, "tools", list, None)
    _optional(body, "response_format", dict, None)
    _optional(body, "user", str, None)
    _optional(body, "parallel_tool_calls", bool, None)
    effort = _optional(body, "reasoning_effort", str, None)
    if effort is not None and effort not in ("minimal", "low", "medium", "high", "none"):
        raise InvalidRequest("'reasoning_effort' must be one of none, minimal, low, medium, high", param="reasoning_effort")
    return ChatRequest(
        model=model.strip(), messages=messages, stream=stream, include_usage=include_usage,
        params=body, prompt_bytes=len(orjson.dumps(messages)),
    )


def _check_message(i: int, message: Any) -> None:
    param = f"messages[{i}]"
    if not isinstance(message, dict):
        raise InvalidRequest(f"'{param}' must be an object", param=param)
    role = message.get("role")
    if role not in ROLES:
        raise InvalidRequest(f"'{param}.role' must be one of {', '.join(sorted(ROLES))}", param=f"{param}.role")
    content = message.get("content")
    if content is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return
        raise InvalidRequest(f"'{param}.content' is required", param=f"{param}.content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise InvalidRequest(f"'{param}.content' must be a string or an array of content parts", param=f"{param}.content")
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise InvalidRequest(f"'{param}.content[{j}]' must be an object with a 'type'", param=f"{param}.content[{j}]")


def _optional(body: dict, name: str, kind: type, default: Any) -> Any:
    value = body.get(name)
    if value is None:
        return default
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise InvalidRequest(f"'{name}' must be {_TYPE_NAMES[kind]}", param=name)
    return value


def _number_range(body: dict, name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be a number between {low} and {high}", param=name)


_TYPE_NAMES = {bool: "a boolean", dict: "an object", list: "an array", int: "an integer", str: "a string"}


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
