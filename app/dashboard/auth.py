"""Sign in and out, with a per-account throttle kept in the database so every worker shares it."""
from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app import db
from app.dashboard.forms import EMAIL, MAX_EMAIL
from app.models import LoginThrottle, User
from app.security import hash_password, verify_password
from app.types import utcnow

bp = Blueprint("auth", __name__)

FREE_FAILURES = 5  # failures before the account is locked at all
FIRST_LOCK = timedelta(seconds=30)  # doubled for every further failure...
MAX_LOCK = timedelta(minutes=15)  # ...up to this
FAILED = "Incorrect email or password, or too many attempts. Please try again later."
# Checked for unknown emails too, so a response time does not tell which accounts exist.
_DUMMY_HASH = hash_password("not-a-real-password-just-equal-timing")


def lock_for(failures: int) -> timedelta | None:
    if failures < FREE_FAILURES:
        return None
    return min(MAX_LOCK, FIRST_LOCK * (2 ** (failures - FREE_FAILURES)))


def is_locked(session: Session, email: str, now: datetime) -> bool:
    until = session.scalar(select(LoginThrottle.locked_until).where(LoginThrottle.email == email))
    return until is not None and until > now


def record_failure(session: Session, email: str, now: datetime) -> int:
    """Count one failure atomically (an upsert, then an increment), and lock the account if due."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(insert(LoginThrottle).values(email=email, failures=0, updated_at=now)
                    .on_conflict_do_nothing(index_elements=["email"]))
    failures = session.execute(
        update(LoginThrottle).where(LoginThrottle.email == email)
        .values(failures=LoginThrottle.failures + 1, updated_at=now).returning(LoginThrottle.failures)
    ).scalar_one()
    duration = lock_for(failures)
    if duration is not None:
        session.execute(update(LoginThrottle).where(LoginThrottle.email == email)
                        .values(locked_until=now + duration))
    return failures


def clear_failures(session: Session, email: str) -> None:
    session.execute(update(LoginThrottle).where(LoginThrottle.email == email)
                    .values(failures=0, locked_until=None, updated_at=utcnow()))


def authenticate(email: str, password: str) -> User | None:
    """The active user these credentials open, or None; every outcome is committed to the throttle."""
    now = utcnow()
    with db.session_scope() as s:
        locked = is_locked(s, email, now)
        user = s.scalar(select(User).where(User.email == email))
        valid = verify_password(user.password_hash if user else _DUMMY_HASH, password)
        if locked or user is None or not valid or not user.is_active:
            if not locked:
                record_failure(s, email, now)
            return None
        clear_failures(s, email)
        return user


def _safe_next(target: str | None) -> str:
    """Only a local path: an open redirect after login is a phishing aid."""
    if not target:
        return url_for("overview.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("overview.index")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated and request.method == "GET":
        return redirect(url_for("overview.index"))
    error = None
    email = ""
    if request.method == "POST":
        email = (request.form.get("email") or "").strip().lower()
        password = request.form.get("password") or ""
        # Not an email: the same answer as a wrong password, without a query or a throttle row for it.
        plausible = len(email) <= MAX_EMAIL and EMAIL.fullmatch(email) and password
        user = authenticate(email, password) if plausible else None
        email = email[:MAX_EMAIL]
        if user is None:
            error = FAILED
        else:
            target = _safe_next(request.args.get("next"))
            # Rotate: nothing from the anonymous session (incl. its CSRF token) survives sign-in.
            session.clear()
            login_user(db.session.get(User, user.id))
            session.permanent = True
            return redirect(target)
    status = 401 if error else 200
    return render_template("auth/login.html", error=error, email=email), status


@bp.post("/logout")
def logout():
    logout_user()
    session.clear()
    flash("You have signed out.", "info")
    return redirect(url_for("auth.login"))
