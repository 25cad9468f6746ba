"""Keyway: the application factory."""
from __future__ import annotations

import os

from dotenv import load_dotenv
from flask import Flask, Response, g, request

from app import db, logs
from app.config import Config, from_environment
from app.security import new_request_id

# What a /v1 answer says about how it was served when it never reached a provider (a bad gateway key,
# an unknown route): no provider, no credential, no fallback, no attempt.
NOT_SERVED = {"X-Gateway-Provider": "", "X-Gateway-Credential": "none", "X-Gateway-Fallback": "0",
              "X-Gateway-Attempts": "0"}


def create_app(config: dict | None = None) -> Flask:
    """Build the app: config (defaults < .env/environment < `config`), database, blueprints, errors, CLI."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    app = Flask(
        __name__,
        instance_path=(config or {}).get("INSTANCE_PATH") or os.path.join(root, "instance"),
        template_folder=os.path.join(root, "templates"),
        static_folder=os.path.join(root, "static"),
    )
    app.config.from_object(Config)
    if config is None or not config.get("TESTING"):
        load_dotenv(os.path.join(root, ".env"), override=False)
        app.config.update(from_environment())
    if config:
        app.config.update(config)
    app.config["DATABASE_URL"] = db.normalize_url(app.config["DATABASE_URL"], app.instance_path)
    os.makedirs(app.instance_path, exist_ok=True)

    logs.configure(app.config["LOG_LEVEL"])
    db.init_engine(app.config["DATABASE_URL"])

    @app.teardown_appcontext
    def _remove_session(_exc):
        db.session.remove()

    from app.gateway import http as upstream_http

    upstream_http.configure(app.config)
    from app.gateway.providers import REGISTRY

    for provider in REGISTRY.values():
        provider.configure(app.config)

    from app import edge, errors

    errors.register(app)
    _stamp_every_answer(app)
    edge.register(app)  # before CSRF and every view: they read only what it let through

    from app.gateway.routes import bp as gateway_bp

    app.register_blueprint(gateway_bp)

    from app.health import bp as health_bp

    app.register_blueprint(health_bp)

    from app.api import bp as api_bp

    app.register_blueprint(api_bp)

    from app.dashboard import register as register_dashboard

    register_dashboard(app)

    from app.billing import metering

    metering.configure(app)

    from app import cli

    cli.register(app)
    return app


def _stamp_every_answer(app: Flask) -> None:
    """A request id before routing, so that every answer carries it; /v1 answers also say how they were served."""

    @app.before_request
    def _request_id() -> None:
        g.request_id = new_request_id()

    @app.after_request
    def _headers(response: Response) -> Response:
        request_id = getattr(g, "request_id", None)
        if request_id:
            response.headers.setdefault("X-Request-Id", request_id)
        if request.path == "/v1" or request.path.startswith("/v1/"):
            for name, value in NOT_SERVED.items():
                response.headers.setdefault(name, value)
        return response
