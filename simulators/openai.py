"""A fake OpenAI Chat Completions API (and its Azure OpenAI flavour), from the API reference.

It checks what the real API checks (auth header, JSON, required fields,
unknown arguments), answers in the real shapes (chat.completion, SSE
chat.completion.chunk with an optional usage chunk, error objects) and
applies scripted faults.
"""
from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from simulators.server import Fault, FakeServer, Received, Reject, stream_events

KNOWN = {
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
    "top_p", "n", "stop", "tools", "tool_choice", "parallel_tool_calls", "response_format", "reasoning_effort",
    "user", "seed", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "logit_bias",
    "metadata", "store", "service_tier", "modalities", "prediction", "audio", "web_search_options",
    "verbosity", "prompt_cache_key", "safety_identifier", "functions", "function_call",
}
AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)/chat/completions$")


def count_tokens(text: str) -> int:
    return max(1, len(text) // 4)


class FakeOpenAI(FakeServer):
    name = "openai"

    def __init__(self, flavor: str = "openai", reply: str = "Hello from the fake provider. All systems nominal.",
                 cached_tokens: int = 0):
        super().__init__()
        self.flavor = flavor
        self.reply = reply
        self.cached_tokens = cached_tokens

    # -- the contract ------------------------------------------------------------
    def credential(self, handler) -> str | None:
        if self.flavor == "azure":
            return handler.headers.get("api-key")
        auth = handler.headers.get("Authorization") or ""
        return auth[7:] if auth.startswith("Bearer ") else None

    def error_body(self, status: int, credential: str | None) -> Any:
        if status == 401:
            return {"error": {"message": f"Incorrect API key provided: {credential}. You can find your API key at "
                                         "https://platform.openai.com/account/api-keys.",
                              "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
        if status == 429:
            return {"error": {"message": f"Rate limit reached for requests (key {credential}). Limit 3, Used 3.",
                              "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
        if status == 402:
            return {"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota",
                              "param": None, "code": "insufficient_quota"}}
        if status == 400:
            return {"error": {"message": "Invalid request.", "type": "invalid_request_error", "param": None,
                              "code": None}}
        return {"error": {"message": f"The server had an error while processing your request ({status}).",
                          "type": "server_error", "param": None, "code": None}}

    def handle(self, handler, received: Received, fault: Fault | None) -> None:
        body = self.validate(handler, received)
        model = body.get("model") or self._deployment(received)
        prompt = " ".join(_text(m.get("content")) for m in body["messages"])
        usage = {
            "prompt_tokens": count_tokens(prompt),
            "completion_tokens": count_tokens(self.reply),
            "total_tokens": count_tokens(prompt) + count_tokens(self.reply),
            "prompt_tokens_details": {"cached_tokens": min(self.cached_tokens, count_tokens(prompt))},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        created = int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = [_sse(c) for c in self._chunks(model, created, usage, include_usage)] + [b"data: [DONE]\n\n"]
            if fault is not None and fault.kind == "malformed":
                events[1] = b"data: {\"id\": \"chatcmpl-x\", \"choices\": [\n\n"
            stream_events(handler, events, fault)
            return
        completion = {
            "id": "chatcmpl-fake123", "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.reply, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": usage, "system_fingerprint": "fp_fake",
        }
        handler.send_json(200, completion, fault=fault)

    # -- checks the real API makes -----------------------------------------------------
    def validate(self, handler, received: Received) -> dict[str, Any]:
        if self.flavor == "azure":
            match = AZURE_PATH.match(urlsplit(received.path).path)
            if not match:
                raise Reject(404, {"error": {"code": "404", "message": "Resource not found"}})
            if not parse_qs(urlsplit(received.path).query).get("api-version"):
                raise Reject(404, {"error": {"code": "404", "message": "Resource not found"}})
            if not received.headers.get("api-key"):
                raise Reject(401, {"error": {"code": "401", "message": "Access denied due to invalid subscription key"}})
        else:
            if not urlsplit(received.path).path.endswith("/chat/completions"):
                raise Reject(404, {"error": {"message": "Invalid URL", "type": "invalid_request_error",
                                             "param": None, "code": None}})
            if not self.credential(handler):
                raise Reject(401, {"error": {"message": "You didn't provide an API key.",
                                             "type": "invalid_request_error", "param": None, "code": None}})
        if "application/json" not in received.headers.get("content-type", ""):
            raise Reject(400, _invalid("Content-Type must be application/json"))
        try:
            body = received.json()
        except orjson.JSONDecodeError:
            raise Reject(400, _invalid("We could not parse the JSON body of your request.")) from None
        if not isinstance(body, dict):
            raise Reject(400, _invalid("The body must be a JSON object."))
        unknown = sorted(set(body) - KNOWN)
        if unknown:
            raise Reject(400, _invalid(f"Unrecognized request argument supplied: {unknown[0]}"))
        if self.flavor != "azure" and not isinstance(body.get("model"), str):
            raise Reject(400, _invalid("you must provide a model parameter", "model"))
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise Reject(400, _invalid("'messages' must be a non-empty array", "messages"))
        if body.get("stream_options") is not None and not body.get("stream"):
            raise Reject(400, _invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                                       "stream_options"))
        return body

    def _deployment(self, received: Received) -> str:
        match = AZURE_PATH.match(urlsplit(received.path).path)
        return match.group(1) if match else ""

    def _chunks(self, model: str, created: int, usage: dict, include_usage: bool) -> list[dict]:
        base = {"id": "chatcmpl-fake123", "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_fake"}
        words = re.findall(r"\S+\s*", self.reply)
        chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                        "logprobs": None, "finish_reason": None}]}]
        chunks += [{**base, "choices": [{"index": 0, "delta": {"content": w}, "logprobs": None,
                                         "finish_reason": None}]} for w in words]
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
        if include_usage:
            for c in chunks:
                c["usage"] = None
            chunks.append({**base, "choices": [], "usage": usage})
        return chunks


def _sse(payload: dict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _invalid(message: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
