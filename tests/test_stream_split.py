"""Stream translation gives the same chunks and usage however the upstream bytes are split across reads."""
from __future__ import annotations

import orjson
import pytest

from app.gateway.providers import REGISTRY
from app.gateway.providers.base import Credentials
from app.gateway.schema import parse_chat_request
from simulators import anthropic as fake_claude
from simulators import gemini as fake_gemini

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def _anthropic_stream() -> bytes:
    script = fake_claude.Script(reply="Héllo wörld — ünïcode ✓ split.", thinking="Thïnk.",
                                tool_call={"name": "get_weather", "input": {"city": "Zürich"}}, cache_read=3)
    body = {"messages": [{"role": "user", "content": "x"}], "tools": [{"name": "get_weather", "input_schema": {}}]}
    return b"".join(fake_claude.events(body, "claude-sonnet-4-5", script))


def _gemini_stream() -> bytes:
    script = fake_gemini.Script(reply="Grüße aus der Ferne — ✓ done.", tool_call={"name": "get_weather", "args": {"c": "Zürich"}},
                                thoughts_tokens=4)
    body = {"contents": [{"role": "user", "parts": [{"text": "x"}]}],
            "tools": [{"functionDeclarations": [{"name": "get_weather"}]}]}
    return b"".join(b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in fake_gemini.chunks(body, "m", script))


CASES = [("anthropic", "claude-sonnet-4-5", _anthropic_stream), ("gemini", "gemini-2.5-pro", _gemini_stream),
         ("vertex", "gemini-2.5-pro", _gemini_stream), ("vertex", "claude-sonnet-4-5", _anthropic_stream)]


def run(provider_id: str, model: str, pieces: list[bytes]):
    provider = REGISTRY[provider_id]
    req = parse_chat_request({"model": model, "messages": [{"role": "user", "content": "x"}], "stream": True})
    state = provider.new_stream_state(req, model)
    decoder = provider.stream_decoder()
    out = []
    for piece in pieces:
        for event in decoder.feed(piece):
            out += provider.convert_stream_event(event, state)
    for event in decoder.close():
        out += provider.convert_stream_event(event, state)
    out += provider.finish_stream(state)
    return _normalized(out), state.usage, state.finish_reason


def _normalized(chunks: list[dict]) -> list[dict]:
    """Drop what legitimately varies between runs (the clock, generated tool-call ids)."""
    text = orjson.dumps([c["choices"] for c in chunks]).decode()
    for chunk in chunks:
        for call in chunk["choices"][0]["delta"].get("tool_calls") or []:
            if call.get("id"):
                text = text.replace(call["id"], "<id>")
    return orjson.loads(text)


@pytest.mark.parametrize("provider_id, model, make", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_every_two_way_split_gives_the_same_stream(provider_id, model, make):
    raw = make()
    expected = run(provider_id, model, [raw])
    assert expected[2] == "tool_calls" and expected[1] is not None
    for cut in range(1, len(raw)):
        assert run(provider_id, model, [raw[:cut], raw[cut:]]) == expected, f"differs when cut at byte {cut}"


@pytest.mark.parametrize("provider_id, model, make", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_byte_by_byte_gives_the_same_stream(provider_id, model, make):
    raw = make()
    assert run(provider_id, model, [raw[i:i + 1] for i in range(len(raw))]) == run(provider_id, model, [raw])


def test_the_builders_agree_with_the_fakes():
    """The canned streams above are what the fakes serve for requests our adapters build."""
    req = parse_chat_request({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": TOOLS})
    creds = Credentials({"api_key": "k"})
    fake_claude.validate_body(orjson.loads(REGISTRY["anthropic"].build_request(req, "m", creds, None).body))
    fake_gemini.validate_body(orjson.loads(REGISTRY["gemini"].build_request(req, "m", creds, None).body))
