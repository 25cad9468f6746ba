"""The /v1 data plane: authenticate, validate, call the router, answer JSON or SSE, record."""
from __future__ import annotations

import re
import time
from decimal import Decimal
from typing import Any, Iterator

import orjson
from flask import Blueprint, Response, current_app, g, request
from sqlalchemy import func, select
from werkzeug.exceptions import RequestEntityTooLarge

from app import db
from app.billing import ledger, metering
from app.billing.money import ZERO
from app.billing.pricing import price_book
from app.gateway import sse
from app.gateway.auth import Caller, authenticate
from app.gateway.byok import parse_byok_conf
from app.gateway.errors import GatewayError, InvalidRequest, NotFound, PayloadTooLarge, UpstreamFailure, UpstreamError
from app.gateway.outcome import Outcome, estimate_usage, json_money
from app.gateway.router import Credits, Router, UpstreamStream, plan
from app.gateway.schema import parse_body, parse_chat_request
from app.models import UsageRecord, UsageRollup
from app.types import utcnow

bp = Blueprint("gateway", __name__, url_prefix="/v1")
# The gateway's own request ids (app.security.new_request_id), within the width of usage_records.request_id.
_GENERATION_ID = re.compile(r"gen-[0-9a-f]{8,36}")


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status=status, headers=headers, mimetype="application/json")


