"""`manage.py demo`: migrate, seed a living demo once, then serve it (app/demo_server.py; docs/demo.md says why so)."""
from __future__ import annotations

import logging
import os
import random
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import click
from sqlalchemy import func, insert, select, text, update

from app import db
from app.demo_traffic import INCIDENTS, PROFILES, Generator, day_counts
from app.models import (ApiKey, CreditAccount, CreditEntry, Organization, Price, UsageAttempt, UsageRecord,
                        User)

PASSWORD = "keyway-demo"
ROLES = ("admin", "finance", "developer")
CONSOLE_KEY = "demo console"
BATCH = 5000
SEED = 20261127


@dataclass
class DemoOrg:
    slug: str
    name: str
    key: str = ""


def register(cli: click.Group) -> None:
    cli.add_command(demo_command)


@click.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, type=click.IntRange(1, 65535), show_default=True)
@click.option("--workers", default=2, type=click.IntRange(1, 64), show_default=True)
@click.option("--reset", is_flag=True, help="Delete the demo data and seed again from scratch.")
@click.option("--no-serve", is_flag=True, help="Seed (if needed) and print the logins, but do not serve.")
@click.option("--records", default=100_000, type=click.IntRange(100, 5_000_000), show_default=True,
              help="Usage records to generate.")
@click.option("--days", default=90, type=click.IntRange(7, 400), show_default=True, help="Days of history.")
def demo_command(host: str, port: int, workers: int, reset: bool, no_serve: bool, records: int, days: int) -> None:
    """The embedded default: migrate, seed demo data once, then serve with simulated providers."""
    from flask import current_app

    url = current_app.config["DATABASE_URL"]
    logging.disable(logging.INFO)  # alembic logs its plugins and steps at INFO, whatever app/migrate.py asks
    try:
        if reset:
            reset_database(url)
        prepare_database(url)
    finally:
        logging.disable(logging.NOTSET)
    with db.session_scope() as session:
        seeded = demo_state(session)
    if seeded:
        click.echo("demo data already seeded (pass --reset to start over)")
    else:
        click.echo(f"seeding {records:,} usage records over {days} days ...")
        summary = seed(records=records, days=days)
        click.echo(summary)
    orgs = issue_console_keys()
    if no_serve:
        click.echo(banner(orgs, None))
        return
    from app.demo_server import serve

    serve(host, port, workers, url, journal_dir(url), lambda base, providers: banner(orgs, base, providers))


# -- the database ----------------------------------------------------------------------------
def prepare_database(url: str) -> None:
    """Apply migrations and load the shipped price catalog, as `db upgrade` does."""
    from app.billing.pricing import import_catalog, load_catalog
    from app.migrate import upgrade

    upgrade(url)
    with db.session_scope() as session:
        if session.scalar(select(Price.id).limit(1)) is None:
            import_catalog(session, load_catalog())


def demo_state(session) -> bool:
    """True when the demo is seeded; refuses a database that holds anyone else's organizations."""
    slugs = set(session.scalars(select(Organization.slug)))
    demo = {p.slug for p in PROFILES}
    if slugs - demo:
        raise click.ClickException(
            f"the database at DATABASE_URL already holds {len(slugs - demo)} other organization(s); the demo "
            "seeds only its own database (unset DATABASE_URL to use instance/keyway.db)")
    return bool(slugs) and session.scalar(select(func.count()).select_from(UsageRecord)) > 0


def reset_database(url: str) -> None:
    """Start from nothing: delete the SQLite file, or empty a PostgreSQL database that holds only the demo."""
    if url.startswith("sqlite:///"):
        db.get_engine().dispose()
        path = url[len("sqlite:///"):]
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
        journal = journal_dir(url)
        if journal and os.path.isdir(journal):
            shutil.rmtree(journal)  # unreplayed usage of the deleted database must not land in the new one
        db.init_engine(url)
        click.echo(f"removed {path}")
        return
    prepare_database(url)
    with db.session_scope() as session:
        demo_state(session)  # raises if it holds anything but demo organizations
        tables = ", ".join(f'"{t.name}"' for t in db.Base.metadata.sorted_tables)
        # TRUNCATE, not DELETE: the rows of finalized invoices refuse DELETE by design (migration 0002).
        session.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    click.echo("emptied the demo database")


