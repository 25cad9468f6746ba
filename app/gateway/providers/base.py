"""The provider adapter interface: translate an OpenAI request out and the provider's answer back.

Adapters are pure translators. They never touch storage, billing or Flask, and
never see more than the one request's in-memory credentials. The router drives
them; the core never knows a wire format.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import orjson

from app.gateway.errors import ConfigurationError, ErrorClass, InvalidRequest, UpstreamFailure
from app.gateway.schema import ChatRequest
from app.validation import nesting_problem, secret_problem

# A model name where it becomes a URL path segment: no dot segments, nothing a URL parser reads as syntax.
_PATH_MODEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._:@+/-]{0,126}[A-Za-z0-9._:@+-])?")
# Provider answers deeper than this are not chat completions (and could not be re-encoded).
MAX_UPSTREAM_DEPTH = 96


@dataclass(slots=True)
class UpstreamRequest:
    method: str
    url: str  # never carries a credential: keys go in headers
    headers: dict[str, str]
    body: bytes
    # The credential field that chose the URL's host, when a caller did: http.send then resolves the name
    # once, checks every address and connects to a checked one. None: the provider's or operator's host.
    host_field: str | None = None


@dataclass(slots=True)
class Usage:
    """Token counts in OpenAI's meaning: prompt_tokens includes cached and cache-write tokens."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    source: str = "reported"  # reported | estimated

    def to_openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }


@dataclass(slots=True)
class Completion:
    body: dict[str, Any]  # an OpenAI chat.completion object; the gateway rewrites id and usage extras
    usage: Usage | None


@dataclass
class StreamState:
    """What a stream translation remembers between events; adapters keep their own keys in `extra`."""

    model: str
    created: int = field(default_factory=lambda: int(time.time()))
    usage: Usage | None = None
    finish_reason: str | None = None
    done: bool = False  # the provider signalled a complete end of stream
    completion_chars: int = 0  # for estimating tokens of a stream cut short
    extra: dict[str, Any] = field(default_factory=dict)


class StreamDecoder(Protocol):
    def feed(self, data: bytes) -> list[Any]: ...
    def close(self) -> list[Any]: ...


class Credentials:
    """A BYOK or shared-pool credential held only in this request's memory.

    repr/str never show a value, and it refuses to be pickled, so it cannot end
    up in a log line, a traceback's locals rendering, or a cache by accident.
    `trusted`: it comes from the operator's configuration, not from a caller.
    """

    __slots__ = ("_values", "trusted")

    def __init__(self, values: dict[str, Any], *, trusted: bool = False):
        self._values = dict(values)
        self.trusted = trusted

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def fields(self) -> list[str]:
        return sorted(self._values)

    def __repr__(self) -> str:
        return f"Credentials(fields={self.fields()})"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("credentials cannot be serialized")


