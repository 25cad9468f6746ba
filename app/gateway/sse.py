"""Server-sent events: an incremental decoder for upstream streams and framing for the client."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(slots=True)
class SSEEvent:
    event: str
    data: str


class SSEDecoder:
    """Feed it bytes as they arrive, however split; it returns the complete events."""

    __slots__ = ("_buffer", "_event", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, data: bytes) -> list[SSEEvent]:
        self._buffer += data
        events: list[SSEEvent] = []
        while True:
            cut = self._next_line_end()
            if cut is None:
                return events
            end, skip = cut
            line = self._buffer[:end].decode("utf-8", errors="replace")
            self._buffer = self._buffer[end + skip:]
            self._line(line, events)

    def close(self) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        if self._buffer:
            self._line(self._buffer.decode("utf-8", errors="replace"), events)
            self._buffer = b""
        self._line("", events)
        return events

    def _next_line_end(self) -> tuple[int, int] | None:
        buf = self._buffer
        nl = buf.find(b"\n")
        cr = buf.find(b"\r")
        if cr != -1 and (nl == -1 or cr < nl):
            if cr == len(buf) - 1:
                return None  # might be the first half of \r\n
            return (cr, 2) if buf[cr + 1:cr + 2] == b"\n" else (cr, 1)
        if nl == -1:
            return None
        return nl, 1

    def _line(self, line: str, events: list[SSEEvent]) -> None:
        if line == "":
            if self._data:
                events.append(SSEEvent(self._event or "message", "\n".join(self._data)))
            self._event, self._data = "", []
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value


def frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def error_frame(payload: dict[str, Any]) -> bytes:
    """A mid-stream failure: an `error` event, then the data line OpenAI SDKs look for."""
    body = orjson.dumps(payload)
    return b"event: error\ndata: " + body + b"\n\n"
