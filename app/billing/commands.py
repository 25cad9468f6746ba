"""manage.py commands for billing: prices, rollups, invoices, checks, the usage quarantine."""
from __future__ import annotations

import json
from datetime import date, datetime, timezone
from decimal import Decimal

import click
from sqlalchemy import select

from app import db
from app.models import Organization

_CENT = Decimal("0.01")


def register(cli: click.Group) -> None:
    for group in (prices_group, rollups_group, billing_group, invoices_group, usage_group):
        cli.add_command(group)


def _date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.ClickException(f"{option}: '{value[:40]}' is not a date; expected YYYY-MM-DD") from None


def _org_id(session, slug: str | None) -> int | None:
    if slug is None:
        return None
    from app.cli import org_by_slug

    return org_by_slug(session, slug).id


# -- prices ------------------------------------------------------------------------
@click.group("prices")
def prices_group() -> None:
    """The versioned price catalog."""


@prices_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--effective-from", "effective_from", default=None, help="YYYY-MM-DD (UTC midnight); default now")
def prices_import(file: str, effective_from: str | None) -> None:
    """Add a price version for every catalog entry whose price changed."""
    from app.billing.pricing import import_catalog, load_catalog

    day = _date(effective_from, "--effective-from")
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) if day else None
    try:
        data = load_catalog(file)
    except OSError as exc:
        raise click.ClickException(f"{file}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{file}: not valid JSON (line {exc.lineno})") from None
    except (ValueError, ArithmeticError) as exc:
        raise click.ClickException(str(exc).splitlines()[0][:200]) from None
    try:
        with db.session_scope() as session:
            added = import_catalog(session, data, effective_from=start)
    except (ValueError, ArithmeticError) as exc:
        raise click.ClickException(str(exc).splitlines()[0][:200]) from None
    click.echo(f"{added} price versions added")


@prices_group.command("list")
@click.option("--provider", default=None)
@click.option("--all", "show_all", is_flag=True, help="every version, not only those in force")
def prices_list(provider: str | None, show_all: bool) -> None:
    """Prices in USD per million tokens."""
    from app.models import Price

    with db.session_scope() as session:
        stmt = select(Price).order_by(Price.provider, Price.model, Price.effective_from)
        if provider:
            stmt = stmt.where(Price.provider == provider)
        if not show_all:
            stmt = stmt.where(Price.effective_to.is_(None))
        rows = list(session.scalars(stmt))
        if provider and not rows:
            raise click.ClickException(f"no prices for provider '{provider[:32]}'")
        click.echo(f"{'provider/model':48} {'input':>10} {'output':>10} {'cached':>10}  effective")
        for p in rows:
            cached = "-" if p.cached_input_per_mtok is None else f"{p.cached_input_per_mtok.normalize():f}"
            until = f" .. {p.effective_to:%Y-%m-%d}" if p.effective_to else ""
            click.echo(f"{p.provider + '/' + p.model:48} {p.input_per_mtok.normalize():>10f} "
                       f"{p.output_per_mtok.normalize():>10f} {cached:>10}  {p.effective_from:%Y-%m-%d}{until}")


# -- rollups and checks ----------------------------------------------------------------
@click.group("rollups")
def rollups_group() -> None:
    """Daily usage rollups."""


@rollups_group.command("rebuild")
@click.option("--org", "org_slug", default=None)
@click.option("--since", default=None, help="YYYY-MM-DD (UTC)")
def rollups_rebuild(org_slug: str | None, since: str | None) -> None:
    """Recompute rollups from the raw usage records."""
    from tqdm import tqdm

    from app.billing.rollups import rebuild

    since_day = _date(since, "--since")
    with db.session_scope() as session:
        org_id = _org_id(session, org_slug)
    days, rows = rebuild([org_id] if org_id is not None else None, since_day,
                         progress=lambda d: tqdm(d, desc="rollups", unit="day"))
    click.echo(f"rebuilt {days} days: {rows} rollup rows")


@click.group("billing")
def billing_group() -> None:
    """Billing consistency."""


@billing_group.command("check")
def billing_check() -> None:
    """Verify rollups == records, ledger == entries == usage, invoices == lines, nothing quarantined; exit 1 if not."""
    from app.billing.check import check_quarantine, run_checks

    with db.session_scope() as session:
        problems = run_checks(session)
        quarantined = check_quarantine(session, dict(session.execute(select(Organization.id, Organization.slug)).all()))
    for line in problems:
        click.echo(f"MISMATCH {line}")
    for line in quarantined:
        click.echo(f"QUARANTINED {line}")
    found = []
    if problems:
        found.append(f"{len(problems)} mismatch(es) found")
    if quarantined:
        found.append("usage events in quarantine")
    if found:
        raise click.ClickException("; ".join(found))
    click.echo("billing check: ok (rollups, ledger, invoices, usage quarantine empty)")


# -- invoices ------------------------------------------------------------------------------
@click.group("invoices")
def invoices_group() -> None:
    """Monthly invoices."""


