"""AWS Bedrock: the Converse and ConverseStream APIs, signed with SigV4 by botocore.

Credentials (byok_conf.credentials): aws_access_key_id, aws_secret_access_key,
region, optional aws_session_token. The region picks the endpoint
(https://bedrock-runtime.<region>.amazonaws.com), so it is validated before it
goes near a URL. GATEWAY_BEDROCK_BASE_URL replaces scheme and host (for the
fake); the signature always covers the URL, headers and body actually sent.

Shared pool, from the environment:
  GATEWAY_BEDROCK_SHARED_ACCESS_KEY_ID      comma-separated access key ids
  GATEWAY_BEDROCK_SHARED_SECRET_ACCESS_KEY  the matching secret keys, same order
  GATEWAY_BEDROCK_SHARED_REGION             one region for all keys, or one per key (default us-east-1)
"""
from __future__ import annotations

import logging
import re
import time
from typing import Any
from urllib.parse import quote

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as AwsCredentials

from app.gateway.errors import ErrorClass, InvalidRequest, UpstreamFailure, classify_status, parse_retry_after
from app.gateway.providers import bedrock_stream
from app.gateway.providers.base import (Completion, Credentials, Provider, StreamState, UpstreamRequest,
                                        assistant_message, model_in_path, tool_call)
from app.gateway.providers.bedrock_request import converse_body
from app.gateway.schema import ChatRequest

log = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"
# The region becomes part of the endpoint's host name: ASCII letters and digits only, bounded.
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]{1,16}){1,2}-[0-9]{1,2}")
_ACCESS_KEY_ID = re.compile(r"[A-Z0-9]{16,128}")
SHARED_VARIABLES = {"aws_access_key_id": "GATEWAY_BEDROCK_SHARED_ACCESS_KEY_ID",
                    "aws_secret_access_key": "GATEWAY_BEDROCK_SHARED_SECRET_ACCESS_KEY"}

# Bedrock's error types, decided after the status (the type is more precise than the status for these).
ERROR_TYPES = {
    "ThrottlingException": ErrorClass.RATE_LIMIT,
    "ServiceQuotaExceededException": ErrorClass.RATE_LIMIT,
    "ModelNotReadyException": ErrorClass.OVERLOADED,
    "ServiceUnavailableException": ErrorClass.OVERLOADED,
    "InternalServerException": ErrorClass.SERVER_ERROR,
    "ModelErrorException": ErrorClass.SERVER_ERROR,
    "ModelStreamErrorException": ErrorClass.SERVER_ERROR,
    "ModelTimeoutException": ErrorClass.TIMEOUT,
    "AccessDeniedException": ErrorClass.AUTH,
    "UnrecognizedClientException": ErrorClass.AUTH,
    "InvalidSignatureException": ErrorClass.AUTH,
    "IncompleteSignatureException": ErrorClass.AUTH,
    "MissingAuthenticationTokenException": ErrorClass.AUTH,
    "ExpiredTokenException": ErrorClass.AUTH,
    "ValidationException": ErrorClass.BAD_REQUEST,
    "ResourceNotFoundException": ErrorClass.NOT_FOUND,
}


