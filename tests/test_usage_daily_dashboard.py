"""The dashboard reads usage_daily where it can, and shows exactly the figures of the fine rollups."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import delete, select

from app import db
from app.dashboard import rollups
from app.dashboard.rollups import R, S, UsageFilter
from app.models import UsageDaily, UsageRollup
from tests.dashboard_helpers import days_ago, gateway_key_for, login, record, users  # noqa: F401
from tests.factories import grant


@pytest.fixture
def mixed_traffic(org, users):  # noqa: F811
    """Keys, labels, fallback reasons, errors and unpriced models over several days."""
    grant(org, "100")
    key, _ = gateway_key_for(org, users["developer"], name="ci")
    for day in (0, 1, 3, 12):
        for label in ("", "team-a", "team-b"):
            record(org, credential="byok", cost="0.25", label=label, at=days_ago(day), api_key_id=key.id)
            record(org, credential="shared", cost="0.10", charge="0.12", fallback_reason="rate_limit" if label else "",
                   label=label, at=days_ago(day), model="gpt-4o")
        record(org, credential="shared", cost="0.05", charge="0.05", fallback_reason="timeout", at=days_ago(day),
               provider="mistral", model="mistral-small-latest", latency_ms=900)
        record(org, credential="byok", status="error", http_status=502, cost=None, prompt_tokens=0,
               completion_tokens=0, at=days_ago(day), api_key_id=key.id)
        record(org, credential="byok", model="private-finetune", cost=None, at=days_ago(day))
    return key


def _by_key(rows: list[rollups.Totals]) -> dict:
    return {t.key: t for t in rows}


@pytest.mark.parametrize("dimension", ["day", "provider", "model", "credential"])
@pytest.mark.parametrize("narrow", [{}, {"provider": "openai"}, {"model": "gpt-4o"}, {"credential": "byok"}])
def test_summary_and_fine_rollups_give_the_same_figures(app, org, mixed_traffic, dimension, narrow):
    flt = UsageFilter(start=days_ago(20).date(), end=days_ago(0).date(), **narrow)
    assert flt.source(dimension) is S
    session = db.session()
    coarse = rollups.grouped(session, flt.clauses(org.id, S), dimension, S)
    fine = rollups.grouped(session, flt.clauses(org.id, R), dimension, R)
    assert coarse and _by_key(coarse) == _by_key(fine)
    assert rollups.daily_totals(session, flt.clauses(org.id, S), S) == \
        rollups.daily_totals(session, flt.clauses(org.id, R), R)
    total = rollups.Totals.sum(coarse)
    if not narrow:  # the fallback figures come from the summary's reason columns
        assert total.fallback_charged > 0 and total.byok_attempted > total.fallbacks > 0


def test_key_label_and_reason_queries_stay_on_the_fine_rollups(app, org, mixed_traffic):
    flt = UsageFilter(start=days_ago(20).date(), end=days_ago(0).date())
    assert [flt.source(g) for g in ("key", "label", "fallback_reason")] == [R, R, R]
    assert UsageFilter(flt.start, flt.end, label="team-a").source("model") is R
    assert UsageFilter(flt.start, flt.end, api_key_id=mixed_traffic.id).source("day") is R


def _pages(client, key_id: int) -> dict[str, str]:
    urls = ["/", "/usage?group=model", "/usage?group=day&chart=tokens", "/usage?group=credential&provider=openai",
            "/usage/export.csv?group=provider", f"/usage?group=model&key={key_id}", "/usage?group=label",
            "/usage?group=fallback_reason&label=team-a", "/usage/export.csv?group=key"]
    out = {}
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        # CSRF tokens (meta tag and sign-out form) carry a timestamp: they differ from one second to the next.
        out[url] = re.sub(r'name="csrf[-_]token" (content|value)="[^"]+"', "", response.get_data(as_text=True))
    return out


def test_pages_read_the_summary_exactly_where_they_can(app, org, users, login, mixed_traffic):  # noqa: F811
    client = login(users["admin"])
    before = _pages(client, mixed_traffic.id)
    with db.session_scope() as session:
        fine = [dict(row._mapping) for row in session.execute(select(UsageRollup.__table__))]
        session.execute(delete(UsageRollup))
    without_fine = _pages(client, mixed_traffic.id)
    coarse_only = ["/", "/usage/export.csv?group=provider"]
    for url in coarse_only:  # the overview and a plain usage table never touch the fine rollups
        assert without_fine[url] == before[url], url
    assert without_fine["/usage/export.csv?group=key"] != before["/usage/export.csv?group=key"]
    with db.session_scope() as session:
        session.execute(UsageRollup.__table__.insert(), fine)
        session.execute(delete(UsageDaily))
    without_summary = _pages(client, mixed_traffic.id)
    for url in (f"/usage?group=model&key={mixed_traffic.id}", "/usage?group=fallback_reason&label=team-a",
                "/usage/export.csv?group=key"):  # key, label and reason views need only the fine rollups
        assert without_summary[url] == before[url], url
    assert without_summary["/"] != before["/"]
