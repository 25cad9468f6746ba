"""Google Gemini (AI Studio): `models/{model}:generateContent` and `:streamGenerateContent?alt=sse`.

The key travels in the `x-goog-api-key` header, never in the URL (a URL ends up in
logs and exception texts). Choices a reader should know:
- System and developer messages become `systemInstruction`; tool results become
  `functionResponse` parts named after the call they answer (Gemini matches by name).
- Tools and structured output use the JSON-Schema fields (`parametersJsonSchema`,
  `responseJsonSchema`) so OpenAI schemas pass unchanged.
- `reasoning_effort` maps to `thinkingConfig.thinkingBudget` (THINKING_BUDGETS).
- Image URLs: AI Studio takes only inline data, so an https image URL is a 400 here
  (Vertex AI takes it as `fileData`). `user`, `parallel_tool_calls: false`, `n` > 1,
  logprobs and logit_bias get a 400.
"""
from __future__ import annotations

import mimetypes
from typing import Any
from urllib.parse import quote

import orjson

from app.gateway.errors import InvalidRequest
from app.gateway.providers import gemini_stream
from app.gateway.providers.base import Completion, Credentials, Provider, StreamState, UpstreamRequest, model_in_path
from app.gateway.providers.openai_input import (
    function_tools, image_of, max_tokens, reject_unknown, response_format, stop_list, text_of, tool_arguments,
    tool_choice, tool_names_by_id, unsupported,
)
from app.gateway.schema import MAX_DEPTH, ChatRequest
from app.validation import nesting_problem

THINKING_BUDGETS = {"none": 0, "minimal": 128, "low": 1024, "medium": 8192, "high": 24576}
SUPPORTED = {"max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "tools", "tool_choice",
             "parallel_tool_calls", "response_format", "reasoning_effort", "seed", "presence_penalty",
             "frequency_penalty", "n"}
_GENERATION = {"temperature": "temperature", "top_p": "topP", "seed": "seed",
               "presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty"}


def generate_body(req: ChatRequest, provider: str, image_urls: bool) -> dict[str, Any]:
    """The GenerateContentRequest body for an OpenAI chat request."""
    reject_unknown(req, provider, SUPPORTED)
    if req.params.get("parallel_tool_calls") is False:
        raise unsupported(provider, "parallel_tool_calls", "Gemini cannot be limited to one call per turn")
    system, contents = _contents(req.messages, provider, image_urls)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    tools = function_tools(req, provider)
    if tools:
        body["tools"] = [{"functionDeclarations": [
            {"name": t["name"], "description": t["description"], "parametersJsonSchema": t["parameters"]}
            for t in tools]}]
    choice = tool_choice(req)
    if choice is not None:
        config: dict[str, Any] = {"mode": {"none": "NONE", "auto": "AUTO", "required": "ANY", "function": "ANY"}[choice[0]]}
        if choice[0] == "function":
            config["allowedFunctionNames"] = [choice[1]]
        body["toolConfig"] = {"functionCallingConfig": config}
    generation = _generation_config(req)
    if generation:
        body["generationConfig"] = generation
    return body