class Provider:
    id: ClassVar[str]
    required_credentials: ClassVar[tuple[str, ...]] = ("api_key",)
    optional_credentials: ClassVar[tuple[str, ...]] = ()
    # The credential fields that travel in an HTTP header: each must pass app.validation.check_secret.
    header_credentials: ClassVar[tuple[str, ...]] = ("api_key",)
    default_base_url: ClassVar[str] = ""

    _shared_pool: tuple[Credentials, ...] = ()

    def configure(self, config: dict[str, Any]) -> None:
        """Read this provider's process-wide settings once, when the app is built: the shared pool among them.

        A shared key that could not be sent in a header stops the app here, naming the variable.
        """
        pool = tuple(self.shared_credentials(config))
        for number, creds in enumerate(pool, 1):
            creds.trusted = True
            for name in self.header_credentials:
                value = creds.get(name)
                problem = None if value is None else (
                    secret_problem(value) if isinstance(value, str) else "is not a string")
                if problem:
                    raise ConfigurationError(f"{self.shared_variable(name)}: value {number} of {len(pool)} {problem}")
        self._shared_pool = pool

    def shared_variable(self, field_name: str) -> str:
        """The environment variable a shared-pool credential field comes from (named in start-up errors)."""
        return f"GATEWAY_{self.id.upper()}_SHARED_{field_name.upper()}"

    def shared_pool(self) -> tuple[Credentials, ...]:
        """The platform's credentials for this provider, as read from the configuration at start-up."""
        return self._shared_pool

    # -- credentials -------------------------------------------------------
    def check_credentials(self, creds: Credentials, config: dict[str, Any]) -> None:
        """Raise InvalidRequest for credentials that are present but unusable (never echoing values)."""

    def shared_credentials(self, config: dict[str, Any]) -> list[Credentials]:
        """The platform's own keys for this provider: GATEWAY_<ID>_SHARED_API_KEY, comma-separated."""
        raw = config.get(f"GATEWAY_{self.id.upper()}_SHARED_API_KEY", "")
        return [Credentials({"api_key": k.strip()}) for k in raw.split(",") if k.strip()]

    def authorize(self, creds: Credentials, deadline: float) -> Credentials:
        """Turn credentials into what requests need (e.g. a token exchange before `deadline`, a
        time.monotonic() value); default: as they are. Whatever is derived lives only in the result."""
        return creds

    # -- request -----------------------------------------------------------
    def build_request(self, req: ChatRequest, model: str, creds: Credentials, base_url: str | None) -> UpstreamRequest:
        raise NotImplementedError

    # -- non-streaming response --------------------------------------------
    def parse_response(self, body: bytes, req: ChatRequest, model: str) -> Completion:
        raise NotImplementedError

    def classify_error(self, status: int, headers: dict[str, str], body: bytes) -> UpstreamFailure:
        raise NotImplementedError

    # -- streaming ---------------------------------------------------------
    def new_stream_state(self, req: ChatRequest, model: str) -> StreamState:
        return StreamState(model=model)

    def stream_decoder(self) -> StreamDecoder:
        from app.gateway.sse import SSEDecoder

        return SSEDecoder()

    def convert_stream_event(self, event: Any, state: StreamState) -> list[dict[str, Any]]:
        """Translate one decoded upstream event into zero or more OpenAI chunks (without usage chunks)."""
        raise NotImplementedError

    def finish_stream(self, state: StreamState) -> list[dict[str, Any]]:
        """Called at upstream EOF; raise UpstreamFailure if the stream ended without its terminator."""
        if not state.done:
            raise UpstreamFailure(ErrorClass.CONNECTION, detail="stream ended before its end marker")
        return []


def require_fields(provider: Provider, creds: Credentials) -> None:
    for name in provider.required_credentials:
        value = creds.get(name)
        if value is None or value == "":
            raise InvalidRequest(
                f"byok_conf.credentials is missing required field '{name}' for provider '{provider.id}'",
                param=f"byok_conf.credentials.{name}",
            )


def model_in_path(model: str, provider_id: str) -> str:
    """`model` where it becomes part of a URL path, or a 400: the provider's host must get the path we mean."""
    if not _PATH_MODEL.fullmatch(model) or any(seg in ("", ".", "..") for seg in model.split("/")):
        raise InvalidRequest(f"'model' is not a model name provider '{provider_id}' accepts (letters, digits and "
                             ". _ : @ + - /, starting with a letter or digit, at most 128)", param="model")
    return model


def chunk(state: StreamState, request_model: str, delta: dict[str, Any], finish_reason: str | None = None,
          index: int = 0) -> dict[str, Any]:
    """An OpenAI chat.completion.chunk (id is set by the gateway when it forwards)."""
    return {
        "id": "",
        "object": "chat.completion.chunk",
        "created": state.created,
        "model": request_model,
        "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}],
    }



def token_count(value: Any) -> int:
    """A token count from a provider's usage object: a non-negative int, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def json_object(body: bytes | str) -> dict[str, Any]:
    """A provider's JSON object body; anything else is a malformed upstream response."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="body is not JSON") from None
    if not isinstance(data, dict):
        raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="body is not a JSON object")
    if nesting_problem(data, MAX_UPSTREAM_DEPTH):
        raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="body is nested too deeply")
    return data


def tool_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    """An OpenAI tool call from a provider's tool-use block (arguments as the JSON text OpenAI sends)."""
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(arguments or {}).decode()}}


def assistant_message(texts: list[str], thoughts: list[str], calls: list[dict[str, Any]]) -> dict[str, Any]:
    """The OpenAI assistant message from a provider's text, thinking and tool-use blocks."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None,
                               "refusal": None}
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    return message
