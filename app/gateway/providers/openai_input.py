"""Reading an OpenAI chat request for the native (non-OpenAI) adapters: parts, images, tools, parameters.

Every helper raises InvalidRequest naming the parameter and the provider, so a
parameter a provider cannot honour is a 400, never a silent drop.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

import orjson

from app.gateway.errors import InvalidRequest
from app.gateway.schema import MAX_DEPTH, ChatRequest
from app.validation import nesting_problem

# Parameters the gateway itself consumes or that only shape OpenAI's own transport.
ALWAYS_OK = {"model", "messages", "stream", "stream_options"}
_DATA_URI = re.compile(r"^data:(image/[a-zA-Z0-9.+-]+);base64,(.*)$", re.DOTALL)
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}


def unsupported(provider: str, param: str, why: str = "") -> InvalidRequest:
    suffix = f": {why}" if why else ""
    return InvalidRequest(f"'{param}' is not supported by provider '{provider}'{suffix}", param=param)


def reject_unknown(req: ChatRequest, provider: str, supported: Iterable[str]) -> None:
    """A 400 for the first parameter the client set that this provider cannot honour."""
    allowed = ALWAYS_OK | set(supported)
    for name in sorted(req.params):
        if name not in allowed and req.params[name] is not None:
            raise unsupported(provider, name)
    n = req.params.get("n")
    if n is not None and n != 1:
        raise unsupported(provider, "n", "only n=1 is available")


def max_tokens(req: ChatRequest) -> int | None:
    value = req.params.get("max_completion_tokens")
    if value is None:
        value = req.params.get("max_tokens")
    return value


def stop_list(req: ChatRequest) -> list[str] | None:
    stop = req.params.get("stop")
    if stop is None:
        return None
    return [stop] if isinstance(stop, str) else list(stop)


def text_of(content: Any, where: str, provider: str) -> str:
    """Content that must be plain text (system prompts, tool results): a string or text parts only."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise unsupported(provider, f"{where}.content[{j}]", "only text parts are allowed here")
        texts.append(part["text"])
    return "\n".join(texts)


@dataclass(slots=True)
class Image:
    url: str | None  # an https URL, or None for inline data
    media_type: str | None
    data: str | None  # base64, as the client sent it


def image_of(part: dict[str, Any], where: str, provider: str) -> Image:
    """An OpenAI image_url part as an https URL or validated inline base64 data."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"'{where}.image_url.url' must be a string", param=f"{where}.image_url")
    if url.startswith("https://"):
        return Image(url=url, media_type=None, data=None)
    match = _DATA_URI.match(url)
    if not match:
        raise InvalidRequest(f"'{where}.image_url.url' must be an https URL or a base64 data: URI of an image",
                             param=f"{where}.image_url")
    media_type, data = match.group(1).lower(), match.group(2).strip()
    if media_type not in IMAGE_TYPES:
        raise unsupported(provider, f"{where}.image_url", f"image type {media_type[:40]} (use png, jpeg, gif or webp)")
    if not data or len(data) % 4 or not _BASE64.fullmatch(data):
        raise InvalidRequest(f"'{where}.image_url.url' is not valid base64", param=f"{where}.image_url")
    return Image(url=None, media_type=media_type, data=data)


def tool_arguments(call: dict[str, Any], where: str) -> dict[str, Any]:
    """An assistant tool call's JSON-string arguments as an object."""
    raw = (call.get("function") or {}).get("arguments") or "{}"
    try:
        value = orjson.loads(raw) if isinstance(raw, str) else raw
    except orjson.JSONDecodeError:
        raise InvalidRequest(f"'{where}.function.arguments' is not valid JSON", param=f"{where}.function.arguments") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{where}.function.arguments' must be a JSON object", param=f"{where}.function.arguments")
    problem = nesting_problem(value, MAX_DEPTH)
    if problem:
        raise InvalidRequest(f"'{where}.function.arguments' {problem}", param=f"{where}.function.arguments")
    return value


def function_tools(req: ChatRequest, provider: str) -> list[dict[str, Any]]:
    """The client's `tools` as (name, description, parameters) function definitions."""
    tools = req.params.get("tools") or []
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise unsupported(provider, f"tools[{i}]", "only function tools are available")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise InvalidRequest(f"'tools[{i}].function.name' is required", param=f"tools[{i}].function.name")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        out.append({"name": fn["name"], "description": fn.get("description") or "", "parameters": params})
    return out


def tool_choice(req: ChatRequest) -> tuple[str, str | None] | None:
    """`tool_choice` as (mode, function name): mode is none | auto | required | function."""
    choice = req.params.get("tool_choice")
    if choice is None:
        return None
    if choice in ("none", "auto", "required"):
        return choice, None
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if isinstance(name, str) and name:
            return "function", name
    raise InvalidRequest("'tool_choice' must be none, auto, required or a function choice", param="tool_choice")


def response_format(req: ChatRequest) -> tuple[str, dict[str, Any] | None] | None:
    """`response_format` as (type, JSON schema): type is text | json_object | json_schema."""
    fmt = req.params.get("response_format")
    if fmt is None:
        return None
    kind = fmt.get("type")
    if kind in ("text", "json_object"):
        return kind, None
    if kind == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise InvalidRequest("'response_format.json_schema.schema' must be an object",
                                 param="response_format.json_schema")
        return kind, schema
    raise InvalidRequest("'response_format.type' must be text, json_object or json_schema", param="response_format")


def tool_names_by_id(messages: list[dict[str, Any]]) -> dict[str, str]:
    """tool_call_id -> function name, from the assistant turns (Gemini answers tools by name)."""
    names = {}
    for message in messages:
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and isinstance(call.get("id"), str):
                names[call["id"]] = (call.get("function") or {}).get("name") or ""
    return names
