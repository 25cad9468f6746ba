"""A fake Gemini API (Google AI Studio), from the API reference.

`POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent?alt=sse`.
It checks the `x-goog-api-key` header (and, stricter than Google, refuses a `key`
query parameter: Keyway must never put a key in a URL), the GenerateContentRequest
shape (contents/parts, roles, unknown fields, functionResponse objects, tool config,
generationConfig fields), answers GenerateContentResponse objects with usageMetadata
(cachedContentTokenCount, thoughtsTokenCount), streams them as SSE with cumulative
usage in every chunk and the finishReason in the last, speaks Google's error shape
(`{"error": {"code", "message", "status", "details"}}`) and applies scripted faults.
The same behaviour serves Gemini on Vertex AI, where `role` is required and
`fileData` URLs are accepted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson

from simulators.server import Fault, FakeServer, Received, Reject, stream_events

KNOWN = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings",
         "cachedContent", "labels"}
GENERATION = {"temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences", "seed",
              "presencePenalty", "frequencyPenalty", "responseMimeType", "responseSchema", "responseJsonSchema",
              "thinkingConfig", "responseLogprobs", "logprobs"}
PART_KINDS = {"text", "inlineData", "fileData", "functionCall", "functionResponse"}
STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
PATH = re.compile(r"^/v1beta/models/([^/:]+):(generateContent|streamGenerateContent)$")


def count_tokens(text: str) -> int:
    return max(1, len(text) // 4)


@dataclass
class Script:
    reply: str = "Hello from the fake Gemini. All systems nominal."
    tool_call: dict[str, Any] | None = None  # {"name": ..., "args": {...}} when the request declares that function
    cached_tokens: int = 0
    thoughts_tokens: int = 0
    finish_reason: str = "STOP"


def google_error(status: int, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": status, "message": message, "status": STATUS.get(status, "UNKNOWN")}
    if details:
        error["details"] = details
    return {"error": error}


def invalid(message: str) -> Reject:
    return Reject(400, google_error(400, message))


def api_key_invalid_body(key: str) -> dict[str, Any]:
    """What AI Studio answers for a wrong key: 400 INVALID_ARGUMENT with reason API_KEY_INVALID."""
    return google_error(400, f"API key not valid. Please pass a valid API key. ({key})", [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
         "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}])


def error_body(status: int, credential: str | None) -> dict[str, Any]:
    if status == 429:
        return google_error(429, f"Resource has been exhausted (e.g. check quota) for key {credential}.", [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}])
    if status == 503:
        return google_error(503, "The model is overloaded. Please try again later.")
    if status == 403:
        return google_error(403, f"Permission denied on resource (key {credential}).")
    return google_error(status, f"error {status}")


def validate_body(body: Any, vertex: bool = False) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("Invalid JSON payload received. Expected an object.")
    for name in sorted(set(body) - KNOWN):
        raise invalid(f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.')
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise invalid("* GenerateContentRequest.contents: contents is not specified")
    for i, content in enumerate(contents):
        role = content.get("role")
        if (vertex and role is None) or role not in (None, "user", "model"):
            raise invalid(f"* GenerateContentRequest.contents[{i}].role: Please use a valid role: user, model.")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise invalid(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.")
        for j, part in enumerate(parts):
            _check_part(part, f"contents[{i}].parts[{j}]", vertex)
    if "systemInstruction" in body:
        for part in body["systemInstruction"].get("parts") or [{}]:
            if not isinstance(part.get("text"), str):
                raise invalid("* GenerateContentRequest.system_instruction: text parts only")
    _check_tools(body)
    config = body.get("generationConfig") or {}
    for name in sorted(set(config) - GENERATION):
        raise invalid(f'Invalid JSON payload received. Unknown name "{name}" at \'generation_config\'.')
    if "thinkingConfig" in config and not isinstance(config["thinkingConfig"].get("thinkingBudget"), int):
        raise invalid("* GenerateContentRequest.generation_config.thinking_config.thinking_budget: must be an integer")
    if "responseJsonSchema" in config and config.get("responseMimeType") != "application/json":
        raise invalid("* responseJsonSchema requires responseMimeType application/json")
    return body


def _check_part(part: dict[str, Any], where: str, vertex: bool) -> None:
    kinds = PART_KINDS & set(part)
    if len(kinds) != 1:
        raise invalid(f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have one initialized field")
    kind = kinds.pop()
    if kind == "inlineData" and not (part[kind].get("mimeType") and part[kind].get("data")):
        raise invalid(f"* GenerateContentRequest.{where}.inline_data: mimeType and data are required")
    if kind == "fileData":
        uri = str(part[kind].get("fileUri", ""))
        if not part[kind].get("mimeType") or not (vertex and uri.startswith(("https://", "gs://"))):
            raise invalid(f"* GenerateContentRequest.{where}.file_data.file_uri: Invalid or unsupported file uri")
    if kind == "functionCall" and not (part[kind].get("name") and isinstance(part[kind].get("args", {}), dict)):
        raise invalid(f"* GenerateContentRequest.{where}.function_call: name and args object required")
    if kind == "functionResponse" and not (part[kind].get("name") and isinstance(part[kind].get("response"), dict)):
        raise invalid(f"* GenerateContentRequest.{where}.function_response.response: must be an object")


def _check_tools(body: dict[str, Any]) -> None:
    names = set()
    for tool in body.get("tools") or []:
        for decl in tool.get("functionDeclarations") or []:
            if not decl.get("name"):
                raise invalid("* GenerateContentRequest.tools.function_declarations.name: required")
            names.add(decl["name"])
    config = (body.get("toolConfig") or {}).get("functionCallingConfig")
    if config is not None:
        if config.get("mode") not in ("AUTO", "ANY", "NONE", "VALIDATED"):
            raise invalid("* GenerateContentRequest.tool_config.function_calling_config.mode: invalid")
        if any(n not in names for n in config.get("allowedFunctionNames") or []):
            raise invalid("* allowed_function_names: must name declared functions")


# -- answers ----------------------------------------------------------------------------
def _usage(body: dict[str, Any], script: Script, candidates: int) -> dict[str, Any]:
    prompt = count_tokens(orjson.dumps([body.get("systemInstruction"), body["contents"]]).decode()) + script.cached_tokens
    meta = {"promptTokenCount": prompt, "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + candidates + script.thoughts_tokens}
    if script.cached_tokens:
        meta["cachedContentTokenCount"] = script.cached_tokens
    if script.thoughts_tokens:
        meta["thoughtsTokenCount"] = script.thoughts_tokens
    return meta


def _call(body: dict[str, Any], script: Script) -> dict[str, Any] | None:
    declared = {d["name"] for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []}
    if script.tool_call is None or script.tool_call["name"] not in declared:
        return None
    return {"functionCall": {"name": script.tool_call["name"], "args": script.tool_call["args"]}}


def response(body: dict[str, Any], model: str, script: Script) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": script.reply}]
    call = _call(body, script)
    if call:
        parts.append(call)
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": script.finish_reason,
                            "index": 0}],
            "usageMetadata": _usage(body, script, count_tokens(script.reply) + (6 if call else 0)),
            "modelVersion": model, "responseId": "resp-fake01"}


def chunks(body: dict[str, Any], model: str, script: Script) -> list[dict[str, Any]]:
    words = re.findall(r"\S+\s*", script.reply)
    out, sent = [], ""
    for word in words:
        sent += word
        out.append({"candidates": [{"content": {"role": "model", "parts": [{"text": word}]}, "index": 0}],
                    "usageMetadata": _usage(body, script, count_tokens(sent)), "modelVersion": model,
                    "responseId": "resp-fake01"})
    call = _call(body, script)
    last = {"candidates": [{"content": {"role": "model", "parts": [call] if call else [{"text": ""}]},
                            "finishReason": script.finish_reason, "index": 0}],
            "usageMetadata": _usage(body, script, count_tokens(script.reply) + (6 if call else 0)),
            "modelVersion": model, "responseId": "resp-fake01"}
    return out + [last]


def answer(handler, body: dict[str, Any], model: str, script: Script, stream: bool, fault: Fault | None) -> None:
    if not stream:
        handler.send_json(200, response(body, model, script), fault=fault)
        return
    out = [b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks(body, model, script)]
    if fault is not None and fault.kind == "malformed":
        out[1] = b"data: {\"candidates\": [{\"content\r\n\r\n"
    if fault is not None and fault.kind == "stream_error":
        out = out[:fault.after_events] + [b"data: " + orjson.dumps(error_body(503, None)) + b"\r\n\r\n"]
    stream_events(handler, out, fault)


def check_headers(received: Received) -> None:
    if "application/json" not in received.headers.get("content-type", ""):
        raise invalid("Content-Type must be application/json")


class FakeGemini(FakeServer):
    name = "gemini"

    def __init__(self) -> None:
        super().__init__()
        self.script = Script()

    def reset(self) -> None:
        super().reset()
        self.script = Script()

    def credential(self, handler) -> str | None:
        return handler.headers.get("x-goog-api-key")

    def error_body(self, status: int, credential: str | None) -> Any:
        return error_body(status, credential)

    def handle(self, handler, received: Received, fault: Fault | None) -> None:
        parts = urlsplit(received.path)
        query = parse_qs(parts.query)
        if "key" in query:
            raise invalid("this fake refuses API keys in the URL (Keyway must send x-goog-api-key)")
        match = PATH.match(parts.path)
        if not match:
            raise Reject(404, google_error(404, "Not Found"))
        if not received.headers.get("x-goog-api-key"):
            raise Reject(403, google_error(403, "Method doesn't allow unregistered callers (callers without "
                                                "established identity). Please use API Key or other form of API "
                                                "consumer identity to call this API."))
        check_headers(received)
        stream = match.group(2) == "streamGenerateContent"
        if stream and query.get("alt") != ["sse"]:
            raise invalid("this fake serves streams only as SSE (alt=sse)")
        try:
            body = validate_body(received.json())
        except orjson.JSONDecodeError:
            raise invalid("Invalid JSON payload received.") from None
        answer(handler, body, unquote(match.group(1)), self.script, stream, fault)
