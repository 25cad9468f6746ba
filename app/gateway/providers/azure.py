"""Azure OpenAI: the OpenAI wire format behind a per-resource deployment URL and an `api-key` header."""
from __future__ import annotations

from fnmatch import fnmatch
from typing import Any
from urllib.parse import quote, urlsplit

from app.gateway.errors import InvalidRequest
from app.gateway.providers.base import Credentials
from app.gateway.providers.openai_compat import OpenAICompatible

DEFAULT_API_VERSION = "2024-10-21"


class Azure(OpenAICompatible):
    required_credentials = ("api_key", "endpoint", "api_version")
    optional_credentials = ("deployment",)

    def __init__(self) -> None:
        super().__init__("azure", "", ("deployment",))

    def check_credentials(self, creds: Credentials, config: dict[str, Any]) -> None:
        endpoint = str(creds["endpoint"])
        parts = urlsplit(endpoint if "://" in endpoint else "https://" + endpoint)
        host = (parts.hostname or "").lower()
        if parts.scheme != "https" or not host:
            raise InvalidRequest("byok_conf.credentials.endpoint must be an https URL", param="byok_conf.credentials.endpoint")
        allowed = [p.strip().lower() for p in config.get("GATEWAY_AZURE_ALLOWED_HOSTS", "").split(",") if p.strip()]
        if not any(fnmatch(host, pattern) for pattern in allowed):
            raise InvalidRequest(
                f"byok_conf.credentials.endpoint host '{host}' is not an allowed Azure OpenAI host",
                param="byok_conf.credentials.endpoint",
            )
        if not isinstance(creds["api_version"], str):
            raise InvalidRequest("byok_conf.credentials.api_version must be a string", param="byok_conf.credentials.api_version")

    def shared_credentials(self, config: dict[str, Any]) -> list[Credentials]:
        endpoint = config.get("GATEWAY_AZURE_SHARED_ENDPOINT", "")
        if not endpoint:
            return []
        version = config.get("GATEWAY_AZURE_SHARED_API_VERSION", DEFAULT_API_VERSION)
        return [Credentials({"api_key": c["api_key"], "endpoint": endpoint, "api_version": version})
                for c in super().shared_credentials(config)]

    def request_headers(self, creds: Credentials) -> dict[str, str]:
        return {"api-key": str(creds["api_key"]), "Content-Type": "application/json"}

    def request_url(self, model: str, creds: Credentials, base_url: str | None) -> str:
        endpoint = str(creds["endpoint"])
        origin = base_url or (endpoint if "://" in endpoint else "https://" + endpoint)
        deployment = quote(str(creds.get("deployment") or model), safe="")
        version = quote(str(creds["api_version"]), safe="")
        return f"{origin.rstrip('/')}/openai/deployments/{deployment}/chat/completions?api-version={version}"

    def request_body(self, req, model):
        body = super().request_body(req, model)
        body.pop("model", None)  # the deployment in the URL chooses the model
        return body

