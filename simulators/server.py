"""The harness every fake provider shares: a threaded HTTP/1.1 server on 127.0.0.1 with scripted faults.

A fault is chosen per request: first by the credential the request carries
(`fake.on_key(key, Fault(...))`), then from a queue of one-shot faults
(`fake.next(Fault(...))`). Faults act on the real socket: a 429 with
retry-after, 5xx, a slow drip, a stall past the read timeout, a reset in the
middle of a stream, a malformed body.
"""
from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import orjson


@dataclass
class Fault:
    kind: str  # status | drip | stall | reset_mid_stream | malformed | hang_headers | close
    status: int = 500
    body: Any = None  # JSON body for kind=status (provider's own error shape)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds per drip byte, or the stall length
    after_events: int = 2  # reset_mid_stream: events sent before the reset


class _Server(ThreadingHTTPServer):
    # The standard backlog of 5 refuses connections when a gateway opens dozens at once.
    request_queue_size = 256


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class Reject(Exception):
    """Raised by a fake's validator: answered with the provider's own error shape."""

    def __init__(self, status: int, body: Any):
        self.status, self.body = status, body


class FakeServer:
    """Subclasses implement `credential(handler)` and `handle(handler, received, fault)`."""

    name = "fake"

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._key_faults: dict[str, Fault] = {}
        self._queue: list[Fault] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=f"{self.name}-fake", daemon=True)

    def start(self) -> "FakeServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- scripting -----------------------------------------------------------
    def on_key(self, key: str, fault: Fault | None) -> None:
        with self._lock:
            if fault is None:
                self._key_faults.pop(key, None)
            else:
                self._key_faults[key] = fault

    def next(self, *faults: Fault) -> None:
        with self._lock:
            self._queue.extend(faults)

    def reset(self) -> None:
        with self._lock:
            self._key_faults.clear()
            self._queue.clear()
            self.received.clear()

    def _fault_for(self, credential: str | None) -> Fault | None:
        with self._lock:
            if credential is not None and credential in self._key_faults:
                return self._key_faults[credential]
            if self._queue:
                return self._queue.pop(0)
        return None

    # -- to implement ----------------------------------------------------------
    def credential(self, handler: "_Handler") -> str | None:
        raise NotImplementedError

    def handle(self, handler: "_Handler", received: Received, fault: Fault | None) -> None:
        raise NotImplementedError

    def error_body(self, status: int, credential: str | None) -> Any:
        """The provider's own error JSON for a status (401 bodies echo part of the key, as real APIs do)."""
        raise NotImplementedError


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_fake: FakeServer

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        received = Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        fake = self.server_fake
        fake.received.append(received)
        credential = fake.credential(self)
        fault = fake._fault_for(credential)
        try:
            if fault is not None and fault.kind == "status":
                body_json = fault.body if fault.body is not None else fake.error_body(fault.status, credential)
                self.send_json(fault.status, body_json, fault.headers)
                return
            if fault is not None and fault.kind == "hang_headers":
                time.sleep(fault.delay)
                self.close_connection = True
                return
            fake.handle(self, received, fault)
        except Reject as rejection:
            self.send_json(rejection.status, rejection.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- writing helpers for fakes -----------------------------------------------
    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None,
                  fault: Fault | None = None) -> None:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        if fault is not None and fault.kind == "malformed":
            data = data[: max(1, len(data) // 2)]  # truncated JSON with a 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if fault is not None and fault.kind == "drip":
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(fault.delay)
            return
        if fault is not None and fault.kind == "stall":
            self.wfile.write(data[:1])
            self.wfile.flush()
            time.sleep(fault.delay)
        self.wfile.write(data if fault is None or fault.kind != "stall" else data[1:])

    def start_stream(self, content_type: str = "text/event-stream", headers: dict[str, str] | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def write_chunk(self, data: bytes, fault: Fault | None = None) -> None:
        if fault is not None and fault.kind == "drip":
            for i in range(len(data)):
                self._raw_chunk(data[i:i + 1])
                time.sleep(fault.delay)
            return
        self._raw_chunk(data)

    def _raw_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def reset_connection(self) -> None:
        """An abrupt TCP reset (RST), as a crashing upstream or a dropped connection produces."""
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


def stream_events(handler: _Handler, events: list[bytes], fault: Fault | None,
                  on_each: Callable[[int], None] | None = None) -> None:
    """Send framed events as chunks, applying a drip, stall or mid-stream reset fault."""
    handler.start_stream()
    for i, event in enumerate(events):
        if fault is not None and fault.kind == "reset_mid_stream" and i == fault.after_events:
            handler.reset_connection()
            return
        if fault is not None and fault.kind == "stall" and i == fault.after_events:
            time.sleep(fault.delay)
        handler.write_chunk(event, fault if fault is not None and fault.kind == "drip" else None)
    handler.end_stream()
