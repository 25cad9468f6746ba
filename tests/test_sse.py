"""The SSE decoder is correct however the upstream splits its bytes."""
from __future__ import annotations

from app.gateway.sse import SSEDecoder

STREAM = (b"data: {\"a\": 1}\n\n"
          b": keep-alive comment\n\n"
          b"event: message_delta\r\ndata: {\"b\": \"two\\nlines\"}\r\n\r\n"
          b"data: first\ndata: second\n\n"
          b"data: [DONE]\n\n")
EXPECTED = [("message", '{"a": 1}'), ("message_delta", '{"b": "two\\nlines"}'), ("message", "first\nsecond"),
            ("message", "[DONE]")]


def decode(pieces: list[bytes]) -> list[tuple[str, str]]:
    decoder = SSEDecoder()
    events = [e for piece in pieces for e in decoder.feed(piece)] + decoder.close()
    return [(e.event, e.data) for e in events]


def test_whole_stream():
    assert decode([STREAM]) == EXPECTED


def test_every_two_way_split():
    for cut in range(len(STREAM) + 1):
        assert decode([STREAM[:cut], STREAM[cut:]]) == EXPECTED, cut


def test_byte_by_byte():
    assert decode([STREAM[i:i + 1] for i in range(len(STREAM))]) == EXPECTED


def test_unterminated_last_event_is_flushed_on_close():
    assert decode([b"data: tail"]) == [("message", "tail")]