def _generation_config(req: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {out: req.params[name] for name, out in _GENERATION.items()
                              if req.params.get(name) is not None}
    limit = max_tokens(req)
    if limit is not None:
        config["maxOutputTokens"] = limit
    stops = stop_list(req)
    if stops:
        config["stopSequences"] = stops
    fmt = response_format(req)
    if fmt is not None and fmt[0] != "text":
        config["responseMimeType"] = "application/json"
        if fmt[1] is not None:
            config["responseJsonSchema"] = fmt[1]
    effort = req.params.get("reasoning_effort")
    if effort is not None:
        config["thinkingConfig"] = {"thinkingBudget": THINKING_BUDGETS[effort]}
    return config


def _contents(messages: list[dict[str, Any]], provider: str, image_urls: bool):
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names = tool_names_by_id(messages)
    for i, message in enumerate(messages):
        role, where = message["role"], f"messages[{i}]"
        if role in ("system", "developer"):
            system.append(text_of(message.get("content"), where, provider))
        elif role == "user":
            _append(contents, "user", _user_parts(message.get("content"), where, provider, image_urls))
        elif role == "assistant":
            _append(contents, "model", _model_parts(message, where, provider))
        elif role == "tool":
            name = names.get(message.get("tool_call_id") or "")
            if not name:
                raise InvalidRequest(f"'{where}.tool_call_id' does not match a tool call of an earlier assistant "
                                     f"message (provider '{provider}' answers tools by name)",
                                     param=f"{where}.tool_call_id")
            text = text_of(message.get("content"), where, provider)
            _append(contents, "user", [{"functionResponse": {"name": name, "response": _tool_response(text)}}])
        else:
            raise unsupported(provider, f"{where}.role", f"role '{role}' (use tools and tool messages)")
    return system, contents


def _tool_response(text: str) -> dict[str, Any]:
    """functionResponse.response must be an object: a JSON object result as is, anything else wrapped."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    # Too deep to re-encode safely: the text goes as it came, like any non-object result.
    return value if isinstance(value, dict) and not nesting_problem(value, MAX_DEPTH) else {"content": text}


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    if contents and contents[-1]["role"] == role:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _user_parts(content: Any, where: str, provider: str, image_urls: bool) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    parts = []
    for j, part in enumerate(content):
        kind = part["type"]
        if kind == "text":
            parts.append({"text": part.get("text") or ""})
        elif kind == "image_url":
            parts.append(_image_part(part, f"{where}.content[{j}]", provider, image_urls))
        else:
            raise unsupported(provider, f"{where}.content[{j}]", f"content part type '{kind[:32]}'")
    return parts


def _image_part(part: dict[str, Any], where: str, provider: str, image_urls: bool) -> dict[str, Any]:
    image = image_of(part, where, provider)
    if image.url is None:
        return {"inlineData": {"mimeType": image.media_type, "data": image.data}}
    if not image_urls:
        raise unsupported(provider, f"{where}.image_url", "image URLs are not fetched; send a base64 data: URI")
    mime = mimetypes.guess_type(image.url.split("?", 1)[0])[0]
    if mime is None or not mime.startswith("image/"):
        raise unsupported(provider, f"{where}.image_url", "the URL must end in an image file extension "
                                                          "(.png, .jpg, .gif, .webp)")
    return {"fileData": {"mimeType": mime, "fileUri": image.url}}


def _model_parts(message: dict[str, Any], where: str, provider: str) -> list[dict[str, Any]]:
    if message.get("function_call"):
        raise unsupported(provider, f"{where}.function_call", "use tool_calls")
    parts = []
    text = text_of(message.get("content"), where, provider)
    if text:
        parts.append({"text": text})
    for k, call in enumerate(message.get("tool_calls") or []):
        name = (call.get("function") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"'{where}.tool_calls[{k}].function.name' is required",
                                 param=f"{where}.tool_calls[{k}]")
        parts.append({"functionCall": {"name": name, "args": tool_arguments(call, f"{where}.tool_calls[{k}]")}})
    return parts


class Gemini(Provider):
    id = "gemini"
    default_base_url = "https://generativelanguage.googleapis.com"

    def build_request(self, req: ChatRequest, model: str, creds: Credentials, base_url: str | None) -> UpstreamRequest:
        body = generate_body(req, self.id, image_urls=False)
        method = "streamGenerateContent?alt=sse" if req.stream else "generateContent"
        url = (f"{(base_url or self.default_base_url).rstrip('/')}/v1beta/models/"
               f"{quote(model_in_path(model, self.id), safe='')}:{method}")
        headers = {"x-goog-api-key": str(creds["api_key"]), "Content-Type": "application/json"}
        return UpstreamRequest("POST", url, headers, orjson.dumps(body))

    def parse_response(self, body: bytes, req: ChatRequest, model: str) -> Completion:
        return gemini_stream.parse_response(body, model)

    def classify_error(self, status, headers, body):
        return gemini_stream.classify_error(status, headers, body)

    def convert_stream_event(self, event: Any, state: StreamState) -> list[dict[str, Any]]:
        return gemini_stream.convert_event(event, state)

    def finish_stream(self, state: StreamState) -> list[dict[str, Any]]:
        return gemini_stream.finish(state)
