"""An OpenAI Chat Completions request as a Bedrock Converse / ConverseStream request body.

Converse wants strictly alternating user/assistant turns, system prompts in a
top-level `system` list, images as inline bytes, tools as `toolSpec`s and tool
calls and results as `toolUse` / `toolResult` blocks. Anything the API cannot
honour is a 400 naming the parameter and the provider.
"""
from __future__ import annotations

import re
from typing import Any

from app.gateway.errors import InvalidRequest
from app.gateway.providers.openai_input import (
    function_tools, image_of, max_tokens, reject_unknown, stop_list, text_of, tool_arguments, tool_choice,
    unsupported,
)
from app.gateway.schema import ChatRequest

PROVIDER = "bedrock"
SUPPORTED = {"max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "tools", "tool_choice",
             "parallel_tool_calls", "response_format", "reasoning_effort", "user", "n"}
# Anthropic extended-thinking budgets (tokens) per OpenAI reasoning_effort; Anthropic's minimum is 1024.
THINKING_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384}
# Room left for the answer itself when the client set no max_tokens but asked for thinking.
ANSWER_ROOM = 4096
# Converse requestMetadata values: at most 256 of these characters.
_METADATA_VALUE = re.compile(r"[a-zA-Z0-9\s:_@$#=/+,.\-]{1,256}")


def converse_body(req: ChatRequest, model: str) -> dict[str, Any]:
    reject_unknown(req, PROVIDER, SUPPORTED)
    fmt = req.params.get("response_format")
    if fmt is not None and fmt.get("type") != "text":
        raise unsupported(PROVIDER, "response_format", "Converse has no JSON mode")
    system, messages = translate_messages(req.messages)
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    inference = _inference(req)
    tools = _tool_config(req, messages)
    thinking = _thinking(req, model, inference, tools)
    if inference:
        body["inferenceConfig"] = inference
    if tools:
        body["toolConfig"] = tools
    if thinking:
        body["additionalModelRequestFields"] = {"thinking": thinking}
    user = req.params.get("user")
    if user is not None:
        if not _METADATA_VALUE.fullmatch(user):
            raise unsupported(PROVIDER, "user", "Bedrock request metadata takes 1-256 letters, digits, "
                                               "spaces and :_@$#=/+,.- only")
        body["requestMetadata"] = {"user": user}
    return body