class Bedrock(Provider):
    id = "bedrock"
    required_credentials = ("aws_access_key_id", "aws_secret_access_key", "region")
    optional_credentials = ("aws_session_token",)
    header_credentials = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")

    def shared_variable(self, field_name: str) -> str:
        return SHARED_VARIABLES.get(field_name) or super().shared_variable(field_name)

    # -- credentials -------------------------------------------------------------
    def check_credentials(self, creds: Credentials, config: dict[str, Any]) -> None:
        for name in (*self.required_credentials, *self.optional_credentials):
            if name in creds and not isinstance(creds[name], str):
                raise InvalidRequest(f"byok_conf.credentials.{name} must be a string",
                                     param=f"byok_conf.credentials.{name}")
        if not _REGION.fullmatch(creds["region"]):
            raise InvalidRequest("byok_conf.credentials.region must be an AWS region name such as us-east-1",
                                 param="byok_conf.credentials.region")
        if not _ACCESS_KEY_ID.fullmatch(creds["aws_access_key_id"]):
            raise InvalidRequest("byok_conf.credentials.aws_access_key_id is not an AWS access key id",
                                 param="byok_conf.credentials.aws_access_key_id")

    def shared_credentials(self, config: dict[str, Any]) -> list[Credentials]:
        ids = _split(config.get("GATEWAY_BEDROCK_SHARED_ACCESS_KEY_ID"))
        secrets = _split(config.get("GATEWAY_BEDROCK_SHARED_SECRET_ACCESS_KEY"))
        regions = _split(config.get("GATEWAY_BEDROCK_SHARED_REGION")) or [DEFAULT_REGION]
        if len(ids) != len(secrets) or len(regions) not in (1, len(ids)) or \
                not all(_REGION.fullmatch(r) for r in regions):
            log.warning("GATEWAY_BEDROCK_SHARED_* is inconsistent (counts of key ids, secrets and regions, "
                        "or a region name); the Bedrock shared pool is disabled")
            return []
        regions = regions * len(ids) if len(regions) == 1 else regions
        return [Credentials({"aws_access_key_id": i, "aws_secret_access_key": s, "region": r})
                for i, s, r in zip(ids, secrets, regions)]

    # -- request -------------------------------------------------------------------
    def build_request(self, req: ChatRequest, model: str, creds: Credentials, base_url: str | None) -> UpstreamRequest:
        region = creds["region"]
        if not _REGION.fullmatch(region):  # checked at the edge; never built into a URL unchecked
            raise InvalidRequest("byok_conf.credentials.region is not an AWS region",
                                 param="byok_conf.credentials.region")
        origin = (base_url or endpoint(region)).rstrip("/")
        action = "converse-stream" if req.stream else "converse"
        url = f"{origin}/model/{quote(model_in_path(model, self.id), safe='')}/{action}"
        body = orjson.dumps(converse_body(req, model))
        accept = "application/vnd.amazon.eventstream" if req.stream else "application/json"
        signed = AWSRequest(method="POST", url=url, data=body,
                            headers={"Content-Type": "application/json", "Accept": accept})
        aws = AwsCredentials(creds["aws_access_key_id"], creds["aws_secret_access_key"],
                             creds.get("aws_session_token") or None)
        SigV4Auth(aws, "bedrock", region).add_auth(signed)
        return UpstreamRequest("POST", url, dict(signed.headers.items()), body)

    # -- non-streaming response ------------------------------------------------------
    def parse_response(self, body: bytes, req: ChatRequest, model: str) -> Completion:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="body is not JSON") from None
        message = ((data.get("output") or {}) if isinstance(data, dict) else {}).get("message")
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="no output.message.content in response")
        usage = bedrock_stream.usage_from_bedrock(data.get("usage"))
        completion = {
            "id": "", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": _message(message["content"]), "logprobs": None,
                         "finish_reason": bedrock_stream.finish_reason(data.get("stopReason"))}],
        }
        if usage is not None:
            completion["usage"] = usage.to_openai()
        return Completion(body=completion, usage=usage)

    def classify_error(self, status: int, headers: dict[str, str], body: bytes) -> UpstreamFailure:
        error_type = _error_type(headers, body)
        return self.classify_type(error_type, status, parse_retry_after(headers.get("retry-after")))

    def classify_type(self, error_type: str | None, status: int | None,
                      retry_after: float | None = None) -> UpstreamFailure:
        """Status first; Bedrock's error type refines it (a stream exception has only the type)."""
        error_class = classify_status(status) if status else ErrorClass.SERVER_ERROR
        name = error_type[:1].upper() + error_type[1:] if error_type else None
        error_class = ERROR_TYPES.get(name, error_class)
        return UpstreamFailure(error_class, status, retry_after=retry_after,
                               provider_code=bedrock_stream.safe_name(name))

    # -- streaming ---------------------------------------------------------------------
    def stream_decoder(self) -> bedrock_stream.EventStreamDecoder:
        return bedrock_stream.EventStreamDecoder()

    def convert_stream_event(self, event: bedrock_stream.BedrockEvent, state: StreamState) -> list[dict[str, Any]]:
        return bedrock_stream.convert_stream_event(event, state, self.classify_type)


def endpoint(region: str) -> str:
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://bedrock-runtime.{region}.{suffix}"


def _message(content: list[Any]) -> dict[str, Any]:
    texts, reasoning, calls = [], [], []
    for block in content:
        if not isinstance(block, dict):
            raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="content block is not an object")
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            tool = block["toolUse"]
            if not isinstance(tool.get("toolUseId"), str) or not isinstance(tool.get("name"), str):
                raise UpstreamFailure(ErrorClass.MALFORMED, 200, detail="toolUse without id or name")
            calls.append(tool_call(tool["toolUseId"], tool["name"], tool.get("input")))
        elif isinstance(block.get("reasoningContent"), dict):
            text = (block["reasoningContent"].get("reasoningText") or {}).get("text")
            if isinstance(text, str):
                reasoning.append(text)
    return assistant_message(texts, reasoning, calls)


def _error_type(headers: dict[str, str], body: bytes) -> str | None:
    """x-amzn-ErrorType ("ThrottlingException:http://internal..."), else the body's __type or code."""
    raw = headers.get("x-amzn-errortype")
    if not raw:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict):
            return None
        raw = data.get("__type") or data.get("code")
        if not isinstance(raw, str):
            return None
    name = raw.split(":", 1)[0].rsplit("#", 1)[-1]
    return bedrock_stream.safe_name(name)


def _split(raw: Any) -> list[str]:
    return [part.strip() for part in str(raw or "").split(",") if part.strip()]
