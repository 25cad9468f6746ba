"""Keyway: the application factory."""
from __future__ import annotations

import logging
import os

from dotenv import load_dotenv
from flask import Flask

from app import db
from app.config import Config, from_environment


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

    logging.basicConfig(level=app.config["LOG_LEVEL"], format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Alembic announces its plugins at INFO on import; migrations speak up only when something is wrong.
    logging.getLogger("alembic").setLevel(logging.WARNING)
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
