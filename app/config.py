"""Configuration: one class of defaults, overridden from the environment in create_app."""
import os
from decimal import Decimal


class Config:
    SECRET_KEY = "dev-insecure-change-me"
    DATABASE_URL = "sqlite:///instance/keyway.db"
    # Requests larger than this are answered 413 before they are parsed.
    MAX_CONTENT_LENGTH = 10 * 1024 * 1024
    SESSION_COOKIE_SECURE = True
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    WTF_CSRF_ENABLED = True
    LOG_LEVEL = "INFO"

    # Upstream HTTP
    UPSTREAM_CONNECT_TIMEOUT = 5.0
    UPSTREAM_READ_TIMEOUT = 60.0
    # Overall per-attempt deadline that a slowly dripping upstream cannot escape.
    UPSTREAM_ATTEMPT_DEADLINE = 120.0
    UPSTREAM_POOL_SIZE = 64
    GATEWAY_AZURE_ALLOWED_HOSTS = "*.openai.azure.com,*.cognitiveservices.azure.com"
    # Ports a BYOK Azure endpoint may name (comma-separated).
    GATEWAY_AZURE_ALLOWED_PORTS = "443"
    # Let caller-named hosts resolve to private or loopback addresses (a private Azure deployment on the LAN).
    GATEWAY_ALLOW_PRIVATE_UPSTREAMS = False
    # A PEM file of CA certificates trusted for upstream TLS instead of the system's (TLS-inspecting proxies).
    UPSTREAM_CA_BUNDLE = ""

    # Worst-case reservation when a request names no max_tokens.
    DEFAULT_MAX_TOKENS_RESERVE = 4096
    # Shared-pool fallback default when neither request nor organization says.
    PLATFORM_FALLBACK_DEFAULT = True
    # Seconds an organization's fallback policy may be cached per worker.
    POLICY_CACHE_SECONDS = 2.0

    # Slugs of the organizations whose admins may add price versions (the catalog is shared); empty: every admin.
    PRICE_ADMIN_ORGS = ""
    SIMULATED_PROVIDERS = False
    METERING_MODE = "sync"  # sync | journal
    METERING_JOURNAL_DIR = "instance/journal"
    # fsync the journal before a response is sent: survives power loss, costs a disk flush per request.
    METERING_JOURNAL_FSYNC = False
    LOW_CREDIT_THRESHOLD = Decimal("5.00")

    # GATEWAY_<PROVIDER>_BASE_URL and GATEWAY_<PROVIDER>_SHARED_API_KEY are
    # read dynamically from the environment by app.gateway.http.


_BOOL = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def from_environment(environ=None) -> dict:
    """Every Config attribute may be overridden by an env var of the same name."""
    environ = os.environ if environ is None else environ
    values = {}
    for name in dir(Config):
        if not name.isupper():
            continue
        default = getattr(Config, name)
        raw = environ.get(name)
        if raw is None:
            continue
        if isinstance(default, bool):
            values[name] = _BOOL.get(raw.strip().lower(), default)
        elif isinstance(default, int):
            values[name] = int(raw)
        elif isinstance(default, float):
            values[name] = float(raw)
        elif isinstance(default, Decimal):
            values[name] = Decimal(raw)
        else:
            values[name] = raw
    # GATEWAY_* keys are kept so providers can look them up through app.config.
    for key, raw in environ.items():
        if key.startswith("GATEWAY_"):
            values[key] = raw
    return values
