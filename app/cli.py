"""manage.py commands. Bad input ends in one line on stderr and a non-zero exit, never a traceback."""
from __future__ import annotations

import re
import sys
import unicodedata
from decimal import Decimal

import click
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from app import db
from app.models import ROLES, SCOPES, ApiKey, Organization, User


def _app():
    from flask import current_app

    return current_app


def register(app) -> None:
    """Attach the command groups to `flask` too, so `flask --app app` works as well as manage.py."""
    _load_command_modules()
    for command in cli.commands.values():
        app.cli.add_command(command)


@click.group()
def cli() -> None:
    """Keyway management commands."""


def _load_command_modules() -> None:
    """Feature modules add their own command groups to `cli`."""
    from app import demo
    from app.audit import command as audit_command
    from app.billing import commands as billing_commands

    audit_command.register(cli)
    billing_commands.register(cli)
    demo.register(cli)


def run() -> None:
    _load_command_modules()
    if sys.argv[1:2] == ["serve"]:
        # The server loads the app inside each worker, after gevent has patched the stdlib.
        cli.main(prog_name="manage.py")
        return
    from app import create_app

    try:
        app = create_app()
    except Exception as exc:  # e.g. an unreachable DATABASE_URL
        click.echo(f"error: could not start: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", err=True)
        sys.exit(1)
    with app.app_context():
        try:
            cli.main(standalone_mode=False, prog_name="manage.py")
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code or 1)
        except SQLAlchemyError as exc:
            click.echo(f"error: database: {str(exc.orig if hasattr(exc, 'orig') else exc).splitlines()[0][:200]}", err=True)
            sys.exit(1)


# -- db -----------------------------------------------------------------------
@cli.group("db")
def db_group() -> None:
    """Schema migrations."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations, then load the shipped price catalog into an empty price table."""
    from app.billing.pricing import import_catalog, load_catalog
    from app.migrate import upgrade
    from app.models import Price

    upgrade(_app().config["DATABASE_URL"], revision)
    with db.session_scope() as session:
        if session.scalar(select(Price.id).limit(1)) is None:
            added = import_catalog(session, load_catalog())
            click.echo(f"price catalog loaded: {added} models")
    click.echo("database is at the latest revision")


# -- orgs ---------------------------------------------------------------------
@cli.group("orgs")
def orgs_group() -> None:
    """Organizations."""


def slugify(name: str) -> str:
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "org"


def create_org(session, name: str) -> Organization:
    from app.billing.ledger import ensure_account

    base = slugify(name)
    slug, n = base, 1
    while session.scalar(select(Organization.id).where(Organization.slug == slug)) is not None:
        n += 1
        slug = f"{base}-{n}"
    org = Organization(slug=slug, name=name.strip(), fallback_policy={})
    session.add(org)
    session.flush()
    ensure_account(session, org.id)
    return org


@orgs_group.command("create")
@click.argument("name")
def orgs_create(name: str) -> None:
    """Create an organization; prints its slug as the last line."""
    if not name.strip():
        raise click.ClickException("organization name must not be empty")
    with db.session_scope() as session:
        org = create_org(session, name)
        slug = org.slug
    click.echo(slug)


def org_by_slug(session, slug: str) -> Organization:
    org = session.scalar(select(Organization).where(Organization.slug == slug))
    if org is None:
        raise click.ClickException(f"no organization with slug '{slug}'")
    return org


# -- users --------------------------------------------------------------------
@cli.group("users")
def users_group() -> None:
    """Dashboard users."""


@users_group.command("create")
@click.option("--org", "org_slug", required=True)
@click.option("--email", required=True)
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--password", required=True)
def users_create(org_slug: str, email: str, role: str, password: str) -> None:
    """Create a dashboard user in an organization."""
    from app.security import hash_password

    email = email.strip().lower()
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        raise click.ClickException(f"'{email}' is not an email address")
    if len(password) < 8:
        raise click.ClickException("password must be at least 8 characters")
    with db.session_scope() as session:
        org = org_by_slug(session, org_slug)
        if session.scalar(select(User.id).where(User.email == email)) is not None:
            raise click.ClickException(f"a user with email '{email}' already exists")
        session.add(User(org_id=org.id, email=email, role=role, password_hash=hash_password(password)))
    click.echo(f"created {role} {email} in {org_slug}")


# -- keys ---------------------------------------------------------------------
@cli.group("keys")
def keys_group() -> None:
    """Gateway API keys."""


def create_key(session, org_id: int, name: str = "", scope: str = "inference", user_id: int | None = None) -> tuple[ApiKey, str]:
    from app.security import hash_gateway_key, new_gateway_key, visible_prefix

    key = new_gateway_key()
    row = ApiKey(org_id=org_id, user_id=user_id, name=name, scope=scope, prefix=visible_prefix(key),
                 key_hash=hash_gateway_key(key))
    session.add(row)
    session.flush()
    return row, key


@keys_group.command("create")
@click.option("--org", "org_slug", required=True)
@click.option("--name", default="")
@click.option("--scope", default="inference", type=click.Choice(SCOPES), show_default=True)
def keys_create(org_slug: str, name: str, scope: str) -> None:
    """Issue a gateway key; prints it once, as the last line."""
    with db.session_scope() as session:
        org = org_by_slug(session, org_slug)
        _, key = create_key(session, org.id, name, scope)
    click.echo(f"{scope} key for {org_slug} (shown once, stored only as a hash):")
    click.echo(key)


# -- credits ------------------------------------------------------------------
@cli.group("credits")
def credits_group() -> None:
    """Prepaid credits."""


@credits_group.command("grant")
@click.option("--org", "org_slug", required=True)
@click.option("--amount", required=True)
@click.option("--note", default="")
def credits_grant(org_slug: str, amount: str, note: str) -> None:
    """Grant credits (USD) to an organization."""
    from app.billing import ledger
    from app.billing.money import parse_amount

    try:
        value: Decimal = parse_amount(amount)
    except ValueError as exc:
        raise click.ClickException(f"--amount: {exc}") from None
    with db.session_scope() as session:
        org = org_by_slug(session, org_slug)
        entry = ledger.grant(session, org.id, value, note=note)
        balance = entry.balance_after
    click.echo(f"granted ${value} to {org_slug}; balance ${balance.quantize(Decimal('0.01'))}")


@credits_group.command("release-stale")
@click.option("--older-than-minutes", default=60, type=click.IntRange(min=5), show_default=True)
def credits_release_stale(older_than_minutes: int) -> None:
    """Give back credit reservations of requests that were never recorded (a worker died mid-request)."""
    from datetime import timedelta

    from app.billing import ledger

    with db.session_scope() as session:
        released = ledger.release_stale(session, timedelta(minutes=older_than_minutes))
    click.echo(f"released {released} stale reservations")


# -- serve --------------------------------------------------------------------
@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, type=int, show_default=True)
@click.option("--workers", default=None, type=int, help="default: one per CPU core")
def serve(host: str, port: int, workers: int | None) -> None:
    """The production server: gunicorn with gevent workers."""
    from app.server import run_gunicorn

    run_gunicorn(host, port, workers)
