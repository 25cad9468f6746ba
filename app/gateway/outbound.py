"""Where the gateway may connect when a caller names the host (the Azure `endpoint`).

URL parsers disagree at the edges (urlsplit ends the host at the last `@`,
urllib3 at a backslash), so a caller's string is never handed to one: it is
taken apart here by one strict rule, and the URL that is sent is rebuilt from
the parts that passed. The name is then resolved once, every address is
checked, and the connection goes to a checked address (`http.send`), so a DNS
answer that changes between a check and a connect cannot redirect it.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any

import idna

from app.gateway.errors import ConfigurationError
from app.validation import TextRejected

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
MAX_ENDPOINT = 300
_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
# Reachable with GATEWAY_ALLOW_PRIVATE_UPSTREAMS; every other non-public kind never is (link-local holds the
# cloud metadata services, and no endpoint is unspecified, multicast or reserved).
_OPT_IN_KINDS = {"private", "loopback"}


@dataclass(frozen=True, slots=True)
class Origin:
    host: str  # lower-case ASCII DNS name
    port: int

    def url(self) -> str:
        return f"https://{self.host}" if self.port == 443 else f"https://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class HostRules:
    """Which origins a caller may name: host patterns (`*.suffix` is exactly one label before the suffix)."""

    patterns: tuple[str, ...] | None  # None: any DNS name (operator configuration)
    ports: frozenset[int] | None  # None: any port

    def allows_host(self, host: str) -> bool:
        if self.patterns is None:
            return True
        for pattern in self.patterns:
            if pattern.startswith("*."):
                label, dot, rest = host.partition(".")
                if dot and rest == pattern[2:] and label:
                    return True
            elif host == pattern:
                return True
        return False


ANY_HOST = HostRules(None, None)


def parse_origin(value: Any, rules: HostRules) -> Origin:
    """`https://name[:port][/]` as an Origin, or TextRejected saying why (never quoting the value)."""
    if not isinstance(value, str):
        raise TextRejected("must be a string")
    if len(value) > MAX_ENDPOINT:
        raise TextRejected(f"is longer than {MAX_ENDPOINT} characters")
    if not value.startswith("https://"):
        raise TextRejected("must start with https://")
    authority = value[len("https://"):]
    authority = authority[:-1] if authority.endswith("/") else authority
    problem = _authority_problem(authority)
    if problem:
        raise TextRejected(problem)
    host, colon, port_text = authority.partition(":")
    host = host.lower()
    _check_host(host)
    port = _port(port_text) if colon else 443
    if not rules.allows_host(host):
        raise TextRejected(f"host '{host}' is not an allowed Azure OpenAI host (GATEWAY_AZURE_ALLOWED_HOSTS)")
    if rules.ports is not None and port not in rules.ports:
        raise TextRejected(f"uses port {port}, which is not allowed (GATEWAY_AZURE_ALLOWED_PORTS)")
    return Origin(host, port)


def _authority_problem(authority: str) -> str | None:
    """The first thing that makes `name[:port]` more than a name and a port."""
    checks = (
        (lambda c: c in "/?#", "may not have a path, query or fragment (only https://host[:port])"),
        (lambda c: c == "@", "may not contain userinfo ('@')"),
        (lambda c: c == "\\", "may not contain a backslash"),
        (lambda c: c == "%", "may not contain percent-escapes"),
        (lambda c: c.isspace() or ord(c) < 0x20 or c == "\x7f", "may not contain whitespace or control characters"),
        (lambda c: not c.isascii(), "must be ASCII (write an internationalised name in its xn-- form)"),
        (lambda c: c in "[]", "must name a host, not an IP address"),
        (lambda c: not (c.isalnum() or c in ".-:"), "contains a character that is not allowed in a host name"),
    )
    for test, reason in checks:
        if any(test(c) for c in authority):
            return reason
    if not authority:
        return "has no host"
    return None


def _check_host(host: str) -> None:
    labels = host.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):  # what URL parsers read as an IPv4 address, in any notation
        raise TextRejected("must name a host, not an IP address")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise TextRejected("is not a valid DNS name")
    if any(label.startswith("xn--") for label in labels):
        try:
            valid = idna.encode(idna.decode(host)).decode() == host
        except (idna.IDNAError, UnicodeError):
            valid = False
        if not valid:
            raise TextRejected("is not a valid internationalised DNS name")


def _port(text: str) -> int:
    if not _PORT.fullmatch(text) or int(text) > 65535:
        raise TextRejected("has an invalid port")
    return int(text)


# -- addresses -------------------------------------------------------------------------------
def resolve(host: str, port: int) -> list[str]:
    """The addresses of `host`, looked up once per connection (tests replace this hook)."""
    seen: list[str] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if sockaddr[0] not in seen:
            seen.append(sockaddr[0])
    return seen


def address_kind(address: str) -> str | None:
    """None for a public unicast address, else what it is; addresses embedded in IPv6 count too."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    kinds = [_kind(candidate) for candidate in _embedded(ip)]
    refused = [k for k in kinds if k is not None]
    if not refused:
        return None
    never = [k for k in refused if k not in _OPT_IN_KINDS]
    return (never or refused)[0]


def refused(address: str, allow_private: bool) -> bool:
    kind = address_kind(address)
    return kind is not None and not (allow_private and kind in _OPT_IN_KINDS)


def _embedded(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list:
    """The address and the IPv4 addresses it carries; a mapped or NAT64 address *is* its IPv4 address."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return [ip]
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in _NAT64:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    found: list = [ip]
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo:
        found += list(ip.teredo)
    return found


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


def _kind(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if ip.is_unspecified or (ip.version == 4 and ip in _THIS_NETWORK):
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip.is_link_local:
        return "link-local"
    if ip.is_loopback:
        return "loopback"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private or not ip.is_global:
        return "private"
    return None


# -- operator settings ---------------------------------------------------------------------------
def host_rules(config: dict[str, Any]) -> HostRules:
    """GATEWAY_AZURE_ALLOWED_HOSTS and GATEWAY_AZURE_ALLOWED_PORTS, checked when the app is built."""
    patterns = []
    for raw in str(config.get("GATEWAY_AZURE_ALLOWED_HOSTS") or "").split(","):
        pattern = raw.strip().lower()
        if not pattern:
            continue
        name = pattern[2:] if pattern.startswith("*.") else pattern
        try:
            _check_host(name)
        except TextRejected as exc:
            raise ConfigurationError(f"GATEWAY_AZURE_ALLOWED_HOSTS: '{raw.strip()[:80]}' {exc.reason}") from None
        patterns.append(pattern)
    ports = set()
    for raw in str(config.get("GATEWAY_AZURE_ALLOWED_PORTS") or "443").split(","):
        text = raw.strip()
        if not _PORT.fullmatch(text) or int(text) > 65535:
            raise ConfigurationError(f"GATEWAY_AZURE_ALLOWED_PORTS: '{text[:20]}' is not a port number")
        ports.add(int(text))
    return HostRules(tuple(patterns), frozenset(ports))


def flag(config: dict[str, Any], name: str) -> bool:
    """A boolean setting: a bool from code, or a string from the environment (which must be one we know)."""
    value = config.get(name, False)
    if isinstance(value, bool):
        return value
    parsed = _FLAGS.get(str(value).strip().lower())
    if parsed is None:
        raise ConfigurationError(f"{name} must be true or false")
    return parsed
