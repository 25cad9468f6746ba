"""Azure OpenAI: the OpenAI wire format behind a per-resource deployment URL and an `api-key` header.

The caller names the host (`endpoint`), so every URL field is checked by a strict
rule and the URL is rebuilt from the parts that passed (app/gateway/outbound.py):
the endpoint is `https://<one label>.<allowed suffix>[:allowed port][/]`, the
deployment and the API version match Azure's own naming. A BYOK endpoint is
resolved and connected to by address (`host_field`); the operator's shared
endpoint (GATEWAY_AZURE_SHARED_ENDPOINT) and GATEWAY_AZURE_BASE_URL are trusted.
"""
from __future__ import annotations

import re
from typing import Any

from app.config import Config
from app.gateway import outbound
from app.gateway.errors import ConfigurationError, InvalidRequest
from app.gateway.providers.base import Credentials
from app.gateway.providers.openai_compat import OpenAICompatible
from app.validation import TextRejected

DEFAULT_API_VERSION = "2024-10-21"
# Azure's deployment names: letters, digits, '.', '_' and '-', at most 64, starting with a letter or digit
# (so never a dot segment).
_DEPLOYMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_API_VERSION = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:-preview)?|preview|latest")
_WHERE = "byok_conf.credentials"


class Azure(OpenAICompatible):
    required_credentials = ("api_key", "endpoint", "api_version")
    optional_credentials = ("deployment",)

    def __init__(self) -> None:
        super().__init__("azure", "", ("deployment",), header_credentials=("api_key",))
        self.rules = outbound.host_rules({"GATEWAY_AZURE_ALLOWED_HOSTS": Config.GATEWAY_AZURE_ALLOWED_HOSTS})

    def configure(self, config: dict[str, Any]) -> None:
        self.rules = outbound.host_rules(config)
        super().configure(config)

    def check_credentials(self, creds: Credentials, config: dict[str, Any]) -> None:
        try:
            outbound.parse_origin(creds["endpoint"], self.rules)
        except TextRejected as exc:
            raise InvalidRequest(f"'{_WHERE}.endpoint' {exc.reason}", param=f"{_WHERE}.endpoint") from None
        _check_name(creds["api_version"], _API_VERSION, "api_version",
                    "an Azure OpenAI API version such as 2024-10-21 or 2025-04-01-preview")
        if creds.get("deployment") is not None:
            _check_name(creds["deployment"], _DEPLOYMENT, "deployment",
                        "an Azure deployment name (letters, digits, '.', '_' and '-', starting with a "
                        "letter or digit, at most 64)")

    def shared_credentials(self, config: dict[str, Any]) -> list[Credentials]:
        endpoint = config.get("GATEWAY_AZURE_SHARED_ENDPOINT", "")
        if not endpoint:
            return []
        version = config.get("GATEWAY_AZURE_SHARED_API_VERSION", DEFAULT_API_VERSION)
        try:
            outbound.parse_origin(endpoint, outbound.ANY_HOST)
        except TextRejected as exc:
            raise ConfigurationError(f"GATEWAY_AZURE_SHARED_ENDPOINT {exc.reason}") from None
        if not isinstance(version, str) or not _API_VERSION.fullmatch(version):
            raise ConfigurationError("GATEWAY_AZURE_SHARED_API_VERSION is not an Azure OpenAI API version")
        return [Credentials({"api_key": c["api_key"], "endpoint": endpoint, "api_version": version})
                for c in super().shared_credentials(config)]

    def request_headers(self, creds: Credentials) -> dict[str, str]:
        return {"api-key": str(creds["api_key"]), "Content-Type": "application/json"}

    def request_url(self, model: str, creds: Credentials, base_url: str | None) -> str:
        origin = base_url or outbound.parse_origin(creds["endpoint"], outbound.ANY_HOST if creds.trusted
                                                   else self.rules).url()
        deployment = creds.get("deployment") or model
        if not _DEPLOYMENT.fullmatch(deployment):
            raise InvalidRequest("'model' cannot name an Azure deployment (letters, digits, '.', '_' and '-', at "
                                 "most 64); set byok_conf.credentials.deployment", param="model")
        version = creds["api_version"]
        if not _API_VERSION.fullmatch(version):  # checked at the edge; never built into a URL unchecked
            raise InvalidRequest(f"'{_WHERE}.api_version' is not an Azure OpenAI API version",
                                 param=f"{_WHERE}.api_version")
        return f"{origin.rstrip('/')}/openai/deployments/{deployment}/chat/completions?api-version={version}"

    def build_request(self, req, model, creds, base_url):
        upstream = super().build_request(req, model, creds, base_url)
        if base_url is None and not creds.trusted:
            upstream.host_field = "endpoint"
        return upstream

    def request_body(self, req, model):
        body = super().request_body(req, model)
        body.pop("model", None)  # the deployment in the URL chooses the model
        return body


def _check_name(value: Any, pattern: re.Pattern[str], name: str, what: str) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidRequest(f"'{_WHERE}.{name}' must be {what}", param=f"{_WHERE}.{name}")
