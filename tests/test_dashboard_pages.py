"""Overview, usage and request-log pages: the figures they show, filters, sorting, CSV and pagination."""
from __future__ import annotations

import csv
import io
import re
from decimal import Decimal

import pytest
from sqlalchemy import delete

from app import db
from app.billing.metering import AttemptEvent
from app.dashboard import formatting
from app.models import Organization, UsageAttempt, UsageRecord
from tests.dashboard_helpers import days_ago, gateway_key_for, login, record, users  # noqa: F401
from tests.factories import grant


def _text(response) -> str:
    return re.sub(r"\s+", " ", response.get_data(as_text=True))


def _metric(html: str, name: str) -> str:
    match = re.search(rf'data-metric="{name}"[^>]*>([^<]*)<', html)
    assert match, name
    return match.group(1).strip()


def test_formatting_for_people():
    assert formatting.usd(Decimal("1234567.891")) == "$1,234,567.89"
    assert formatting.usd(Decimal("0.004")) == "<$0.01"
    assert formatting.usd(Decimal("-3.5")) == "-$3.50"
    assert formatting.usd(None) == "unpriced"
    assert formatting.usd(Decimal("0.0000025"), precise=True) == "$0.0000025"
    assert formatting.number(1234567) == "1,234,567"
    assert formatting.percent(Decimal("0.1234")) == "12.3%"
    assert formatting.compact(2_500_000) == "2.5M"


@pytest.fixture
def traffic(org, users):
    grant(org, "100")
    for _ in range(3):
        record(org, credential="byok", cost="1.25", provider="openai", model="gpt-4o")
    record(org, credential="shared", cost="0.40", charge="0.50", provider="mistral", model="mistral-small-latest")
    record(org, credential="shared", cost="0.80", charge="1.00", fallback_reason="rate_limit", model="gpt-4o")
    record(org, credential="byok", status="error", http_status=502, cost="0", prompt_tokens=0, completion_tokens=0)
    return org


def test_overview_splits_byok_list_price_from_shared_credits(traffic, users, login):
    html = _text(login(users["developer"]).get("/"))
    assert _metric(html, "byok-spend") == "$3.75"
    assert _metric(html, "shared-spend") == "$1.50"
    assert _metric(html, "total-spend") == "$5.25"
    assert _metric(html, "requests") == "6"
    # 1 of the 5 requests that set out on a BYOK key fell back; it cost $1.00 of credits.
    assert _metric(html, "fallback-rate") == "20.0%"
    assert "1 fallbacks cost $1.00 in credits" in html
    assert _metric(html, "balance") == "$98.50"
    assert "openai/gpt-4o" in html and "UTC" in html


def test_overview_chart_has_a_bar_per_credential_kind(traffic, users, login):
    html = login(users["admin"]).get("/").get_data(as_text=True)
    assert html.count("bar bar-byok") == 1 and html.count("bar bar-shared") == 1
    assert "$3.75" in re.search(r"bar-byok\"><title>([^<]+)</title>", html).group(1)


def test_overview_alerts_on_a_fallback_spike_over_the_policy_threshold(org, users, login):
    grant(org, "100")
    for i in range(10):
        reason = "auth" if i < 3 else ""
        record(org, credential="shared" if reason else "byok", cost="0.01", charge="0.01" if reason else "0",
               fallback_reason=reason)
    client = login(users["admin"])
    assert 'data-alert="fallback"' in client.get("/").get_data(as_text=True)  # 30% > 20% default
    with db.session_scope() as s:
        s.get(Organization, org.id).fallback_policy = {"alert_threshold": "0.5"}
    assert 'data-alert="fallback"' not in client.get("/").get_data(as_text=True)


def test_overview_alerts_on_low_credits(org, users, login):
    client = login(users["finance"])
    assert 'data-alert="credits"' in client.get("/").get_data(as_text=True)
    grant(org, "500")
    assert 'data-alert="credits"' not in client.get("/").get_data(as_text=True)


def test_unpriced_usage_is_never_shown_as_zero(org, users, login):
    record(org, model="mystery-model", cost=None)
    html = _text(login(users["admin"]).get("/usage?group=model"))
    assert "+1 unpriced" in html


