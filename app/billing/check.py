"""`billing check`: rollups and daily summary == raw records, ledger == entries == usage, invoices == lines,
and no usage event waiting in the quarantine."""
from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Integer, case, func, literal, select
from sqlalchemy.orm import Session

from app.billing.invoicing import draft_view, stored_view
from app.billing.money import ZERO, round_line_half_up
from app.billing.quarantine import quarantine_summary
from app.billing.rollups import COUNTS, DAILY_COUNTS, DAILY_DIMS, DIMS, flag
from app.models import CreditAccount, CreditEntry, Invoice, Organization, UsageDaily, UsageRecord, UsageRollup

MAX_REPORTED = 50


def run_checks(session: Session) -> list[str]:
    """Every mismatch found, each as one line naming the organization and what differs."""
    slugs = dict(session.execute(select(Organization.id, Organization.slug)).all())
    checks = (check_rollups, check_daily, check_ledger, check_invoices)
    return [problem for check in checks for problem in check(session, slugs)]


def _day(session: Session):
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("UTC", UsageRecord.created_at))
    return func.date(UsageRecord.created_at)  # SQLite stores naive UTC text


def _record_counts(r=UsageRecord) -> list:
    """The raw records summed the way every summary row sums them (COUNTS order)."""
    return [func.count(), func.sum(flag(r.status != "ok")), func.sum(flag(r.fallback.is_(True))),
            func.sum(flag(r.cost_status == "unpriced")), func.sum(r.prompt_tokens),
            func.sum(r.completion_tokens), func.sum(r.cached_tokens), func.sum(r.cache_write_tokens),
            func.sum(r.reasoning_tokens), func.sum(r.latency_ms), func.sum(func.coalesce(r.cost, 0)),
            func.sum(r.charged)]


def _compare(raw: dict, stored: dict, names, where, table: str, missing_in: str, short: str) -> list[str]:
    """One line per key whose stored summary differs from what the raw records add up to."""
    problems = []
    for key in sorted(set(raw) | set(stored), key=str):
        want, got = raw.get(key), stored.get(key)
        if want == got:
            continue
        if want is None:
            problems.append(f"{table} without records: {where(key)}")
        elif got is None:
            problems.append(f"records missing from {missing_in}: {where(key)} ({want[0]} requests)")
        else:
            diffs = ", ".join(f"{n} {g} != {w}" for n, g, w in zip(names, got, want) if g != w)
            problems.append(f"{table} differs from records: {where(key)}: {diffs} ({short} != records)")
    return problems[:MAX_REPORTED]


def check_rollups(session: Session, slugs: dict[int, str]) -> list[str]:
    r = UsageRecord
    day = _day(session)
    dims = [r.org_id, r.billing_period, r.provider, r.model, r.credential,
            func.coalesce(r.api_key_id, literal(0, Integer)), r.byok_label, r.fallback_reason, r.cost_status]
    raw = {(str(row[0]), *row[1:10]): _normal(row[10:]) for row in
           session.execute(select(day, *dims, *_record_counts()).group_by(day, *dims))}
    u = UsageRollup
    rolled = {(str(row[0]), *row[1:10]): _normal(row[10:]) for row in session.execute(
        select(u.day, *(getattr(u, d) for d in DIMS), *(getattr(u, c) for c in COUNTS)))}
    return _compare(raw, rolled, COUNTS, lambda key: (
        f"org {slugs.get(key[1], key[1])} day {key[0]} {key[3]}/{key[4]} {key[5]} period {key[2]}"), "rollup", "rollups", "rollup")


def _normal(values, names=COUNTS) -> tuple:
    """Counts as int, money as Decimal (a raw SQLite SUM of money is the integer of 1e-10 units)."""
    out = []
    for name, value in zip(names, values):
        if name in ("cost", "charged", "reason_charged"):
            out.append(value if isinstance(value, Decimal) else Decimal(int(value or 0)).scaleb(-10))
        else:
            out.append(int(value or 0))
    return tuple(out)


def check_daily(session: Session, slugs: dict[int, str]) -> list[str]:
    """usage_daily == the raw records summed per org, day, provider, model, credential and cost status."""
    r = UsageRecord
    dims = [r.org_id, r.billing_period, r.provider, r.model, r.credential, r.cost_status]
    with_reason = r.fallback_reason != ""
    counts = [*_record_counts(), func.sum(flag(with_reason)),
              func.sum(case((with_reason, r.charged), else_=literal(0, r.charged.type)))]
    day = _day(session)
    raw = {(str(row[0]), *row[1:7]): _normal(row[7:], DAILY_COUNTS) for row in
           session.execute(select(day, *dims, *counts).group_by(day, *dims))}
    u = UsageDaily
    names = [n for n in DAILY_DIMS if n != "day"]
    summary = {(str(row[0]), *row[1:7]): _normal(row[7:], DAILY_COUNTS) for row in session.execute(
        select(u.day, *(getattr(u, n) for n in names), *(getattr(u, c) for c in DAILY_COUNTS)))}
    return _compare(raw, summary, DAILY_COUNTS, lambda key: (
        f"org {slugs.get(key[1], key[1])} day {key[0]} {key[3]}/{key[4]} {key[5]} {key[6]} period {key[2]}"),
        "daily summary", "the daily summary", "summary")


