"""A lean HTTP/1.1 load generator: gevent greenlets over raw keep-alive sockets, one per connection.

It is deliberately minimal (no HTTP library) so that it costs little CPU next
to the server it measures. Bounded by a request count and a time cap;
loopback only. Prints one JSON object with the figures.
Run: python bench/loadgen.py --port P --path /v1/chat/completions --body-file F --requests N --concurrency C
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import orjson  # noqa: E402

LOOPBACK = ("127.0.0.1", "localhost")


class ClosedError(Exception):
    """The server closed the connection."""


class Reader:
    """Just enough response parsing for a benchmark: status, content-length or chunked body."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise ClosedError
        self.buf += data

    def _until(self, marker: bytes) -> bytes:
        while True:
            at = self.buf.find(marker)
            if at >= 0:
                out = bytes(self.buf[:at])
                del self.buf[:at + len(marker)]
                return out
            self._fill()

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def response(self) -> tuple[int, bytes, bool]:
        """(status, body, server wants to close)."""
        head = self._until(b"\r\n\r\n").split(b"\r\n")
        status = int(head[0].split(b" ", 2)[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        close = headers.get(b"connection") == b"close"
        if headers.get(b"transfer-encoding") == b"chunked":
            parts = []
            while True:
                size = int(self._until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._until(b"\r\n")
                    break
                parts.append(self._exactly(size))
                self._exactly(2)
            return status, b"".join(parts), close
        if b"content-length" in headers:
            return status, self._exactly(int(headers[b"content-length"])), close
        while True:  # body until close
            try:
                self._fill()
            except ClosedError:
                body = bytes(self.buf)
                self.buf.clear()
                return status, body, True


class Run:
    def __init__(self, args, request: bytes):
        self.args = args
        self.request = request
        self.sent = 0
        self.latencies: list[float] = []
        self.failures: dict[str, int] = {}
        self.deadline = 0.0

    def _fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def _connect(self) -> tuple[socket.socket, Reader]:
        sock = socket.create_connection((self.args.host, self.args.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, Reader(sock)

    def worker(self) -> None:
        sock, reader = self._connect()
        try:
            while self.sent < self.args.requests and time.monotonic() < self.deadline:
                self.sent += 1
                started = time.perf_counter()
                try:
                    sock.sendall(self.request)
                    status, body, close = reader.response()
                except (ClosedError, OSError):
                    self._fail("connection")
                    sock.close()
                    sock, reader = self._connect()
                    continue
                elapsed = time.perf_counter() - started
                if status != 200:
                    self._fail(f"http_{status}")
                elif self.args.stream and self.args.stream_end.encode() not in body[-1024:]:
                    self._fail("stream_incomplete")
                else:
                    self.latencies.append(elapsed)
                if close:
                    sock.close()
                    sock, reader = self._connect()
        finally:
            sock.close()

    def go(self) -> dict:
        started = time.monotonic()
        self.deadline = started + self.args.time_cap
        gevent.joinall([gevent.spawn(self.worker) for _ in range(self.args.concurrency)], raise_error=True)
        elapsed = time.monotonic() - started
        lat = sorted(self.latencies)
        return {
            "sent": self.sent, "ok": len(lat), "failures": self.failures, "elapsed": elapsed,
            "rps": len(lat) / elapsed if elapsed else 0.0,
            "p50_ms": _pct(lat, 50) * 1000, "p99_ms": _pct(lat, 99) * 1000,
        }


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(pct / 100 * (len(values) - 1))))]


def build_request(host: str, port: int, path: str, body: bytes, headers: list[str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/chat/completions")
    parser.add_argument("--body-file", required=True)
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--time-cap", type=float, default=30.0)
    parser.add_argument("--stream", action="store_true", help="expect an SSE stream ending in --stream-end")
    parser.add_argument("--stream-end", default="data: [DONE]", help="how a complete stream ends (default OpenAI's)")
    args = parser.parse_args(argv)
    if args.host not in LOOPBACK:
        sys.exit("the load generator targets loopback only")
    with open(args.body_file, "rb") as fh:
        body = fh.read()
    run = Run(args, build_request(args.host, args.port, args.path, body, args.header))
    sys.stdout.write(orjson.dumps(run.go()).decode() + "\n")


if __name__ == "__main__":
    main()