# -- usage -------------------------------------------------------------------------------
def _rows(html: str) -> list[str]:
    body = re.search(r'id="usage-table".*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    return [re.sub(r"<[^>]+>", "", cells).strip() for cells in re.findall(r"<tr><td>(.*?)</td>", body, re.S)]


def test_usage_groups_filters_and_sorts(traffic, users, login):
    client = login(users["developer"])
    by_model = _rows(client.get("/usage?group=model&sort=spend&order=desc").get_data(as_text=True))
    assert by_model[0] == "openai/gpt-4o"
    assert set(by_model) == {"openai/gpt-4o", "mistral/mistral-small-latest", "openai/gpt-4o-mini"}
    ascending = _rows(client.get("/usage?group=model&sort=spend&order=asc").get_data(as_text=True))
    assert ascending == list(reversed(by_model))
    only_mistral = _rows(client.get("/usage?group=model&provider=mistral").get_data(as_text=True))
    assert only_mistral == ["mistral/mistral-small-latest"]
    shared = _rows(client.get("/usage?group=credential&credential=shared").get_data(as_text=True))
    assert shared == ["shared"]


def test_usage_filters_by_key_and_label(org, users, login):
    key, _ = gateway_key_for(org, users["developer"], name="ci")
    record(org, api_key_id=key.id, label="team-a")
    record(org, label="team-b")
    client = login(users["developer"])
    assert _rows(client.get(f"/usage?group=label&key={key.id}").get_data(as_text=True)) == ["team-a"]
    assert _rows(client.get("/usage?group=key&label=team-b").get_data(as_text=True)) == ["no key"]


def test_usage_date_range_and_a_malformed_date(org, users, login):
    record(org, at=days_ago(10), model="gpt-4o")
    record(org, at=days_ago(0), model="gpt-4o-mini")
    client = login(users["admin"])
    start = days_ago(11).date().isoformat()
    end = days_ago(5).date().isoformat()
    assert _rows(client.get(f"/usage?group=model&start={start}&end={end}").get_data(as_text=True)) == ["openai/gpt-4o"]
    page = client.get("/usage?start=31/12/2025")
    assert page.status_code == 400 and "is not a date (YYYY-MM-DD)" in page.get_data(as_text=True)


def test_usage_is_served_from_rollups_not_raw_records(traffic, users, login):
    client = login(users["admin"])
    before = _rows(client.get("/usage?group=model").get_data(as_text=True))
    with db.session_scope() as s:
        s.execute(delete(UsageAttempt))
        s.execute(delete(UsageRecord))
    assert _rows(client.get("/usage?group=model").get_data(as_text=True)) == before


def test_usage_csv_is_exactly_the_table_shown(traffic, users, login):
    client = login(users["finance"])
    query = "group=model&sort=requests&order=desc&credential=byok"
    shown = _rows(client.get(f"/usage?{query}").get_data(as_text=True))
    response = client.get(f"/usage/export.csv?{query}")
    assert response.mimetype == "text/csv" and "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [r["model"] for r in rows] == shown
    assert sum(int(r["requests"]) for r in rows) == 4
    assert Decimal(rows[0]["byok_cost"]) == Decimal("3.75")


# -- request log -------------------------------------------------------------------------------
def test_request_log_pages_by_keyset_without_overlap(org, users, login):
    ids = [record(org, at=days_ago(1, hour=0).replace(minute=i % 60, second=i // 60)) for i in range(120)]
    client = login(users["developer"])
    seen: list[str] = []
    url = "/logs"
    for _ in range(5):
        html = client.get(url).get_data(as_text=True)
        seen += re.findall(r'class="mono">(gen-[0-9a-f]+)</a>', html)
        older = re.search(r'id="older" href="([^"]+)"', html)
        if not older:
            break
        url = older.group(1).replace("&amp;", "&")
    assert len(seen) == len(set(seen)) == 120
    assert set(seen) == set(ids)


def test_request_log_filters(org, users, login):
    record(org, status="error", http_status=502)
    fell = record(org, credential="shared", fallback_reason="rate_limit", cost="0.01")
    record(org, label="team-x")
    client = login(users["admin"])

    def ids(query: str) -> set[str]:
        return set(re.findall(r'class="mono">(gen-[0-9a-f]+)</a>', client.get(f"/logs?{query}").get_data(as_text=True)))

    assert len(ids("status=error")) == 1
    assert ids("fallback=yes") == {fell}
    assert len(ids("label=team-x")) == 1
    assert len(ids("credential=byok")) == 2
    page = client.get("/logs?status=maybe&start=notadate").get_data(as_text=True)
    assert "status must be one of" in page and "is not a date" in page


def test_request_detail_shows_the_attempts_timeline_and_fallback_reason(org, users, login):
    grant(org, "10")
    rid = record(org, credential="shared", fallback_reason="rate_limit", cost="0.02", charge="0.02", attempts=[
        AttemptEvent("openai", "gpt-4o-mini", "byok", "team-a", "failed", 429, "rate_limit", 40),
        AttemptEvent("openai", "gpt-4o-mini", "shared", "", "ok", 200, "", 300),
    ])
    html = _text(login(users["developer"]).get(f"/logs/{rid}"))
    assert "#1 openai/gpt-4o-mini" in html and "HTTP 429 · rate_limit" in html
    assert "#2 openai/gpt-4o-mini" in html and "fell back to the shared pool (rate_limit)" in html
    assert "yes — reason: rate_limit" in html


def test_request_detail_of_unknown_id_is_404(org, users, login):
    assert login(users["admin"]).get("/logs/gen-doesnotexist").status_code == 404