def journal_dir(url: str) -> str | None:
    """The usage journal of a SQLite demo lives beside its database (instance/journal by default)."""
    if os.environ.get("METERING_JOURNAL_DIR") or not url.startswith("sqlite:///"):
        return None
    return os.path.join(os.path.dirname(url[len("sqlite:///"):]), "journal")


# -- seeding ---------------------------------------------------------------------------------
def seed(records: int = 100_000, days: int = 90, now: datetime | None = None, progress: bool = True) -> str:
    """Organizations, users, keys, credits, `records` usage records and closed invoices, in one transaction."""
    from tqdm import tqdm

    from app.billing.pricing import price_book

    tqdm.monitor_interval = 0  # no monitor thread: the demo forks the server right after
    now = now or datetime.now(timezone.utc)
    start = datetime.combine((now - timedelta(days=days - 1)).date(), datetime.min.time(), timezone.utc)
    rng = random.Random(SEED)
    book = price_book()
    book.invalidate()
    with db.session_scope() as session:
        org_ids, key_ids = create_accounts(session, start)
        first_id = (session.scalar(select(func.max(UsageRecord.id))) or 0) + 1
        markup = dict(session.execute(select(Organization.id, Organization.shared_markup_percent)).all())
        gen = Generator(rng, book, org_ids, key_ids, PROFILES, INCIDENTS, markup)
        plan = day_counts(PROFILES, records, days, now, rng)
        with tqdm(total=records, desc="generating", unit=" req", disable=not progress, leave=False) as bar:
            for made in gen.run(plan, now, first_id):
                bar.update(made)
        traffic = gen.traffic
        with tqdm(total=len(traffic.records), desc="writing", unit=" req", disable=not progress, leave=False) as bar:
            done = 0  # attempts are in record order: each batch of records takes the next run of them
            for i in range(0, len(traffic.records), BATCH):
                batch = traffic.records[i:i + BATCH]
                session.execute(insert(UsageRecord), batch)
                end = done
                while end < len(traffic.attempts) and traffic.attempts[end]["record_id"] <= batch[-1]["id"]:
                    end += 1
                session.execute(insert(UsageAttempt), traffic.attempts[done:end])
                done = end
                bar.update(len(batch))
        write_ledger(session, traffic)
        for key_id, at in traffic.key_last_used.items():
            session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=at))
        fix_sequences(session)
        rebuild_rollups(session, list(org_ids.values()), start.date(), now.date())
        closed = close_past_periods(session, list(org_ids.values()), now)
    return (f"seeded {len(traffic.records):,} usage records, {len(traffic.attempts):,} attempts and "
            f"{len(traffic.ledger):,} ledger entries for {len(org_ids)} organizations; {closed}")


def create_accounts(session, start: datetime) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """The demo organizations with a user of each role and the gateway keys their traffic uses."""
    from app.billing.ledger import ensure_account
    from app.cli import create_key
    from app.security import hash_password

    password_hash = hash_password(PASSWORD)
    org_ids, key_ids = {}, {}
    for profile in PROFILES:
        org = Organization(slug=profile.slug, name=profile.name, fallback_policy={}, created_at=start)
        session.add(org)
        session.flush()
        ensure_account(session, org.id)
        users = {}
        for role in ROLES:
            user = User(org_id=org.id, email=f"{role}@{profile.slug}.example", role=role,
                        password_hash=password_hash, created_at=start)
            session.add(user)
            users[role] = user
        session.flush()
        for name in profile.keys:
            owner = users["developer"].id if name == "dev-laptop" else None
            row, _ = create_key(session, org.id, name, "inference", owner)  # the plaintext is never shown
            row.created_at = start
            key_ids[(profile.slug, name)] = row.id
        org_ids[profile.slug] = org.id
    return org_ids, key_ids


