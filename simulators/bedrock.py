"""A fake Bedrock runtime (Converse and ConverseStream), from the AWS API reference.

It checks what the real service checks: a SigV4 Authorization header whose
scope names this region and the bedrock service, verified against the secret
key it was given (a wrong signature is a 403 InvalidSignatureException), the
session token of temporary credentials, the URL-encoded model id in the path,
and the Converse body (alternating roles starting with a user turn, non-blank
text, image formats, toolConfig when tool blocks are used, inference limits,
thinking budgets). It answers Converse JSON, or ConverseStream events in real
event-stream binary framing, and AWS errors with an x-amzn-ErrorType header.
"""
from __future__ import annotations

import base64
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson

from simulators.bedrock_wire import AUTH_HEADER, AwsError, encode_message, verify_sigv4
from simulators.server import Fault, FakeServer, Received

STATUS = {
    "ThrottlingException": 429, "ServiceUnavailableException": 503, "ModelNotReadyException": 429,
    "AccessDeniedException": 403, "UnrecognizedClientException": 403, "ExpiredTokenException": 403,
    "ValidationException": 400, "ModelTimeoutException": 408, "InternalServerException": 500,
    "ModelErrorException": 424, "ResourceNotFoundException": 404,
}
MESSAGES = {
    "ThrottlingException": "Too many requests, please wait before trying again.",
    "ServiceUnavailableException": "Bedrock is unable to process your request.",
    "ModelNotReadyException": "Model is not ready for inference. Wait and try your request again.",
    "AccessDeniedException": "You don't have access to the model with the specified model ID.",
    "ModelTimeoutException": "Model has timed out in processing the request.",
}
PATH = re.compile(r"^/model/(?P<model>[^/]+)/(?P<action>converse|converse-stream)$")
TOP_LEVEL = {"messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig", "additionalModelRequestFields",
             "additionalModelResponseFieldPaths", "promptVariables", "requestMetadata", "performanceConfig"}
INFERENCE = {"maxTokens", "temperature", "topP", "stopSequences"}
BLOCKS = {"text", "image", "document", "video", "toolUse", "toolResult", "guardContent", "cachePoint",
          "reasoningContent"}
IMAGE_FORMATS = {"png", "jpeg", "gif", "webp"}


def aws_fault(error_type: str, retry_after: float | None = None, message: str | None = None) -> Fault:
    """A Fault answered as Bedrock answers that error: status, x-amzn-ErrorType, {"message"}."""
    headers = {"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/",
               "x-amzn-RequestId": str(uuid.uuid4())}
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    return Fault("status", status=STATUS[error_type], headers=headers,
                 body={"message": message or MESSAGES.get(error_type, f"{error_type} from the fake")})


def stream_exception(error_type: str, after_events: int = 0) -> Fault:
    """An exception message inside a 200 ConverseStream body, after `after_events` events."""
    return Fault("stream_exception", body=error_type[0].lower() + error_type[1:], after_events=after_events)


