"""A fast fake OpenAI-compatible upstream for the benchmark: asyncio protocols over raw sockets.

It serves canned answers so it is never the bottleneck, but still speaks the
real wire format (HTTP/1.1 keep-alive, chat.completion JSON, a chunked SSE
stream of chat.completion.chunk events with a usage chunk and `[DONE]`) and
checks the essentials of what it receives: the path, a bearer key, a JSON
body with `model` and `messages`. Run it as
`python bench/fake_upstream.py --port 0`; it prints `listening <port>`.
Anthropic's Messages API and Gemini's generateContent have responders too
(`--provider anthropic|gemini`), so translation is measured end to end.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

import orjson

STREAM_CHUNKS = 20
PROMPT_TOKENS, COMPLETION_TOKENS = 12, STREAM_CHUNKS


def _http(status: str, content_type: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\ncontent-type: " + content_type
            + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def _error(status: str, message: str) -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                   "code": None}})
    return _http(status, b"application/json", body)


class OpenAIResponder:
    """Canned answers in OpenAI's shapes, built once per model name."""

    path = b"/v1/chat/completions"

    def __init__(self) -> None:
        self._cache: dict[tuple[str, bool], bytes] = {}

    def usage(self) -> dict:
        return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}

    def completion(self, model: str) -> bytes:
        body = orjson.dumps({
            "id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "word " * COMPLETION_TOKENS},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": self.usage(), "system_fingerprint": "fp_bench",
        })
        return _http("200 OK", b"application/json", body)

    def stream(self, model: str, include_usage: bool) -> bytes:
        created = int(time.time())
        base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": created, "model": model}
        events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                        "finish_reason": None}]}]
        events += [{**base, "choices": [{"index": 0, "delta": {"content": "word "}, "finish_reason": None}]}
                   for _ in range(STREAM_CHUNKS)]
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if include_usage:
            events.append({**base, "choices": [], "usage": self.usage()})
        out = [b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
               b"transfer-encoding: chunked\r\n\r\n"]
        for data in [orjson.dumps(e) for e in events] + [b"[DONE]"]:
            frame = b"data: " + data + b"\n\n"
            out.append(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
        out.append(b"0\r\n\r\n")
        return b"".join(out)

    def answer(self, path: bytes, headers: dict[bytes, bytes], body: bytes) -> bytes:
        if path != self.path:
            return _error("404 Not Found", "unknown path")
        if not headers.get(b"authorization", b"").startswith(b"Bearer ") or len(headers[b"authorization"]) < 12:
            return _error("401 Unauthorized", "missing or malformed bearer key")
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error("400 Bad Request", "body is not JSON")
        if not isinstance(req, dict) or not isinstance(req.get("model"), str) or not isinstance(req.get("messages"), list):
            return _error("400 Bad Request", "'model' and 'messages' are required")
        stream = req.get("stream") is True
        include_usage = stream and bool((req.get("stream_options") or {}).get("include_usage"))
        key = (req["model"], include_usage if stream else None)
        cached = self._cache.get(key)
        if cached is None:
            cached = self.stream(req["model"], include_usage) if stream else self.completion(req["model"])
            self._cache[key] = cached
        return cached


def _sse_chunked(payloads: list[bytes]) -> bytes:
    out = [b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
           b"transfer-encoding: chunked\r\n\r\n"]
    for frame in payloads:
        out.append(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
    out.append(b"0\r\n\r\n")
    return b"".join(out)


class AnthropicResponder:
    """Canned Messages API answers: a message object, or the message_start … message_stop event stream."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, bool], bytes] = {}

    def message(self, model: str) -> bytes:
        body = orjson.dumps({
            "id": "msg_bench", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "word " * COMPLETION_TOKENS}], "stop_reason": "end_turn",
            "stop_sequence": None, "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": COMPLETION_TOKENS,
                                             "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0},
        })
        return _http("200 OK", b"application/json", body)

    def stream(self, model: str) -> bytes:
        def event(name: str, data: dict) -> bytes:
            return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

        usage = {"input_tokens": PROMPT_TOKENS, "output_tokens": 1, "cache_read_input_tokens": 0,
                 "cache_creation_input_tokens": 0}
        frames = [event("message_start", {"type": "message_start", "message": {
            "id": "msg_bench", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage}}),
            event("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}})]
        frames += [event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                 "delta": {"type": "text_delta", "text": "word "}})
                   for _ in range(STREAM_CHUNKS)]
        frames += [event("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                         "stop_sequence": None}, "usage": {"output_tokens": COMPLETION_TOKENS}}),
                   event("message_stop", {"type": "message_stop"})]
        return _sse_chunked(frames)

    def answer(self, path: bytes, headers: dict[bytes, bytes], body: bytes) -> bytes:
        if path != b"/v1/messages":
            return _error("404 Not Found", "unknown path")
        if len(headers.get(b"x-api-key", b"")) < 8 or not headers.get(b"anthropic-version"):
            return _error("401 Unauthorized", "x-api-key and anthropic-version are required")
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error("400 Bad Request", "body is not JSON")
        if not isinstance(req, dict) or not isinstance(req.get("model"), str) or not req.get("max_tokens"):
            return _error("400 Bad Request", "'model', 'messages' and 'max_tokens' are required")
        stream = req.get("stream") is True
        key = (req["model"], stream)
        if key not in self._cache:
            self._cache[key] = self.stream(req["model"]) if stream else self.message(req["model"])
        return self._cache[key]


class GeminiResponder:
    """Canned generateContent answers, and streamGenerateContent?alt=sse chunks ending with a finishReason."""

    def __init__(self) -> None:
        self._cache: dict[tuple[bytes, bool], bytes] = {}

    @staticmethod
    def usage() -> dict:
        return {"promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": COMPLETION_TOKENS,
                "totalTokenCount": PROMPT_TOKENS + COMPLETION_TOKENS}

    def answer(self, path: bytes, headers: dict[bytes, bytes], body: bytes) -> bytes:
        route, _, query = path.partition(b"?")
        model, _, method = route.removeprefix(b"/v1beta/models/").partition(b":")
        if not route.startswith(b"/v1beta/models/") or method not in (b"generateContent", b"streamGenerateContent"):
            return _error("404 Not Found", "unknown path")
        if len(headers.get(b"x-goog-api-key", b"")) < 8:
            return _error("403 Forbidden", "x-goog-api-key is required")
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error("400 Bad Request", "body is not JSON")
        if not isinstance(req, dict) or not isinstance(req.get("contents"), list):
            return _error("400 Bad Request", "'contents' is required")
        stream = method == b"streamGenerateContent"
        if stream and query != b"alt=sse":
            return _error("400 Bad Request", "streaming needs alt=sse")
        key = (model, stream)
        if key not in self._cache:
            self._cache[key] = self._stream(model) if stream else self._complete(model)
        return self._cache[key]

    def _candidate(self, text: str, finish: str | None) -> dict:
        candidate = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        return candidate

    def _complete(self, model: bytes) -> bytes:
        body = orjson.dumps({"candidates": [self._candidate("word " * COMPLETION_TOKENS, "STOP")],
                             "usageMetadata": self.usage(), "modelVersion": model.decode()})
        return _http("200 OK", b"application/json", body)

    def _stream(self, model: bytes) -> bytes:
        frames = [b"data: " + orjson.dumps({"candidates": [self._candidate("word ", None)],
                                            "modelVersion": model.decode()}) + b"\r\n\r\n"
                  for _ in range(STREAM_CHUNKS - 1)]
        frames.append(b"data: " + orjson.dumps({"candidates": [self._candidate("word ", "STOP")],
                                                "usageMetadata": self.usage(),
                                                "modelVersion": model.decode()}) + b"\r\n\r\n")
        return _sse_chunked(frames)


RESPONDERS = {"openai": OpenAIResponder, "anthropic": AnthropicResponder, "gemini": GeminiResponder}


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; requests are answered in order."""

    def __init__(self, responder) -> None:
        self.responder = responder
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].split(b"\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            try:
                length = int(headers.get(b"content-length", b"0"))
            except ValueError:
                self._fail(b"400 Bad Request")
                return
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            parts = head[0].split(b" ")
            if len(parts) != 3 or parts[0] != b"POST":
                self._fail(b"405 Method Not Allowed")
                return
            self.transport.write(self.responder.answer(parts[1], headers, body))

    def _fail(self, status: bytes) -> None:
        self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        self.transport.close()


async def serve(host: str, port: int, provider: str) -> None:
    responder = RESPONDERS[provider]()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(responder), host, port, backlog=1024, reuse_address=True)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--provider", default="openai", choices=sorted(RESPONDERS))
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("the fake upstream listens on loopback only")
    asyncio.run(serve(args.host, args.port, args.provider))


if __name__ == "__main__":
    main()