@bp.post("/chat/completions")
def chat_completions() -> Response:
    started = time.monotonic()
    request_id = g.request_id
    config = current_app.config
    caller = authenticate(request.headers.get("Authorization"), "inference", config)
    outcome = Outcome(request_id, caller, started)
    try:
        body = parse_body(_read_body())
        entries = parse_byok_conf(body.pop("byok_conf", None), config)
        outcome.label = entries[0].label if entries else ""
        outcome.req = req = parse_chat_request(body)
        route = plan(req, entries, caller.policy)
        result = Router(req, route, caller.policy, _credits(caller, request_id), config, outcome.trace).run()
    except GatewayError as exc:
        metering.record(outcome.event("error", exc.status, error_class=_error_class(exc)))
        exc.headers = {**outcome.headers(), **exc.headers}
        raise
    if isinstance(result, UpstreamStream):
        return Response(_stream(result, outcome), mimetype="text/event-stream",
                        headers={**outcome.headers(), "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    usage = result.usage or estimate_usage(req, 0)
    outcome.price(usage)
    completion = result.body
    completion["id"] = request_id
    completion["model"] = req.model
    completion["usage"] = outcome.usage_body(usage, completion.get("usage"))
    metering.record(outcome.event("ok", 200, usage))
    return _json(completion, headers=outcome.headers())


def _stream(upstream: UpstreamStream, outcome: Outcome) -> Iterator[bytes]:
    req = outcome.req
    assert req is not None
    status, http_status, error_class = "ok", 200, ""
    usage = None
    try:
        for chunks in upstream:
            out = []
            for piece in chunks:
                piece["id"] = outcome.request_id
                piece["model"] = req.model
                out.append(sse.frame(piece))
            outcome.first_byte()
            yield b"".join(out)
        usage = _stream_usage(upstream, outcome)  # priced once: the record below reuses it
        if req.include_usage:
            yield sse.frame({"id": outcome.request_id, "object": "chat.completion.chunk",
                             "created": upstream.state.created, "model": req.model, "choices": [],
                             "usage": outcome.usage_body(usage)})
        yield sse.DONE
    except UpstreamFailure as failure:
        status, error_class = "error", failure.error_class.value
        outcome.trace.attempts[-1].outcome = "failed"
        outcome.trace.attempts[-1].error_class = error_class
        error = UpstreamError(failure, upstream.provider.id, {"attempts": outcome.trace.attempts_metadata()})
        http_status = error.status
        yield sse.error_frame(error.to_dict())
    except GeneratorExit:
        http_status, error_class = 499, "client_closed"
        raise
    finally:
        upstream.close()
        if usage is None:  # cut short: price what was received
            usage = _stream_usage(upstream, outcome)
        metering.record(outcome.event(status, http_status, usage, error_class))


def _stream_usage(upstream: UpstreamStream, outcome: Outcome):
    usage = upstream.state.usage or estimate_usage(outcome.req, upstream.state.completion_chars)
    outcome.price(usage)
    return usage


def _read_body() -> bytes:
    try:
        return request.get_data(cache=False)
    except RequestEntityTooLarge:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        raise PayloadTooLarge(f"request body is larger than the {limit} byte limit") from None


def _error_class(exc: GatewayError) -> str:
    if isinstance(exc, UpstreamError):
        return exc.failure.error_class.value
    return exc.code or exc.type


def _credits(caller: Caller, request_id: str) -> Credits:
    def fallback_spent() -> Decimal:
        # A short session of its own: the request must not hold a pooled connection across its upstream call.
        now = utcnow()
        with db.session_scope() as session:
            total = session.execute(
                select(func.sum(UsageRollup.charged)).where(
                    UsageRollup.org_id == caller.org_id, UsageRollup.billing_period == f"{now:%Y-%m}",
                    UsageRollup.fallback_reason != "")
            ).scalar()
        return total if total is not None else ZERO

    return Credits(
        markup_percent=caller.markup_percent,
        reserve=lambda amount: ledger.reserve(caller.org_id, request_id, amount),
        fallback_spent=fallback_spent,
    )


@bp.get("/models")
def models() -> Response:
    authenticate(request.headers.get("Authorization"), "inference", current_app.config)
    data = []
    for v in price_book().current():
        data.append({
            "id": f"{v.provider}/{v.model}", "object": "model", "created": int(v.effective_from.timestamp()),
            "owned_by": v.provider,
            "pricing": {
                "currency": "USD", "unit": "per_million_tokens",
                "input": json_money(v.input), "output": json_money(v.output),
                "cached_input": json_money(v.cached_input) if v.cached_input is not None else None,
                "cache_write": json_money(v.cache_write) if v.cache_write is not None else None,
                "source": v.source,
            },
        })
    return _json({"object": "list", "data": data})


@bp.get("/generation")
def generation() -> Response:
    caller = authenticate(request.headers.get("Authorization"), "inference", current_app.config)
    request_id = request.args.get("id", "")
    if not request_id:
        raise InvalidRequest("query parameter 'id' is required", param="id")
    if not _GENERATION_ID.fullmatch(request_id):  # never quoted back: it may be anything at all
        raise InvalidRequest("query parameter 'id' is not a generation id (gen- followed by hexadecimal digits)",
                             param="id")
    record = db.session.scalar(
        select(UsageRecord).where(UsageRecord.request_id == request_id, UsageRecord.org_id == caller.org_id))
    if record is None:
        raise NotFound(f"no generation with id '{request_id}' in this organization", param="id")
    return _json({"data": generation_json(record)})


def generation_json(r: UsageRecord) -> dict[str, Any]:
    return {
        "id": r.request_id, "created_at": r.created_at.isoformat(), "provider": r.provider, "model": r.model,
        "credential": r.credential, "is_byok": r.credential == "byok", "byok_label": r.byok_label or None,
        "fallback": r.fallback, "fallback_reason": r.fallback_reason or None,
        "fallback_refused": r.fallback_refused or None, "status": r.status, "http_status": r.http_status,
        "error_class": r.error_class or None, "stream": r.stream,
        "tokens": {"prompt": r.prompt_tokens, "completion": r.completion_tokens, "cached": r.cached_tokens,
                   "cache_write": r.cache_write_tokens, "reasoning": r.reasoning_tokens, "source": r.tokens_source},
        "cost": json_money(r.cost) if r.cost is not None else None, "cost_status": r.cost_status,
        "charged": json_money(r.charged), "billing_period": r.billing_period,
        "latency_ms": r.latency_ms, "ttft_ms": r.ttft_ms,
        "attempts": [{"provider": a.provider, "model": a.model, "credential": a.credential,
                      "status": a.http_status, "error_class": a.error_class or None, "outcome": a.outcome,
                      "latency_ms": a.latency_ms} for a in r.attempts],
    }
