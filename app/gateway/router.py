"""Plan the attempts (BYOK keys in priority order, then the shared pool) and run them under the policy.

The router decides on error *classes*; it never parses a provider's JSON.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterator

from app.billing.metering import AttemptEvent
from app.billing.pricing import PriceVersion, cost_of, price_book
from app.gateway import http
from app.gateway.byok import ByokEntry
from app.gateway.errors import (ErrorClass, GatewayError, InsufficientCredits, ModelNotFound, UpstreamError,
                                UpstreamFailure)
from app.gateway.policy import FallbackPolicy
from app.gateway.providers import REGISTRY
from app.gateway.providers.base import Completion, Credentials, Provider, StreamState
from app.gateway.schema import ChatRequest

log = logging.getLogger(__name__)

# Thinking budgets the adapters add on top of the visible output when max_tokens is not given.
REASONING_RESERVE = {"none": 0, "minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}
# Shared-pool failures worth another platform key for the same provider.
TRY_NEXT_SHARED_KEY = {ErrorClass.RATE_LIMIT, ErrorClass.OVERLOADED, ErrorClass.SERVER_ERROR,
                       ErrorClass.TIMEOUT, ErrorClass.CONNECTION, ErrorClass.AUTH, ErrorClass.BUDGET}


@dataclass(slots=True, repr=False)
class Attempt:
    provider: Provider
    model: str
    kind: str  # byok | shared
    credentials: Credentials | None = None  # None: chosen from the shared pool when run
    label: str = ""
    where: str = ""  # the byok_conf entry, as errors name it


@dataclass(slots=True)
class Plan:
    byok: list[Attempt]
    shared: Attempt | None
    shared_allowed: bool
    price: PriceVersion | None  # the shared pool's price for the model, None if not in the catalog


@dataclass
class Trace:
    """Everything the recording needs to know about how the request was served (no credentials)."""

    attempts: list[AttemptEvent] = field(default_factory=list)
    fallback: bool = False
    fallback_reason: str = ""
    fallback_refused: str = ""
    reserved: Decimal = Decimal(0)
    served: Attempt | None = None

    def attempts_metadata(self) -> list[dict[str, Any]]:
        return [{"provider": a.provider, "credential": a.credential, "status": a.http_status,
                 "error_class": a.error_class or None, "outcome": a.outcome} for a in self.attempts]


@dataclass
class Credits:
    """What the router may ask of billing, injected so the router stays free of the database."""

    markup_percent: Decimal
    reserve: Callable[[Decimal], bool]
    fallback_spent: Callable[[], Decimal]


def resolve_model(name: str, entries: list[ByokEntry]) -> tuple[str | None, str]:
    """`provider/model` routes to that provider; a bare name goes by byok_conf or else the catalog."""
    prefix, sep, rest = name.partition("/")
    if sep and prefix in REGISTRY and rest:
        return prefix, rest
    return None, name


def _shared_provider(model: str, entries: list[ByokEntry]) -> str | None:
    """For a bare model name: the BYOK provider if it is priced, else a catalog provider with platform keys."""
    book = price_book()
    for entry in entries:
        if book.lookup(entry.provider, model):
            return entry.provider
    candidates = book.providers_of(model)
    with_keys = [p for p in candidates if REGISTRY.get(p) and REGISTRY[p].shared_pool()]
    return (with_keys or candidates or [None])[0]


def plan(req: ChatRequest, entries: list[ByokEntry], policy: FallbackPolicy) -> Plan:
    provider_id, model = resolve_model(req.model, entries)
    byok = [Attempt(REGISTRY[e.provider], model, "byok", e.credentials, e.label, e.where) for e in entries]
    shared_id = provider_id or _shared_provider(model, entries)
    price = price_book().lookup(shared_id, model) if shared_id else None
    shared = Attempt(REGISTRY[shared_id], model, "shared") if shared_id and price else None
    if not entries and shared is None:
        where = f" for provider '{provider_id}'" if provider_id else ""
        raise ModelNotFound(f"model '{req.model[:128]}' is not in the catalog{where}; see GET /v1/models",
                            param="model")
    said = [e.fallback for e in entries if e.fallback is not None]
    if not entries:
        allowed = True
    elif False in said:
        allowed = False  # any entry saying "fallback": false keeps the request on the caller's keys
    elif said:
        allowed = True
    else:
        allowed = policy.enabled_for(shared_id or "")
    return Plan(byok=byok, shared=shared, shared_allowed=allowed, price=price)


class Router:
    def __init__(self, req: ChatRequest, plan_: Plan, policy: FallbackPolicy, credits: Credits,
                 config: dict[str, Any], trace: Trace):
        self.req, self.plan, self.policy, self.credits = req, plan_, policy, credits
        self.config, self.trace = config, trace

    def run(self) -> "Completion | UpstreamStream":
        last: UpstreamFailure | None = None
        last_provider = ""
        for attempt in self.plan.byok:
            try:
                return self._call(attempt, attempt.credentials)
            except UpstreamFailure as failure:
                last, last_provider = failure, attempt.provider.id
                if failure.error_class is ErrorClass.BAD_REQUEST:
                    raise self._final(failure, last_provider) from None
        if last is not None:
            self._check_fallback(last, last_provider)
            self.trace.fallback, self.trace.fallback_reason = True, last.error_class.value
        return self._shared(last, last_provider)

    # -- the shared pool -------------------------------------------------------
    def _check_fallback(self, failure: UpstreamFailure, provider: str) -> None:
        if not self.plan.shared_allowed or not self.policy.allows(failure.error_class, provider):
            raise self._final(failure, provider)
        if self.plan.shared is None:
            self._refuse(failure, provider, "model_not_in_catalog")

    def _refuse(self, failure: UpstreamFailure | None, provider: str, reason: str) -> None:
        self.trace.fallback_refused = reason
        if failure is None:
            if reason == "insufficient_credits":
                raise InsufficientCredits(
                    "insufficient credits for the shared provider pool; add credits or send byok_conf",
                    metadata={"attempts": self.trace.attempts_metadata()})
            raise UpstreamError(UpstreamFailure(ErrorClass.OVERLOADED, 503, detail=reason.replace("_", " ")),
                                self.plan.shared.provider.id if self.plan.shared else provider,
                                {"attempts": self.trace.attempts_metadata()})
        raise self._final(failure, provider, fallback_refused=reason)

    def _shared(self, byok_failure: UpstreamFailure | None, byok_provider: str) -> "Completion | UpstreamStream":
        attempt = self.plan.shared
        assert attempt is not None
        keys = attempt.provider.shared_pool()
        if not keys:
            self._refuse(byok_failure, byok_provider, "no_shared_capacity")
        worst = self._worst_case()
        if byok_failure is not None and self.policy.monthly_cap is not None:
            if self.credits.fallback_spent() + worst > self.policy.monthly_cap:
                self._refuse(byok_failure, byok_provider, "fallback_cap_reached")
        if not self.credits.reserve(worst):
            self._refuse(byok_failure, byok_provider, "insufficient_credits")
        self.trace.reserved = worst
        last: UpstreamFailure | None = None
        for index in _key_order(attempt.provider.id, len(keys)):
            try:
                return self._call(attempt, keys[index])
            except UpstreamFailure as failure:
                last = failure
                if failure.retry_after:
                    _cool_down(attempt.provider.id, index, failure.retry_after)
                if failure.error_class not in TRY_NEXT_SHARED_KEY:
                    break
        assert last is not None
        raise self._final(last, attempt.provider.id)

    def _worst_case(self) -> Decimal:
        price = self.plan.price
        assert price is not None
        prompt = self.req.prompt_bytes // 2 + 64
        output = self.req.max_output_tokens
        if output is None:
            effort = self.req.params.get("reasoning_effort")
            output = int(self.config["DEFAULT_MAX_TOKENS_RESERVE"]) + REASONING_RESERVE.get(effort, 0)
        output *= self.req.choices
        return with_markup(cost_of(price, prompt, output), self.credits.markup_percent)

    # -- one attempt -------------------------------------------------------------
    def _call(self, attempt: Attempt, creds: Credentials) -> "Completion | UpstreamStream":
        started = time.monotonic()
        event = AttemptEvent(attempt.provider.id, attempt.model, attempt.kind, attempt.label, "failed")
        self.trace.attempts.append(event)
        try:
            result = self._exchange(attempt, creds, event)
        except UpstreamFailure as failure:
            event.error_class = failure.error_class.value
            event.http_status = failure.status or event.http_status
            event.latency_ms = _ms(started)
            _log_attempt(event)
            raise
        except GatewayError as exc:
            # The request could not be translated for this provider: nothing went upstream.
            self.trace.attempts.remove(event)
            raise exc.about_entry(attempt.where)
        event.outcome = "ok"
        event.latency_ms = _ms(started)
        self.trace.served = attempt
        _log_attempt(event)
        return result

    def _exchange(self, attempt: Attempt, creds: Credentials, event: AttemptEvent) -> "Completion | UpstreamStream":
        """One upstream call; any exception but the gateway's own is a failed attempt, never an escape.

        A library exception can quote what it was given (http.client puts a refused header value,
        key included, in its message): only its type is logged, and the failure is classed as the
        connection's (before an answer) or the answer's (after one).
        """
        provider, stage, response = attempt.provider, "sending", None
        try:
            deadline = http.attempt_deadline()
            authorized = provider.authorize(creds, deadline)
            upstream = provider.build_request(self.req, attempt.model, authorized,
                                              http.base_url_override(self.config, provider.id))
            response = http.send(upstream, deadline)
            event.http_status, stage = response.status, "reading"
            return self._answer(provider, attempt.model, response)
        except (UpstreamFailure, GatewayError):
            raise
        except Exception as exc:
            log.warning("unexpected %s while %s an upstream attempt to %s; counted as a failed attempt",
                        type(exc).__name__, stage, provider.id)
            if response is not None:
                response.close()
            error_class = ErrorClass.CONNECTION if stage == "sending" else ErrorClass.MALFORMED
            raise UpstreamFailure(error_class, None, detail="unexpected error") from None

    def _answer(self, provider: Provider, model: str, response: http.UpstreamResponse
                ) -> "Completion | UpstreamStream":
        if not 200 <= response.status < 300:
            try:
                body = response.read_body()
            except UpstreamFailure:
                body = b""
            finally:
                response.close()
            raise provider.classify_error(response.status, response.headers, body)
        if self.req.stream:
            stream = UpstreamStream(provider, response, self.req, model)
            stream.prime()
            return stream
        try:
            return provider.parse_response(response.read_body(), self.req, model)
        finally:
            response.close()

    def _final(self, failure: UpstreamFailure, provider: str, fallback_refused: str = "") -> UpstreamError:
        metadata: dict[str, Any] = {"attempts": self.trace.attempts_metadata()}
        if fallback_refused:
            metadata["fallback_refused"] = fallback_refused
        return UpstreamError(failure, provider, metadata)


class UpstreamStream:
    """An upstream stream that has produced its first chunk: from here on, no fallback."""

    def __init__(self, provider: Provider, response: http.UpstreamResponse, req: ChatRequest, model: str):
        self.provider = provider
        self.response = response
        self.state: StreamState = provider.new_stream_state(req, model)
        self._chunks = self._generate()
        self.first: list[dict[str, Any]] = []

    def prime(self) -> None:
        """Pull until the first chunk (or the end): failures up to here may still fall back."""
        try:
            self.first = next(self._chunks)
        except StopIteration:
            self.first = []
        except UpstreamFailure:
            self.close()
            raise

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        if self.first:
            yield self.first
        yield from self._chunks

    def _generate(self) -> Iterator[list[dict[str, Any]]]:
        try:
            yield from self._translate()
        except UpstreamFailure:
            raise
        except Exception as exc:  # a translation bug or an odd event: the stream's failure, never an escape
            log.warning("unexpected %s while translating a stream from %s", type(exc).__name__, self.provider.id)
            raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="unexpected error in the stream") from None

    def _translate(self) -> Iterator[list[dict[str, Any]]]:
        decoder = self.provider.stream_decoder()
        convert = self.provider.convert_stream_event
        for data in self.response.chunks():
            for event in decoder.feed(data):
                out = convert(event, self.state)
                if out:
                    yield out
        tail = [c for event in decoder.close() for c in convert(event, self.state)]
        tail += self.provider.finish_stream(self.state)
        if tail:
            yield tail

    def close(self) -> None:
        self.response.close()


def with_markup(cost: Decimal, markup_percent: Decimal) -> Decimal:
    if not markup_percent:
        return cost
    return (cost * (1 + markup_percent / 100)).quantize(Decimal("0.0000000001"))


_counter = itertools.count()
_cooldowns: dict[tuple[str, int], float] = {}
_cool_lock = threading.Lock()


def _key_order(provider_id: str, count: int) -> list[int]:
    """Round-robin over the platform's keys, skipping those still inside a provider's retry-after."""
    start = next(_counter) % count
    order = [(start + i) % count for i in range(count)]
    now = time.monotonic()
    ready = [i for i in order if _cooldowns.get((provider_id, i), 0) <= now]
    return ready or order[:1]


def _cool_down(provider_id: str, index: int, seconds: float) -> None:
    with _cool_lock:
        _cooldowns[(provider_id, index)] = time.monotonic() + seconds


def _log_attempt(event: AttemptEvent) -> None:
    """One DEBUG line per upstream attempt: what an operator debugging routing needs, and nothing secret."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("upstream attempt provider=%s model=%s credential=%s outcome=%s status=%s error_class=%s "
                  "latency_ms=%d", event.provider, event.model, event.credential, event.outcome,
                  event.http_status, event.error_class or "-", event.latency_ms)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
