"""A fast fake OpenAI-compatible upstream for the benchmark: asyncio protocols over raw sockets.

It serves canned answers so it is never the bottleneck, but still speaks the
real wire format (HTTP/1.1 keep-alive, chat.completion JSON, a chunked SSE
stream of chat.completion.chunk events with a usage chunk and `[DONE]`) and
checks the essentials of what it receives: the path, a bearer key, a JSON
body with `model` and `messages`. Run it as
`python bench/fake_upstream.py --port 0`; it prints `listening <port>`.
Other providers' fakes can plug in by adding a Responder to RESPONDERS.
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


RESPONDERS = {"openai": OpenAIResponder}


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
