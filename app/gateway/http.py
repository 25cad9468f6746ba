"""Upstream HTTP: pooled keep-alive sessions per host, timeouts, and a per-attempt deadline.

Sessions hold connections only. Credentials travel in each request's own
headers and are never set on a session, so no request can reuse another's.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Iterator
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError as Urllib3Error

from app.gateway.errors import ErrorClass, UpstreamFailure
from app.gateway.providers.base import UpstreamRequest

READ_SIZE = 65536
MAX_BODY = 32 * 1024 * 1024

_settings: dict[str, Any] = {"connect": 5.0, "read": 60.0, "deadline": 120.0, "pool": 64}
_sessions: dict[str, requests.Session] = {}
_lock = threading.Lock()


def configure(config: dict[str, Any]) -> None:
    _settings.update(
        connect=float(config["UPSTREAM_CONNECT_TIMEOUT"]),
        read=float(config["UPSTREAM_READ_TIMEOUT"]),
        deadline=float(config["UPSTREAM_ATTEMPT_DEADLINE"]),
        pool=int(config["UPSTREAM_POOL_SIZE"]),
    )


def attempt_deadline() -> float:
    return time.monotonic() + _settings["deadline"]


def base_url_override(config: dict[str, Any], provider_id: str) -> str | None:
    return config.get(f"GATEWAY_{provider_id.upper()}_BASE_URL") or None


def session_for(url: str) -> requests.Session:
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    session = _sessions.get(origin)
    if session is None:
        with _lock:
            session = _sessions.get(origin)
            if session is None:
                session = requests.Session()
                session.trust_env = False  # no proxy or .netrc credentials from the environment
                adapter = HTTPAdapter(pool_connections=1, pool_maxsize=_settings["pool"], max_retries=0)
                session.mount(origin + "/", adapter)
                _sessions[origin] = session
    return session


class UpstreamResponse:
    def __init__(self, response: requests.Response, deadline: float):
        self._response = response
        self._deadline = deadline
        self.status = response.status_code
        self.headers = {k.lower(): v for k, v in response.headers.items()}

    def chunks(self) -> Iterator[bytes]:
        """Body bytes as they arrive; a slow drip cannot outlive the attempt deadline."""
        raw = self._response.raw
        try:
            while True:
                if time.monotonic() > self._deadline:
                    raise UpstreamFailure(ErrorClass.TIMEOUT, self.status, detail="attempt deadline exceeded")
                data = raw.read1(READ_SIZE)
                if not data:
                    return
                yield data
        except UpstreamFailure:
            raise
        except (requests.exceptions.Timeout, TimeoutError):
            raise UpstreamFailure(ErrorClass.TIMEOUT, self.status, detail="read timed out") from None
        except (Urllib3Error, requests.exceptions.RequestException, OSError) as exc:
            if "timed out" in type(exc).__name__.lower() or isinstance(getattr(exc, "__context__", None), TimeoutError):
                raise UpstreamFailure(ErrorClass.TIMEOUT, self.status, detail="read timed out") from None
            raise UpstreamFailure(ErrorClass.CONNECTION, self.status, detail="connection lost mid-body") from None

    def read_body(self) -> bytes:
        parts, size = [], 0
        for data in self.chunks():
            size += len(data)
            if size > MAX_BODY:
                raise UpstreamFailure(ErrorClass.MALFORMED, self.status, detail="response body too large")
            parts.append(data)
        return b"".join(parts)

    def close(self) -> None:
        self._response.close()


def send(req: UpstreamRequest, deadline: float) -> UpstreamResponse:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise UpstreamFailure(ErrorClass.TIMEOUT, detail="attempt deadline exceeded")
    timeout = (min(_settings["connect"], remaining), min(_settings["read"], remaining))
    try:
        response = session_for(req.url).request(
            req.method, req.url, headers=req.headers, data=req.body, stream=True,
            timeout=timeout, allow_redirects=False,
        )
    except requests.exceptions.Timeout:
        raise UpstreamFailure(ErrorClass.TIMEOUT, detail="upstream timed out") from None
    except (requests.exceptions.RequestException, Urllib3Error, OSError):
        raise UpstreamFailure(ErrorClass.CONNECTION, detail="could not connect") from None
    return UpstreamResponse(response, deadline)