@invoices_group.command("finalize")
@click.option("--period", required=True, help="YYYY-MM (UTC)")
@click.option("--org", "org_slug", default=None, help="default: every organization with usage in the period")
@click.option("--allow-open", is_flag=True, help="finalize the current month before it ends")
def invoices_finalize(period: str, org_slug: str | None, allow_open: bool) -> None:
    """Finalize: a gapless number, stored lines, immutable from then on."""
    from app.billing import invoicing
    from app.billing.periods import PeriodError, parse_period
    from app.models import UsageRollup

    try:
        parse_period(period)
    except PeriodError as exc:
        raise click.ClickException(f"--period: {exc}") from None
    with db.session_scope() as session:
        org_id = _org_id(session, org_slug)
        org_ids = [org_id] if org_id is not None else list(session.scalars(
            select(UsageRollup.org_id).where(UsageRollup.billing_period == period).distinct()))
    done = 0
    for one in sorted(org_ids):
        try:
            with db.session_scope() as session:
                inv = invoicing.finalize(session, one, period, allow_open=allow_open)
                click.echo(f"finalized {inv.number}: org {one} {period} total {inv.total_spend.quantize(_CENT)}")
                done += 1
        except invoicing.InvoiceError as exc:
            if org_id is not None:
                raise click.ClickException(str(exc)) from None
            click.echo(f"skipped org {one}: {exc}", err=True)
    if not org_ids:
        click.echo(f"no usage in {period}; nothing to finalize")


@invoices_group.command("void")
@click.option("--number", required=True)
@click.option("--reason", required=True)
def invoices_void(number: str, reason: str) -> None:
    """Void a finalized invoice; a corrected one is finalized again under a new number."""
    from app.billing import invoicing

    try:
        with db.session_scope() as session:
            inv = invoicing.void(session, number.strip(), reason)
            click.echo(f"voided {inv.number}")
    except invoicing.InvoiceError as exc:
        raise click.ClickException(str(exc)) from None


# -- the usage quarantine -------------------------------------------------------------------
@click.group("usage")
def usage_group() -> None:
    """Usage recording."""


@usage_group.group("quarantine")
def quarantine_group() -> None:
    """Usage events the database refused (docs/billing.md, "The usage quarantine")."""


def _selection(session, ids: tuple[int, ...], every: bool, org_slug: str | None) -> tuple[int | None, list[int] | None]:
    if not ids and not every:
        raise click.ClickException("name the events with --id (repeatable), or pass --all")
    return _org_id(session, org_slug), list(ids) or None


@quarantine_group.command("list")
@click.option("--org", "org_slug", default=None)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1))
def quarantine_list(org_slug: str | None, limit: int) -> None:
    """Pending events, oldest first: id, when, organization, request id, error."""
    from app.billing.quarantine import pending

    with db.session_scope() as session:
        rows = pending(session, _org_id(session, org_slug), limit=limit)
        for row in rows:
            click.echo(f"{row.id:>6}  {row.quarantined_at:%Y-%m-%d %H:%M:%S}  org {row.org_id}  {row.request_id}  "
                       f"failures {row.failures}  {row.error_class}: {row.error}")
    click.echo(f"{len(rows)} pending; `usage quarantine show ID` prints an event")


@quarantine_group.command("show")
@click.argument("row_id", type=int)
def quarantine_show(row_id: int) -> None:
    """One quarantined event as ASCII-only JSON (control characters and non-ASCII escaped)."""
    from app.models.usage import QuarantinedEvent

    with db.session_scope() as session:
        row = session.get(QuarantinedEvent, row_id)
        if row is None:
            raise click.ClickException(f"no quarantined event {row_id}")
        click.echo(f"status {row.status}  {row.error_class}: {row.error}  {row.resolution}".rstrip())
        click.echo(json.dumps(json.loads(row.event), ensure_ascii=True, indent=2, sort_keys=True))


@quarantine_group.command("retry")
@click.option("--id", "ids", type=int, multiple=True)
@click.option("--all", "every", is_flag=True, help="every pending event (of --org, if given)")
@click.option("--org", "org_slug", default=None)
def quarantine_retry(ids: tuple[int, ...], every: bool, org_slug: str | None) -> None:
    """Run events through the usage writer again (after fixing the cause); recorded ones leave the quarantine."""
    from app.billing.recorder import retry_quarantined

    with db.session_scope() as session:
        org_id, id_list = _selection(session, ids, every, org_slug)
    result = retry_quarantined(org_id, id_list)
    for key in result.unreadable:
        click.echo(f"cannot be decoded (inspect with show, then discard): {key}")
    click.echo(f"{len(result.recorded)} recorded, {len(result.refused)} refused again, "
               f"{len(result.unreadable)} unreadable")
    if result.refused or result.unreadable:
        raise click.ClickException("some events are still in quarantine: `usage quarantine list` shows why")


@quarantine_group.command("discard")
@click.option("--id", "ids", type=int, multiple=True)
@click.option("--all", "every", is_flag=True, help="every pending event (of --org, if given)")
@click.option("--org", "org_slug", default=None)
@click.option("--reason", required=True, help="kept with the event and in the audit log")
def quarantine_discard(ids: tuple[int, ...], every: bool, org_slug: str | None, reason: str) -> None:
    """Give up on events for good: they are never billed. Audit-logged with the reason."""
    from app.billing.quarantine import discard, pending

    if not reason.strip():
        raise click.ClickException("--reason must not be empty")
    with db.session_scope() as session:
        org_id, id_list = _selection(session, ids, every, org_slug)
        rows = pending(session, org_id, id_list)
        for row in rows:
            discard(session, row, _operator(), reason.strip())
    click.echo(f"{len(rows)} discarded")


def _operator() -> str:
    """Who ran the command, for the audit log: the OS account (manage.py has no dashboard user)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown operator"
