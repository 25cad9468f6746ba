"""The provider registry: one module per provider, one line here."""
from __future__ import annotations

from app.gateway.providers.anthropic import Anthropic
from app.gateway.providers.azure import Azure
from app.gateway.providers.base import Provider
from app.gateway.providers.bedrock import Bedrock
from app.gateway.providers.gemini import Gemini
from app.gateway.providers.openai_compat import OpenAICompatible
from app.gateway.providers.vertex import Vertex

REGISTRY: dict[str, Provider] = {
    "openai": OpenAICompatible("openai", "https://api.openai.com/v1", ("organization", "project")),
    "azure": Azure(),
    "mistral": OpenAICompatible("mistral", "https://api.mistral.ai/v1"),
    "groq": OpenAICompatible("groq", "https://api.groq.com/openai/v1"),
    "deepseek": OpenAICompatible("deepseek", "https://api.deepseek.com/v1"),
    "xai": OpenAICompatible("xai", "https://api.x.ai/v1"),
    "together": OpenAICompatible("together", "https://api.together.xyz/v1"),
    "fireworks": OpenAICompatible("fireworks", "https://api.fireworks.ai/inference/v1"),
    "bedrock": Bedrock(),
    "anthropic": Anthropic(),
    "gemini": Gemini(),
    "vertex": Vertex(),
}


def get_provider(provider_id: str) -> Provider | None:
    return REGISTRY.get(provider_id)