def check_ledger(session: Session, slugs: dict[int, str]) -> list[str]:
    e = CreditEntry
    entries = {row[0]: row[1:] for row in session.execute(
        select(e.org_id, func.sum(e.amount),
               func.sum(case((e.kind.in_(("reservation", "release")), e.amount), else_=None)),
               func.sum(case((e.kind == "settlement", e.amount), else_=None)))
        .group_by(e.org_id))}
    charged = dict(session.execute(select(UsageRecord.org_id, func.sum(UsageRecord.charged))
                                   .group_by(UsageRecord.org_id)).all())
    accounts = {a.org_id: a for a in session.scalars(select(CreditAccount))}
    problems = []
    for org_id in sorted(set(entries) | set(accounts) | set(charged)):
        name = slugs.get(org_id, org_id)
        total, held, settled = (_dec(v) for v in entries.get(org_id, (None, None, None)))
        account = accounts.get(org_id)
        balance = account.balance if account else ZERO
        if balance != total:
            problems.append(f"ledger: org {name} balance {balance} != sum of entries {total}")
        if balance < 0:
            problems.append(f"ledger: org {name} balance {balance} is negative")
        if account is not None and account.reserved != -held:
            problems.append(f"ledger: org {name} reserved {account.reserved} != open reservations {-held}")
        if -settled != _dec(charged.get(org_id)):
            problems.append(f"ledger: org {name} settlements {-settled} != usage charged {_dec(charged.get(org_id))}")
    return problems


def _dec(value) -> Decimal:
    if value is None:
        return ZERO
    return value if isinstance(value, Decimal) else Decimal(int(value)).scaleb(-10)


def check_invoices(session: Session, slugs: dict[int, str]) -> list[str]:
    problems = []
    for inv in session.scalars(select(Invoice).where(Invoice.status != "draft").order_by(Invoice.id)):
        label = f"invoice {inv.number} (org {slugs.get(inv.org_id, inv.org_id)}, {inv.period})"
        view = stored_view(inv)
        for line in inv.lines:
            if line.section == "unpriced":
                if line.amount is not None:
                    problems.append(f"{label}: unpriced line {line.provider}/{line.model} has an amount")
            elif line.amount is None or line.amount != round_line_half_up(line.unrounded_amount or ZERO):
                problems.append(f"{label}: line {line.position} amount {line.amount} is not its rounded amount")
        sums = {
            "shared_total": sum((x.amount for x in view.shared_lines), ZERO),
            "byok_total": sum((x.amount for g in view.byok_groups for x in g.lines), ZERO),
        }
        sums["total_spend"] = sums["shared_total"] + sums["byok_total"]
        sums["credits_used"] = sums["shared_total"]
        for name, want in sums.items():
            if getattr(inv, name) != want:
                problems.append(f"{label}: {name} {getattr(inv, name)} != sum of lines {want}")
        if inv.closing_balance != inv.opening_balance + inv.grants - inv.credits_used:
            problems.append(f"{label}: closing balance != opening + grants - credits used")
        if inv.status == "finalized":
            live = draft_view(session, inv.org_id, inv.period)
            for name in ("shared_total", "byok_total", "total_spend"):
                if getattr(live, name) != getattr(inv, name):
                    problems.append(f"{label}: {name} {getattr(inv, name)} != usage of the period "
                                    f"{getattr(live, name)}")
    return problems


def check_quarantine(session: Session, slugs: dict[int, str]) -> list[str]:
    """One line when usage events wait in the quarantine (they are not billed until retried), naming how to act."""
    summary = quarantine_summary(session)
    if not summary.count:
        return []
    orgs = ", ".join(f"org {_org_name(slugs, org_id)}: {count}"
                     for org_id, count in sorted(summary.by_org.items(), key=lambda item: str(item[0])))
    return [f"{summary.count} usage event(s) refused by the database are not recorded or billed "
            f"({orgs}; oldest {summary.oldest:%Y-%m-%d %H:%M} UTC): inspect them with "
            "`manage.py usage quarantine list`, fix the cause, then `usage quarantine retry` or `discard`"]


def _org_name(slugs: dict[int, str], org_id: int | None) -> str:
    if org_id is None:
        return "unknown"
    return slugs.get(org_id, f"#{org_id} (no such organization)")
