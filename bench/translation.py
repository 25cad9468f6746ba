"""Micro-benchmark: CPU time of translation per request, per provider, side by side with the OpenAI path.

For each provider it times, with time.process_time over many iterations:
- request: build_request + parse_response of a typical non-streaming call
  (system prompt, three turns, one tool);
- stream: a 20-chunk upstream stream fed through stream_decoder, convert_stream_event
  and finish_stream.
It prints microseconds per request and the difference from OpenAI (issue 3 budget:
at most 200 µs more). No network, no database; the figures are not asserted anywhere.

    .venv/bin/python bench/translation.py [--iterations 3000]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import orjson

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from app.gateway.providers import REGISTRY  # noqa: E402
from app.gateway.providers.base import Credentials  # noqa: E402
from app.gateway.schema import parse_chat_request  # noqa: E402

CHUNKS = 20
WORDS = [f"word{i} " for i in range(CHUNKS)]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What's the weather like in Oslo today, roughly?"},
            {"role": "assistant", "content": "Let me look that up for you."},
            {"role": "user", "content": "Thanks, and please keep it short."}]
CREDS = {"openai": {"api_key": "k"}, "anthropic": {"api_key": "k"}, "gemini": {"api_key": "k"},
         "vertex": {"project_id": "p-1", "region": "us-central1", "access_token": "t"}}


def _sse(payloads: list[dict], event_names: list[str] | None = None, crlf: bool = False) -> bytes:
    end = b"\r\n\r\n" if crlf else b"\n\n"
    out = []
    for i, p in enumerate(payloads):
        head = f"event: {event_names[i]}\n".encode() if event_names else b""
        out.append(head + b"data: " + orjson.dumps(p) + end)
    return b"".join(out)


def openai_data(model: str) -> tuple[bytes, bytes]:
    usage = {"prompt_tokens": 40, "completion_tokens": 20, "total_tokens": 60}
    body = {"id": "c", "object": "chat.completion", "created": 1, "model": model, "usage": usage,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)}, "finish_reason": "stop"}]}
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in WORDS]
    chunks[-1]["choices"][0]["finish_reason"] = "stop"
    chunks.append({**base, "choices": [], "usage": usage})
    return orjson.dumps(body), _sse(chunks) + b"data: [DONE]\n\n"


def anthropic_data(model: str) -> tuple[bytes, bytes]:
    usage = {"input_tokens": 40, "output_tokens": 20, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
    body = {"id": "m", "type": "message", "role": "assistant", "model": model, "stop_reason": "end_turn",
            "content": [{"type": "text", "text": "".join(WORDS)}], "usage": usage}
    events = [{"type": "message_start", "message": {**body, "content": [], "usage": {**usage, "output_tokens": 1}}},
              {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}]
    events += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}} for w in WORDS]
    events += [{"type": "content_block_stop", "index": 0},
               {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 20}},
               {"type": "message_stop"}]
    return orjson.dumps(body), _sse(events, [e["type"] for e in events])


def gemini_data(model: str) -> tuple[bytes, bytes]:
    def response(parts, finish=None, done=0):
        candidate = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        return {"candidates": [candidate], "modelVersion": model, "responseId": "r",
                "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": done, "totalTokenCount": 40 + done}}
    body = response([{"text": "".join(WORDS)}], "STOP", 20)
    chunks = [response([{"text": w}], "STOP" if i == CHUNKS - 1 else None, i + 1) for i, w in enumerate(WORDS)]
    return orjson.dumps(body), _sse(chunks, crlf=True)


CASES = [("openai", "gpt-4o-mini", openai_data), ("anthropic", "claude-sonnet-4-5", anthropic_data),
         ("gemini", "gemini-2.5-pro", gemini_data), ("vertex", "gemini-2.5-pro", gemini_data),
         ("vertex", "claude-sonnet-4-5", anthropic_data)]


def _cpu_us(fn, iterations: int) -> float:
    fn()  # warm up
    start = time.process_time()
    for _ in range(iterations):
        fn()
    return (time.process_time() - start) / iterations * 1e6


def measure(provider_id: str, model: str, data, iterations: int) -> tuple[float, float]:
    provider = REGISTRY[provider_id]
    creds = Credentials(CREDS[provider_id])
    body, stream = data(model)
    plain = parse_chat_request({"model": model, "messages": MESSAGES, "tools": TOOLS, "max_tokens": 256})
    streaming = parse_chat_request({"model": model, "messages": MESSAGES, "stream": True, "max_tokens": 256})

    def one_request():
        provider.build_request(plain, model, creds, None)
        provider.parse_response(body, plain, model)

    def one_stream():
        provider.build_request(streaming, model, creds, None)
        state = provider.new_stream_state(streaming, model)
        decoder = provider.stream_decoder()
        for event in decoder.feed(stream) + decoder.close():
            provider.convert_stream_event(event, state)
        provider.finish_stream(state)
        assert state.done

    return _cpu_us(one_request, iterations), _cpu_us(one_stream, iterations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3000)
    args = parser.parse_args()
    results = [(f"{p}/{m}", *measure(p, m, d, args.iterations)) for p, m, d in CASES]
    base_request, base_stream = results[0][1], results[0][2]
    print(f"{'provider/model':32} {'request µs':>11} {'Δ openai':>9} {'20-chunk stream µs':>19} {'Δ openai':>9}")
    for name, request_us, stream_us in results:
        print(f"{name:32} {request_us:11.1f} {request_us - base_request:+9.1f} {stream_us:19.1f} "
              f"{stream_us - base_stream:+9.1f}")
    print("budget (issue 3): Δ ≤ +200 µs CPU per request and per 20-chunk stream")


if __name__ == "__main__":
    main()
