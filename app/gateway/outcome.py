"""What one gateway request cost and how it was served: the usage extras and the usage record."""
from __future__ import annotations

import math
import time
from decimal import Decimal
from typing import Any

import orjson

from app.billing.metering import UsageEvent
from app.billing.money import ZERO
from app.billing.pricing import cost_of, price_book
from app.gateway.auth import Caller
from app.gateway.providers.base import Usage
from app.gateway.router import Trace, resolve_model, with_markup
from app.gateway.schema import ChatRequest


class Outcome:
    def __init__(self, request_id: str, caller: Caller, started: float):
        self.request_id = request_id
        self.caller = caller
        self.started = started
        self.trace = Trace()
        self.req: ChatRequest | None = None
        self.label = ""
        self.ttft_ms: int | None = None
        self.cost: Decimal | None = None
        self.charge = ZERO
        self.price_id: int | None = None
        self.cost_status = "none"

    # -- how it was served ---------------------------------------------------
    @property
    def credential(self) -> str:
        served = self.trace.served
        if served is not None:
            return served.kind
        return self.trace.attempts[-1].credential if self.trace.attempts else "shared"

    def provider_and_model(self) -> tuple[str, str]:
        if self.trace.attempts:
            last = self.trace.attempts[-1]
            return last.provider, last.model
        if self.req is None:
            return "", ""
        provider, model = resolve_model(self.req.model, [])
        return provider or "", model

    def headers(self) -> dict[str, str]:
        provider, _ = self.provider_and_model()
        return {
            "X-Request-Id": self.request_id,
            "X-Gateway-Provider": provider,
            "X-Gateway-Credential": self.credential,
            "X-Gateway-Fallback": "1" if self.trace.fallback else "0",
            "X-Gateway-Attempts": str(len(self.trace.attempts)),
        }

    def first_byte(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = int((time.monotonic() - self.started) * 1000)

    # -- money ---------------------------------------------------------------
    def price(self, usage: Usage) -> None:
        """Cost at list price of the attempt that served; credits charged only for the shared pool."""
        served = self.trace.served
        if served is None:
            return
        version = price_book().lookup(served.provider.id, served.model)
        if version is None:
            self.cost, self.cost_status = None, "unpriced"
            return
        self.cost = cost_of(version, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
                            usage.cache_write_tokens, usage.reasoning_tokens)
        self.price_id, self.cost_status = version.id, "priced"
        if served.kind == "shared":
            self.charge = with_markup(self.cost, self.caller.markup_percent)

    def usage_body(self, usage: Usage, upstream: dict[str, Any] | None = None) -> dict[str, Any]:
        body = dict(upstream) if isinstance(upstream, dict) else {}
        body.update(usage.to_openai())
        body["is_byok"] = self.credential == "byok"
        body["cost"] = json_money(self.charge)
        body["cost_details"] = {
            "upstream_inference_cost": json_money(self.cost) if self.cost is not None else None,
        }
        return body

    # -- the record ----------------------------------------------------------
    def event(self, status: str, http_status: int, usage: Usage | None = None, error_class: str = "") -> UsageEvent:
        provider, model = self.provider_and_model()
        usage = usage or Usage(source="none")
        return UsageEvent(
            request_id=self.request_id, org_id=self.caller.org_id, api_key_id=self.caller.api_key_id,
            provider=provider, model=model, credential=self.credential, status=status, http_status=http_status,
            label=self.label, fallback=self.trace.fallback,
            fallback_reason=self.trace.fallback_reason, fallback_refused=self.trace.fallback_refused,
            error_class=error_class, stream=bool(self.req and self.req.stream),
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens, cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens, tokens_source=usage.source, cost=self.cost,
            cost_status=self.cost_status, charge=self.charge, reserved=self.trace.reserved,
            price_id=self.price_id, latency_ms=int((time.monotonic() - self.started) * 1000),
            ttft_ms=self.ttft_ms, attempts=list(self.trace.attempts),
        )


def estimate_usage(req: ChatRequest, completion_chars: int) -> Usage:
    """For a stream cut short before the provider reported usage: about four characters a token."""
    return Usage(prompt_tokens=math.ceil(req.prompt_bytes / 4), completion_tokens=math.ceil(completion_chars / 4),
                 source="estimated")


def json_money(value: Decimal) -> orjson.Fragment:
    """A Decimal as an exact JSON number (never through float)."""
    text = format(value.normalize(), "f") if value else "0"
    return orjson.Fragment(text.encode())
