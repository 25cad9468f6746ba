"""The server-rendered dashboard: one blueprint per audience, sessions, CSRF and security headers."""
from __future__ import annotations

from flask import Flask, request
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

from app import db
from app.dashboard import formatting

csrf = CSRFProtect()
login_manager = LoginManager()

# No inline script or style anywhere: charts are server-side SVG styled by classes.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# Blueprints whose pages show money or secrets: never kept by a browser or proxy cache.
NO_STORE_BLUEPRINTS = {"overview", "usage", "logs", "invoices", "credits", "admin", "users", "prices", "keys"}


def register(app: Flask) -> None:
    from app.api import bp as api_bp
    from app.dashboard import admin, auth, credits, invoices, keys, logs, prices, usage, users
    from app.gateway.routes import bp as gateway_bp

    # flask-login's remember-me cookie follows the session cookie's settings.
    app.config.setdefault("REMEMBER_COOKIE_SECURE", app.config["SESSION_COOKIE_SECURE"])
    app.config.setdefault("REMEMBER_COOKIE_HTTPONLY", True)
    app.config.setdefault("REMEMBER_COOKIE_SAMESITE", app.config["SESSION_COOKIE_SAMESITE"])
    csrf.init_app(app)
    # Bearer-token JSON APIs: a browser's cookies never authenticate them, so CSRF cannot apply.
    csrf.exempt(gateway_bp)
    csrf.exempt(api_bp)

    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to continue."
    login_manager.session_protection = "strong"
    login_manager.user_loader(_load_user)

    for module in (auth, usage, logs, invoices, credits, keys, admin, users, prices):
        app.register_blueprint(module.bp)
    app.register_blueprint(usage.overview_bp)
    formatting.register(app)
    app.after_request(_security_headers)


def _load_user(user_id: str):
    from app.models import User

    if not user_id.isdigit():
        return None
    user = db.session.get(User, int(user_id))
    # A deactivated user's existing session ends on its next request.
    if user is None or not user.is_active:
        return None
    return user


def _security_headers(response):
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.path.startswith(("/v1/", "/api/")):
        return response
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    if request.blueprint in NO_STORE_BLUEPRINTS or request.blueprint == "auth":
        headers["Cache-Control"] = "no-store"
        headers["Pragma"] = "no-cache"
    return response
