"""Upstream HTTP: pooled keep-alive connections per host, timeouts, and a per-attempt deadline.

urllib3 directly rather than requests: the gateway needs none of requests'
conveniences (cookies, auth, environment, redirects) and they cost CPU on
every call. The pool holds connections only; credentials travel in each
request's own headers, so no request can reuse another's.

A request whose host a caller named (`UpstreamRequest.host_field`) is not
handed to urllib3 by name: the name is resolved once, every address checked
(outbound.refused), and the connection opened to the checked address with the
name as TLS server name, certificate name and Host header — no second lookup
that a DNS rebinding could answer differently.
"""
from __future__ import annotations

import re
import time
from typing import Any, Iterator

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util import parse_url

from app.gateway import outbound
from app.gateway.errors import ErrorClass, InvalidRequest, UpstreamFailure
from app.gateway.providers.base import UpstreamRequest

READ_SIZE = 65536
MAX_BODY = 32 * 1024 * 1024
# What http.client would refuse anyway (it raises ValueError quoting the value): checked first, without quoting.
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")

_settings: dict[str, Any] = {"connect": 5.0, "read": 60.0, "deadline": 120.0, "pool": 64, "allow_private": False}
_pool: urllib3.PoolManager | None = None


def configure(config: dict[str, Any]) -> None:
    global _pool
    _settings.update(
        connect=float(config["UPSTREAM_CONNECT_TIMEOUT"]),
        read=float(config["UPSTREAM_READ_TIMEOUT"]),
        deadline=float(config["UPSTREAM_ATTEMPT_DEADLINE"]),
        pool=int(config["UPSTREAM_POOL_SIZE"]),
        allow_private=outbound.flag(config, "GATEWAY_ALLOW_PRIVATE_UPSTREAMS"),
    )
    if _pool is not None:
        _pool.clear()
    tls = {"ca_certs": config["UPSTREAM_CA_BUNDLE"]} if config.get("UPSTREAM_CA_BUNDLE") else {}
    # One keep-alive pool per upstream origin, up to `pool` connections each; never any retry or redirect.
    _pool = urllib3.PoolManager(num_pools=64, maxsize=_settings["pool"], block=False, retries=False, **tls)


def pool() -> urllib3.PoolManager:
    if _pool is None:
        raise RuntimeError("upstream HTTP not configured; call create_app() first")
    return _pool


def attempt_deadline() -> float:
    return time.monotonic() + _settings["deadline"]


def base_url_override(config: dict[str, Any], provider_id: str) -> str | None:
    return config.get(f"GATEWAY_{provider_id.upper()}_BASE_URL") or None


class UpstreamResponse:
    def __init__(self, response: urllib3.BaseHTTPResponse, deadline: float):
        self._response = response
        self._deadline = deadline
        self._consumed = False
        self.status = response.status
        self.headers = {k.lower(): v for k, v in response.headers.items()}

    def chunks(self) -> Iterator[bytes]:
        """Body bytes as they arrive; a slow drip cannot outlive the attempt deadline."""
        try:
            while True:
                if time.monotonic() > self._deadline:
                    raise UpstreamFailure(ErrorClass.TIMEOUT, self.status, detail="attempt deadline exceeded")
                data = self._response.read1(READ_SIZE)
                if not data:
                    self._consumed = True
                    return
                yield data
        except UpstreamFailure:
            raise
        except (Urllib3Timeout, TimeoutError):
            raise UpstreamFailure(ErrorClass.TIMEOUT, self.status, detail="read timed out") from None
        except (Urllib3Error, OSError):
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
        """A fully read connection goes back to the pool; one abandoned mid-body is dropped."""
        if self._consumed:
            self._response.release_conn()
        else:
            self._response.close()
            self._response.release_conn()


def send(req: UpstreamRequest, deadline: float) -> UpstreamResponse:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise UpstreamFailure(ErrorClass.TIMEOUT, detail="attempt deadline exceeded")
    timeout = urllib3.Timeout(connect=min(_settings["connect"], remaining), read=min(_settings["read"], remaining))
    if not all(_HEADER_VALUE.fullmatch(str(v)) for v in req.headers.values()):
        raise UpstreamFailure(ErrorClass.CONNECTION, detail="a header value is not printable ASCII")
    try:
        if req.host_field is None:
            response = pool().urlopen(req.method, req.url, body=req.body, headers=req.headers, timeout=timeout,
                                      preload_content=False, redirect=False, retries=False)
        else:
            response = _send_pinned(req, timeout)
    except NewConnectionError:  # refused or unresolvable (urllib3 files it under connect timeouts)
        raise UpstreamFailure(ErrorClass.CONNECTION, detail="could not connect") from None
    except (Urllib3Timeout, TimeoutError):
        raise UpstreamFailure(ErrorClass.TIMEOUT, detail="upstream timed out") from None
    except (Urllib3Error, OSError):
        raise UpstreamFailure(ErrorClass.CONNECTION, detail="could not connect") from None
    return UpstreamResponse(response, deadline)


def _send_pinned(req: UpstreamRequest, timeout: urllib3.Timeout) -> urllib3.BaseHTTPResponse:
    """Connect to a checked address of a caller-named host; the name is used for TLS and Host only."""
    url = parse_url(req.url)
    host, port = url.host or "", url.port or 443
    try:
        addresses = outbound.resolve(host, port)
    except (OSError, UnicodeError):
        raise UpstreamFailure(ErrorClass.CONNECTION, detail="could not resolve the host") from None
    if not addresses:
        raise UpstreamFailure(ErrorClass.CONNECTION, detail="could not resolve the host")
    if any(outbound.refused(a, _settings["allow_private"]) for a in addresses):
        field = f"byok_conf.credentials.{req.host_field}"
        raise InvalidRequest(f"'{field}' names a host that resolves to a non-public address, which the gateway "
                             "does not call (GATEWAY_ALLOW_PRIVATE_UPSTREAMS)", param=field)
    connection = pool().connection_from_host(addresses[0], port, "https",
                                             pool_kwargs={"server_hostname": host, "assert_hostname": host})
    return connection.urlopen(req.method, url.request_uri, body=req.body, headers={**req.headers, "Host": url.netloc},
                              timeout=timeout, preload_content=False, redirect=False, retries=False,
                              assert_same_host=False)


def fetch(method: str, url: str, body: bytes | None, headers: dict[str, str], deadline: float
          ) -> tuple[int, dict[str, str], bytes]:
    """One small bounded request read whole (e.g. an OAuth token exchange); raises UpstreamFailure."""
    response = send(UpstreamRequest(method, url, headers, body or b""), deadline)
    try:
        return response.status, response.headers, response.read_body()
    finally:
        response.close()