# -- messages ------------------------------------------------------------------
def translate_messages(openai_messages: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """(system blocks, alternating Converse messages); consecutive same-role turns are merged."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(openai_messages):
        role, where = message["role"], f"messages[{i}]"
        if role in ("system", "developer"):
            text = text_of(message.get("content"), where, PROVIDER)
            if text:
                system.append({"text": text})
            continue
        if role == "function":
            raise unsupported(PROVIDER, f"{where}.role", "the legacy 'function' role; send 'tool' messages")
        if role == "tool":
            bedrock_role, blocks = "user", [_tool_result(message, where)]
        elif role == "user":
            bedrock_role, blocks = "user", _user_blocks(message.get("content"), where)
        else:
            bedrock_role, blocks = "assistant", _assistant_blocks(message, where)
        if not blocks:
            raise InvalidRequest(f"'{where}.content' is empty; provider '{PROVIDER}' needs text, an image "
                                 "or a tool call in every message", param=f"{where}.content")
        if turns and turns[-1]["role"] == bedrock_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": bedrock_role, "content": blocks})
    return system, turns


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks = []
    for j, part in enumerate(content):
        kind = part["type"]
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise InvalidRequest(f"'{where}.content[{j}].text' must be a string", param=f"{where}.content[{j}]")
            if part["text"]:
                blocks.append({"text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(part, f"{where}.content[{j}]"))
        else:
            raise unsupported(PROVIDER, f"{where}.content[{j}]", f"content parts of type '{kind[:40]}'")
    return blocks


def _image_block(part: dict[str, Any], where: str) -> dict[str, Any]:
    image = image_of(part, where, PROVIDER)
    if image.url is not None:
        raise unsupported(PROVIDER, f"{where}.image_url",
                          "Converse takes images only inline; send the image as a base64 data: URI")
    fmt = image.media_type.split("/", 1)[1]
    return {"image": {"format": fmt, "source": {"bytes": image.data}}}


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if message.get("function_call") is not None:
        raise unsupported(PROVIDER, f"{where}.function_call", "the legacy function_call; send 'tool_calls'")
    text = text_of(message.get("content"), where, PROVIDER)
    blocks: list[dict[str, Any]] = [{"text": text}] if text else []
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise InvalidRequest(f"'{where}.tool_calls' must be an array", param=f"{where}.tool_calls")
    for k, call in enumerate(calls):
        at = f"{where}.tool_calls[{k}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(call.get("id"), str) or not isinstance(fn.get("name"), str):
            raise InvalidRequest(f"'{at}' must have an 'id' and a 'function' with a 'name'", param=at)
        blocks.append({"toolUse": {"toolUseId": call["id"], "name": fn["name"], "input": tool_arguments(call, at)}})
    return blocks


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"'{where}.tool_call_id' is required for tool messages", param=f"{where}.tool_call_id")
    text = text_of(message.get("content"), where, PROVIDER)
    return {"toolResult": {"toolUseId": call_id, "content": [{"text": text}] if text else []}}


# -- parameters ------------------------------------------------------------------
def _inference(req: ChatRequest) -> dict[str, Any]:
    inference: dict[str, Any] = {}
    limit = max_tokens(req)
    if limit is not None:
        inference["maxTokens"] = limit
    for name, key in (("temperature", "temperature"), ("top_p", "topP")):
        if req.params.get(name) is not None:
            inference[key] = req.params[name]
    stops = stop_list(req)
    if stops:
        inference["stopSequences"] = stops
    return inference


def _tool_config(req: ChatRequest, messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    tools = function_tools(req, PROVIDER)
    choice = tool_choice(req)
    if req.params.get("parallel_tool_calls") is False:
        raise unsupported(PROVIDER, "parallel_tool_calls", "Converse cannot turn parallel tool calls off")
    for i, tool in enumerate(req.params.get("tools") or []):
        if tool["function"].get("strict"):
            raise unsupported(PROVIDER, f"tools[{i}].function.strict", "Converse has no strict schema mode")
    in_history = any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])
    if choice is not None and choice[0] == "none":
        if in_history:
            raise unsupported(PROVIDER, "tool_choice", "'none' while the conversation carries tool calls")
        return None
    if not tools:
        if choice is not None:
            raise InvalidRequest("'tool_choice' is set but 'tools' is empty", param="tool_choice")
        if in_history:
            raise InvalidRequest(f"the conversation carries tool calls; provider '{PROVIDER}' needs the 'tools' "
                                 "that define them", param="tools")
        return None
    specs = []
    for tool in tools:
        spec: dict[str, Any] = {"name": tool["name"], "inputSchema": {"json": tool["parameters"]}}
        if tool["description"]:
            spec["description"] = tool["description"]
        specs.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": specs}
    if choice is not None:
        mode, name = choice
        if mode == "function" and name not in {t["name"] for t in tools}:
            raise InvalidRequest("'tool_choice' names a function that is not in 'tools'", param="tool_choice")
        config["toolChoice"] = {"auto": {}} if mode == "auto" else {"any": {}} if mode == "required" else \
            {"tool": {"name": name}}
    return config


def _thinking(req: ChatRequest, model: str, inference: dict[str, Any],
              tools: dict[str, Any] | None) -> dict[str, Any] | None:
    """reasoning_effort as an Anthropic extended-thinking budget (the only Converse models with one)."""
    effort = req.params.get("reasoning_effort")
    if effort is None or effort == "none":
        return None
    if "anthropic.claude" not in model:
        raise unsupported(PROVIDER, "reasoning_effort", "thinking budgets exist only for Anthropic Claude models")
    budget = THINKING_BUDGET[effort]
    if inference.get("temperature", 1) != 1:
        raise unsupported(PROVIDER, "temperature", "must be 1 or unset when reasoning_effort enables thinking")
    if inference.get("topP", 1) < 0.95:
        raise unsupported(PROVIDER, "top_p", "must be at least 0.95 when reasoning_effort enables thinking")
    if tools and ("any" in tools.get("toolChoice", {}) or "tool" in tools.get("toolChoice", {})):
        raise unsupported(PROVIDER, "tool_choice", "forcing a tool together with reasoning_effort")
    if "maxTokens" not in inference:
        inference["maxTokens"] = budget + ANSWER_ROOM
    elif inference["maxTokens"] <= budget:
        name = "max_completion_tokens" if req.params.get("max_completion_tokens") is not None else "max_tokens"
        raise InvalidRequest(f"'{name}' must be larger than the {budget}-token thinking budget of "
                             f"reasoning_effort '{effort}' on provider '{PROVIDER}'", param=name)
    return {"type": "enabled", "budget_tokens": budget}