def write_ledger(session, traffic) -> None:
    for i in range(0, len(traffic.ledger), BATCH):
        session.execute(insert(CreditEntry), traffic.ledger[i:i + BATCH])
    for org_id, balance in traffic.balances.items():
        session.execute(update(CreditAccount).where(CreditAccount.org_id == org_id)
                        .values(balance=balance, reserved=Decimal(0)))


def fix_sequences(session) -> None:
    """Records were inserted with explicit ids; PostgreSQL's sequence must move past them."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT setval(pg_get_serial_sequence('usage_records', 'id'), "
                             "(SELECT COALESCE(MAX(id), 1) FROM usage_records))"))


def rebuild_rollups(session, org_ids: list[int], first, last) -> None:
    from app.billing.rollups import rebuild_day

    day = first
    while day <= last:
        rebuild_day(session, day, org_ids)
        day += timedelta(days=1)


def close_past_periods(session, org_ids: list[int], now: datetime) -> str:
    """Finalize every past month's invoice (oldest first, so numbers run in order); this month stays a draft."""
    try:
        from app.billing.invoicing import finalize
    except ImportError:
        return "invoices NOT finalized: app.billing.invoicing is not available"
    current = f"{now:%Y-%m}"
    periods = sorted(set(session.scalars(select(UsageRecord.billing_period).distinct())) - {current})
    numbers = []
    for period in periods:
        for org_id in org_ids:
            numbers.append(finalize(session, org_id, period, now=now).number)
    return f"{len(numbers)} past invoices finalized ({', '.join(periods)}), {current} open as a draft"


def issue_console_keys() -> list[DemoOrg]:
    """A fresh inference key per demo organization on every run (keys are shown once); the previous one is revoked."""
    from app.cli import create_key
    from app.types import utcnow

    orgs = []
    with db.session_scope() as session:
        for profile in PROFILES:
            org = session.scalar(select(Organization).where(Organization.slug == profile.slug))
            session.execute(update(ApiKey).where(ApiKey.org_id == org.id, ApiKey.name == CONSOLE_KEY,
                                                 ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow()))
            _, key = create_key(session, org.id, CONSOLE_KEY, "inference")
            orgs.append(DemoOrg(org.slug, org.name, key))
    return orgs


# -- what the newcomer reads -------------------------------------------------------------------
def banner(orgs: list[DemoOrg], base: str | None, providers: list[str] = ()) -> str:
    lines = [""]
    if base:
        lines += [f"Keyway demo is running at {base}   (Ctrl-C stops it)", ""]
    if providers:
        lines += [f"Simulated providers on loopback: {', '.join(providers)}", ""]
    lines.append(f"Dashboard logins (password for all: {PASSWORD}):")
    for org in orgs:
        for role in ROLES:
            lines.append(f"  {role}@{org.slug}.example".ljust(30) + f"{role:<10} {org.name}")
    lines += ["", "Gateway keys (new on every run, shown once):"]
    lines += [f"  {org.slug:<8} {org.key}" for org in orgs]
    base = base or "http://127.0.0.1:8000"
    key = orgs[0].key
    lines += [
        "", "Try it (simulated providers answer on loopback; nothing leaves this machine):",
        f"  curl -s {base}/v1/chat/completions \\",
        f"    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\",
        "    -d '{\"model\": \"openai/gpt-4o-mini\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}'",
        "", "  # your own (simulated) provider key; the key sk-demo-rate-limited always gets a 429 and falls back",
        f"  curl -s -i {base}/v1/chat/completions \\",
        f"    -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\",
        "    -d '{\"model\": \"gpt-4o-mini\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}], "
        "\"byok_conf\": {\"provider\": \"openai\", \"credentials\": {\"api_key\": \"sk-demo-rate-limited\"}}}'",
        "",
    ]
    return "\n".join(lines)