def count_tokens(text: str) -> int:
    return max(1, len(text) // 4)


@dataclass
class Key:
    secret: str
    session_token: str | None = None
    expired: bool = False


class FakeBedrock(FakeServer):
    name = "bedrock"

    def __init__(self, region: str = "us-east-1", reply: str = "Hello from the fake Bedrock. All systems nominal."):
        super().__init__()
        self.region = region
        self.reply = reply
        self.keys: dict[str, Key] = {}
        self.tool_call: dict[str, Any] | None = None  # {"name", "input"}: answered when the request has tools
        self.reasoning: str | None = None  # answered as reasoningContent when thinking is enabled
        self.cache_read = 0
        self.cache_write = 0

    def add_key(self, akid: str, secret: str, session_token: str | None = None, expired: bool = False) -> None:
        self.keys[akid] = Key(secret, session_token, expired)

    def reset(self) -> None:
        super().reset()
        self.tool_call, self.reasoning, self.cache_read, self.cache_write = None, None, 0, 0

    # -- the contract --------------------------------------------------------------
    def credential(self, handler) -> str | None:
        match = AUTH_HEADER.match(handler.headers.get("Authorization") or "")
        return match["akid"] if match else None

    def error_body(self, status: int, credential: str | None) -> Any:
        # Like many AWS front ends, the message names the caller's key id.
        return {"message": f"Request failed with status {status} for access key {credential}."}

    def handle(self, handler, received: Received, fault: Fault | None) -> None:
        try:
            model, stream, body = self.validate(received)
        except AwsError as error:
            handler.send_json(error.status, {"message": error.message},
                              {"x-amzn-ErrorType": f"{error.error_type}:http://internal.amazon.com/coral/"
                                                   "com.amazon.bedrock/"})
            return
        blocks, stop_reason = self._answer(body)
        usage = self._usage(body, blocks)
        if stream:
            self._stream(handler, blocks, stop_reason, usage, fault)
            return
        response = {"output": {"message": {"role": "assistant", "content": blocks}}, "stopReason": stop_reason,
                    "usage": usage, "metrics": {"latencyMs": 321}}
        handler.send_json(200, response, {"x-amzn-RequestId": str(uuid.uuid4())}, fault=fault)

    # -- checks the real API makes ------------------------------------------------------
    def validate(self, received: Received) -> tuple[str, bool, dict[str, Any]]:
        headers = received.headers
        akid, _ = verify_sigv4(received.method, received.path, headers, received.body,
                               {k: v.secret for k, v in self.keys.items()}, self.region)
        key = self.keys[akid]
        if key.session_token is not None and headers.get("x-amz-security-token") != key.session_token:
            raise AwsError(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
        if key.session_token is None and "x-amz-security-token" in headers:
            raise AwsError(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
        if key.expired:
            raise AwsError(403, "ExpiredTokenException", "The security token included in the request is expired")
        match = PATH.match(received.path)
        if received.method != "POST" or not match:
            raise AwsError(404, "UnknownOperationException", "Unknown operation.")
        model = unquote(match["model"])
        if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+(:\d+)?", model) or ":" in match["model"]:
            raise AwsError(400, "ValidationException", "The provided model identifier is invalid.")
        if "application/json" not in headers.get("content-type", ""):
            raise AwsError(400, "SerializationException", "Unexpected content type.")
        try:
            body = orjson.loads(received.body)
        except orjson.JSONDecodeError:
            raise AwsError(400, "SerializationException", "Unable to parse request body.") from None
        check_body(body, model)
        return model, match["action"] == "converse-stream", body

    # -- answers ---------------------------------------------------------------------------
    def _answer(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        blocks: list[dict[str, Any]] = []
        if self.reasoning and (body.get("additionalModelRequestFields") or {}).get("thinking"):
            blocks.append({"reasoningContent": {"reasoningText": {"text": self.reasoning, "signature": "c2lnLWZha2U="}}})
        last = body["messages"][-1]["content"]
        answering_tool = any("toolResult" in b for b in last)
        if self.tool_call and body.get("toolConfig") and not answering_tool:
            blocks.append({"text": "Let me check that."})
            blocks.append({"toolUse": {"toolUseId": "tooluse_fake01", "name": self.tool_call["name"],
                                       "input": self.tool_call["input"]}})
            return blocks, "tool_use"
        limit = (body.get("inferenceConfig") or {}).get("maxTokens")
        if limit is not None and limit < count_tokens(self.reply):
            blocks.append({"text": self.reply[: limit * 4]})
            return blocks, "max_tokens"
        blocks.append({"text": self.reply})
        return blocks, "end_turn"

    def _usage(self, body: dict[str, Any], blocks: list[dict[str, Any]]) -> dict[str, int]:
        prompt_text = " ".join(b.get("text", "") for m in body["messages"] for b in m["content"])
        prompt_text += " ".join(b["text"] for b in body.get("system") or [])
        prompt = count_tokens(prompt_text) + self.cache_read + self.cache_write
        output = count_tokens(orjson.dumps(blocks).decode())
        fresh = prompt - self.cache_read - self.cache_write
        usage = {"inputTokens": fresh, "outputTokens": output, "totalTokens": prompt + output}
        if self.cache_read or self.cache_write:
            usage.update(cacheReadInputTokens=self.cache_read, cacheWriteInputTokens=self.cache_write)
        return usage

    def _stream(self, handler, blocks: list[dict[str, Any]], stop_reason: str, usage: dict[str, int],
                fault: Fault | None) -> None:
        messages = stream_messages(blocks, stop_reason, usage)
        if fault is not None and fault.kind == "malformed":
            broken = bytearray(messages[1])
            broken[-1] ^= 0xFF  # a message CRC that does not match
            messages[1] = bytes(broken)
        handler.start_stream("application/vnd.amazon.eventstream", {"x-amzn-RequestId": str(uuid.uuid4())})
        for i, message in enumerate(messages):
            if fault is not None and i == fault.after_events:
                if fault.kind == "reset_mid_stream":
                    handler.reset_connection()
                    return
                if fault.kind == "stall":
                    time.sleep(fault.delay)
                if fault.kind == "stream_exception":
                    handler.write_chunk(exception_message(fault.body))
                    handler.end_stream()
                    return
            handler.write_chunk(message, fault if fault is not None and fault.kind == "drip" else None)
        handler.end_stream()


# -- the event stream ----------------------------------------------------------------------
def event_message(event_type: str, payload: dict[str, Any]) -> bytes:
    # Bedrock pads every event with a "p" field so that sizes do not reveal the content.
    padded = {**payload, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"[: 4 + len(event_type)]}
    return encode_message({":event-type": event_type, ":content-type": "application/json",
                           ":message-type": "event"}, orjson.dumps(padded))


def exception_message(exception_type: str, message: str = "The stream failed.") -> bytes:
    return encode_message({":exception-type": exception_type, ":content-type": "application/json",
                           ":message-type": "exception"}, orjson.dumps({"message": message}))


def stream_messages(blocks: list[dict[str, Any]], stop_reason: str, usage: dict[str, int]) -> list[bytes]:
    out = [event_message("messageStart", {"role": "assistant"})]
    for index, block in enumerate(blocks):
        out += _block_events(index, block)
        out.append(event_message("contentBlockStop", {"contentBlockIndex": index}))
    out.append(event_message("messageStop", {"stopReason": stop_reason}))
    out.append(event_message("metadata", {"usage": usage, "metrics": {"latencyMs": 321}}))
    return out


def _block_events(index: int, block: dict[str, Any]) -> list[bytes]:
    def delta(value: dict[str, Any]) -> bytes:
        return event_message("contentBlockDelta", {"contentBlockIndex": index, "delta": value})

    if "text" in block:
        return [delta({"text": w}) for w in re.findall(r"\S+\s*", block["text"])]
    if "reasoningContent" in block:
        text = block["reasoningContent"]["reasoningText"]["text"]
        half = len(text) // 2
        return [delta({"reasoningContent": {"text": text[:half]}}), delta({"reasoningContent": {"text": text[half:]}}),
                delta({"reasoningContent": {"signature": block["reasoningContent"]["reasoningText"]["signature"]}})]
    tool = block["toolUse"]
    raw = orjson.dumps(tool["input"]).decode()
    third = max(1, len(raw) // 3)
    start = event_message("contentBlockStart", {"contentBlockIndex": index, "start": {
        "toolUse": {"toolUseId": tool["toolUseId"], "name": tool["name"]}}})
    return [start] + [delta({"toolUse": {"input": raw[i:i + third]}}) for i in range(0, len(raw), third)]


# -- the Converse body -----------------------------------------------------------------------
def check_body(body: Any, model: str) -> None:
    if not isinstance(body, dict):
        raise AwsError(400, "SerializationException", "Unable to parse request body.")
    for name in body:
        if name not in TOP_LEVEL:
            raise AwsError(400, "ValidationException", f"Unknown parameter in input: '{name}'.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise AwsError(400, "ValidationException", "The messages field is required.")
    tool_ids: set[str] = set()
    for i, message in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if message.get("role") != expected:
            raise AwsError(400, "ValidationException", "A conversation must start with a user message and "
                                                       "alternate between user and assistant roles.")
        content = message.get("content")
        if not isinstance(content, list) or not content:
            raise AwsError(400, "ValidationException", f"messages.{i}.content must not be empty.")
        for j, block in enumerate(content):
            _check_block(block, f"messages.{i}.content.{j}", tool_ids)
    for j, block in enumerate(body.get("system") or []):
        if set(block) != {"text"} or not str(block["text"]).strip():
            raise AwsError(400, "ValidationException", f"system.{j} must be a non-blank text block.")
    if tool_ids and "toolConfig" not in body:
        raise AwsError(400, "ValidationException", "The toolConfig field must be defined when using toolUse and "
                                                   "toolResult content blocks.")
    _check_tool_config(body.get("toolConfig"))
    _check_inference(body.get("inferenceConfig") or {}, body.get("additionalModelRequestFields") or {}, model)


def _check_block(block: Any, where: str, tool_ids: set[str]) -> None:
    if not isinstance(block, dict) or len(block) != 1 or next(iter(block)) not in BLOCKS:
        raise AwsError(400, "ValidationException", f"{where} must hold exactly one known content block member.")
    kind, value = next(iter(block.items()))
    if kind == "text" and (not isinstance(value, str) or not value.strip()):
        raise AwsError(400, "ValidationException", f"The text field in the ContentBlock object at {where} is blank.")
    if kind == "image":
        if value.get("format") not in IMAGE_FORMATS:
            raise AwsError(400, "ValidationException", f"{where}.image.format is not a supported image format.")
        try:
            base64.b64decode(value["source"]["bytes"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise AwsError(400, "ValidationException", f"{where}.image.source.bytes is not base64.") from None
    if kind == "toolUse":
        if not isinstance(value.get("input"), dict) or not value.get("toolUseId") or not value.get("name"):
            raise AwsError(400, "ValidationException", f"{where}.toolUse needs toolUseId, name and an input object.")
        tool_ids.add(value["toolUseId"])
    if kind == "toolResult":
        if value.get("toolUseId") not in tool_ids:
            raise AwsError(400, "ValidationException", f"{where}.toolResult.toolUseId matches no earlier toolUse.")
        if not isinstance(value.get("content"), list):
            raise AwsError(400, "ValidationException", f"{where}.toolResult.content must be a list.")


def _check_tool_config(config: Any) -> None:
    if config is None:
        return
    tools = config.get("tools")
    if not isinstance(tools, list) or not tools:
        raise AwsError(400, "ValidationException", "toolConfig.tools must be a non-empty list.")
    names = set()
    for i, tool in enumerate(tools):
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        if not isinstance(spec, dict) or not isinstance((spec.get("inputSchema") or {}).get("json"), dict) \
                or not spec.get("name") or spec.get("description") == "":
            raise AwsError(400, "ValidationException", f"toolConfig.tools.{i}.toolSpec is invalid.")
        names.add(spec["name"])
    choice = config.get("toolChoice")
    if choice is not None:
        if not isinstance(choice, dict) or len(choice) != 1 or next(iter(choice)) not in ("auto", "any", "tool"):
            raise AwsError(400, "ValidationException", "toolConfig.toolChoice must be one of auto, any, tool.")
        if "tool" in choice and choice["tool"].get("name") not in names:
            raise AwsError(400, "ValidationException", "toolConfig.toolChoice.tool.name names no tool.")


def _check_inference(config: dict[str, Any], extra: dict[str, Any], model: str) -> None:
    unknown = set(config) - INFERENCE
    if unknown:
        raise AwsError(400, "ValidationException", f"Unknown parameter in inferenceConfig: '{sorted(unknown)[0]}'.")
    if "maxTokens" in config and (not isinstance(config["maxTokens"], int) or config["maxTokens"] < 1):
        raise AwsError(400, "ValidationException", "inferenceConfig.maxTokens must be at least 1.")
    for name in ("temperature", "topP"):
        if name in config and not 0 <= config[name] <= 1:
            raise AwsError(400, "ValidationException", f"inferenceConfig.{name} must be between 0 and 1.")
    stops = config.get("stopSequences")
    if stops is not None and (not isinstance(stops, list) or len(stops) > 4 or not all(stops)):
        raise AwsError(400, "ValidationException", "inferenceConfig.stopSequences takes at most 4 non-empty strings.")
    thinking = extra.get("thinking")
    if thinking is not None:
        budget = thinking.get("budget_tokens")
        if "anthropic.claude" not in model or thinking.get("type") != "enabled" or not isinstance(budget, int):
            raise AwsError(400, "ValidationException", "thinking: malformed or unsupported for this model.")
        if budget < 1024 or budget >= config.get("maxTokens", 0):
            raise AwsError(400, "ValidationException", "thinking.budget_tokens must be >= 1024 and < max_tokens.")
        if config.get("temperature", 1) != 1 or config.get("topP", 1) < 0.95:
            raise AwsError(400, "ValidationException", "temperature may only be 1 and top_p at least 0.95 with "
                                                       "thinking.")
