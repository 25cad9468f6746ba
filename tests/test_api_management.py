"""The management API: management keys only, own organization only, rollup-served usage, invoices, credits."""
from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest

from app import db
from app.billing.invoicing import finalize
from app.billing.periods import next_period
from tests.factories import OrganizationFactory, issue_key
from tests.test_billing_support import grant, month_start, period_ago, record, usage_event


@pytest.fixture
def mkey(org) -> str:
    return issue_key(org, scope="management")


def get(client, key: str, path: str, **params):
    return client.get(f"/api/v1{path}", query_string=params, headers={"Authorization": f"Bearer {key}"})


def seed(org) -> None:
    grant(org.id, "30", at=month_start(2))
    at = month_start(1) + timedelta(days=4)
    record(usage_event(org.id, model="gpt-4o", cost="1.2345", at=at))
    record(usage_event(org.id, model="gpt-4o", cost="1", at=at + timedelta(days=1), reason="rate_limit"))
    record(usage_event(org.id, credential="byok", provider="anthropic", model="claude-haiku-4-5", cost="0.5",
                       at=at, label="team-a"))


def test_usage_grouped_by_model_from_rollups_with_money_as_strings(instant, client, org, mkey):
    seed(org)
    start = month_start(1).date()
    end = (month_start(0) - timedelta(days=1)).date()
    response = get(client, mkey, "/usage", start=start.isoformat(), end=end.isoformat(), group_by="provider,model")
    assert response.status_code == 200, response.json
    rows = {(r["provider"], r["model"]): r for r in response.json["data"]}
    assert set(rows) == {("openai", "gpt-4o"), ("anthropic", "claude-haiku-4-5")}
    assert rows[("openai", "gpt-4o")]["requests"] == 2 and rows[("openai", "gpt-4o")]["fallbacks"] == 1
    assert rows[("openai", "gpt-4o")]["cost"] == "2.2345" and rows[("openai", "gpt-4o")]["charged"] == "2.2345"
    assert rows[("anthropic", "claude-haiku-4-5")]["charged"] == "0.00"


def test_usage_by_day_key_and_label(instant, client, org, mkey):
    seed(org)
    start = month_start(1).date()
    response = get(client, mkey, "/usage", start=start.isoformat(),
                   end=(start + timedelta(days=10)).isoformat(), group_by="day,credential,key,label")
    data = response.json["data"]
    assert [(r["day"], r["credential"], r["label"], r["requests"]) for r in data] == [
        ((start + timedelta(days=4)).isoformat(), "byok", "team-a", 1),
        ((start + timedelta(days=4)).isoformat(), "shared", "", 1),
        ((start + timedelta(days=5)).isoformat(), "shared", "", 1)]
    assert all(r["key_id"] is None for r in data)


@pytest.mark.parametrize("params, param", [
    ({"group_by": "day,colour"}, "group_by"),
    ({"start": "2026-02-30"}, "start"),
    ({"start": "2026-10-05", "end": "2026-10-01"}, "end"),
    ({"start": "2020-01-01", "end": "2026-10-01"}, "start"),
])
def test_bad_usage_parameters_are_400_naming_the_parameter(client, mkey, params, param):
    response = get(client, mkey, "/usage", **params)
    assert response.status_code == 400
    assert response.json["error"]["param"] == param and response.json["error"]["type"] == "invalid_request_error"


def test_inference_keys_and_missing_keys_are_refused(client, org, gateway_key):
    assert get(client, gateway_key, "/usage").status_code == 403
    assert client.get("/api/v1/invoices").status_code == 401


def test_invoice_draft_then_finalized_json_and_csv(client, org, mkey):
    seed(org)
    draft = get(client, mkey, f"/invoices/{period_ago(1)}")
    assert draft.status_code == 200 and draft.json["status"] == "draft"
    assert draft.json["shared"]["total"] == "2.23" and draft.json["byok"]["total"] == "0.50"
    assert draft.json["summary"]["opening_balance"] == "30.00"
    with db.session_scope() as session:
        number = finalize(session, org.id, period_ago(1)).number
    final = get(client, mkey, f"/invoices/{period_ago(1)}")
    assert final.json["status"] == "finalized" and final.json["number"] == number
    assert final.json["summary"] == draft.json["summary"]
    assert get(client, mkey, f"/invoices/{number}").json["number"] == number
    listing = get(client, mkey, "/invoices").json["data"]
    assert [(x["period"], x["status"]) for x in listing] == [(period_ago(1), "finalized")]
    exported = get(client, mkey, f"/invoices/{period_ago(1)}.csv")
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    assert number in exported.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(exported.get_data(as_text=True))))
    assert ["summary", "", "", "total_spend", "", "", "", "", "2.73"] in rows


def test_another_orgs_invoice_is_404_and_its_usage_invisible(client, org, mkey):
    other = OrganizationFactory()
    seed(other)
    with db.session_scope() as session:
        number = finalize(session, other.id, period_ago(1)).number
    assert get(client, mkey, f"/invoices/{number}").status_code == 404
    assert get(client, mkey, f"/invoices/{number}.csv").status_code == 404
    mine = get(client, mkey, f"/invoices/{period_ago(1)}").json
    assert mine["status"] == "draft" and mine["summary"]["total_spend"] == "0.00"
    start = month_start(1).date().isoformat()
    assert get(client, mkey, "/usage", start=start, group_by="model").json["data"] == []
    assert get(client, mkey, "/invoices").json["data"] == []


@pytest.mark.parametrize("ref", ["2026-13", "26-10", "latest", "KW-2026-1"])
def test_malformed_period_is_400(client, mkey, ref):
    response = get(client, mkey, f"/invoices/{ref}")
    assert response.status_code == 400 and response.json["error"]["param"] == "period"


def test_only_a_period_that_has_not_started_is_404(instant, client, mkey):
    assert get(client, mkey, f"/invoices/{next_period(period_ago(0))}").status_code == 404
    assert get(client, mkey, f"/invoices/{period_ago(0)}").json["status"] == "draft"


def test_credits_balance_and_a_page_of_entries(client, org, mkey):
    for amount in ("1", "2", "3"):
        grant(org.id, amount)
    first = get(client, mkey, "/credits", limit=2).json
    assert first["balance"] == "6.00" and first["reserved"] == "0.00"
    assert [e["amount"] for e in first["entries"]] == ["3.00", "2.00"]
    rest = get(client, mkey, "/credits", limit=2, before=first["next_before"]).json
    assert [e["amount"] for e in rest["entries"]] == ["1.00"] and rest["next_before"] is None
    bad = get(client, mkey, "/credits", limit=0)
    assert bad.status_code == 400 and bad.json["error"]["param"] == "limit"
