"""Invoice pages: list, sections, printable view, CSV, finalize with confirmation, void with a reason."""
from __future__ import annotations

import csv
import io
import re

from sqlalchemy import select

from app import db
from app.billing.periods import current_period
from app.models import Invoice
from tests.clock import in_month, period_ago
from tests.dashboard_helpers import login, post, record, users  # noqa: F401
from tests.factories import grant


def previous_period() -> str:
    return period_ago(1)


def _last_month_usage(org):
    grant(org, "100")
    at = in_month(1)
    record(org, credential="byok", provider="openai", model="gpt-4o", cost="1.005", at=at)
    record(org, credential="byok", provider="azure", model="gpt-4o", cost="2.50", at=at)
    record(org, credential="shared", provider="openai", model="gpt-4o-mini", cost="0.40", charge="0.40",
           fallback_reason="rate_limit", at=at)
    record(org, credential="byok", provider="openai", model="mystery", cost=None, at=at)


def _totals(html: str) -> dict[str, str]:
    return dict(re.findall(r'<dd[^>]*data-total="(\w+)"[^>]*>([^<]+)</dd>', html))


def test_invoice_list_and_draft_detail_with_every_section(instant, org, users, login):
    _last_month_usage(org)
    client = login(users["finance"])
    listing = client.get("/invoices").get_data(as_text=True)
    assert previous_period() in listing and "draft" in listing
    html = client.get(f"/invoices/{previous_period()}").get_data(as_text=True)
    assert "Shared pool — charged to credits" in html and 'id="byok-openai"' in html and 'id="byok-azure"' in html
    assert 'id="fallback-lines"' in html and "rate_limit" in html
    assert 'id="unpriced-lines"' in html and "unpriced" in re.search(r'id="unpriced-lines".*?</table>', html, re.S).group(0)
    totals = _totals(html)
    assert totals["byok_total"] == "$3.51" and totals["shared_total"] == "$0.40" and totals["total_spend"] == "$3.91"


def test_invoice_csv_matches_the_page(instant, org, users, login):
    _last_month_usage(org)
    client = login(users["finance"])
    period = previous_period()
    totals = _totals(client.get(f"/invoices/{period}").get_data(as_text=True))
    response = client.get(f"/invoices/{period}/invoice.csv")
    assert response.mimetype == "text/csv" and response.headers["Cache-Control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    summary = {r["detail"]: r["amount"] for r in rows if r["section"] == "summary"}
    for name, shown in totals.items():
        assert shown.replace("$", "").replace(",", "") == summary[name], name
    assert [r["amount"] for r in rows if r["section"] == "unpriced"] == ["unpriced"]


def test_printable_view_is_standalone(org, users, login):
    _last_month_usage(org)
    html = login(users["admin"]).get(f"/invoices/{previous_period()}/print").get_data(as_text=True)
    assert 'class="topbar"' not in html and "Draft statement" in html and "data-print" in html


def test_finalize_needs_confirmation_then_freezes_the_invoice(org, users, login):
    _last_month_usage(org)
    client = login(users["finance"])
    period = previous_period()
    confirm = client.get(f"/invoices/{period}/finalize")
    assert confirm.status_code == 200 and "Yes, finalize" in confirm.get_data(as_text=True)
    assert db.session.scalar(select(Invoice).where(Invoice.org_id == org.id)) is None  # nothing yet
    response = post(client, f"/invoices/{period}/finalize")
    assert response.status_code == 302
    db.session.remove()
    invoice = db.session.scalar(select(Invoice).where(Invoice.org_id == org.id))
    assert invoice.status == "finalized" and invoice.number
    html = client.get(f"/invoices/{period}").get_data(as_text=True)
    assert invoice.number in html and 'id="invoice-status">finalized' in html and 'id="finalize"' not in html
    again = post(client, f"/invoices/{period}/finalize", follow_redirects=True)
    assert "already finalized" in again.get_data(as_text=True)


def test_current_month_cannot_be_finalized(instant, org, users, login):
    record(org, credential="byok", cost="1.25")  # stamped now: this month's draft
    client = login(users["admin"])
    period = current_period()
    assert period == f"{instant:%Y-%m}"
    assert f'href="/invoices/{period}"' in client.get("/invoices").get_data(as_text=True)
    html = client.get(f"/invoices/{period}").get_data(as_text=True)
    assert 'id="finalize"' not in html and _totals(html)["total_spend"] == "$1.25"
    page = post(client, f"/invoices/{period}/finalize", follow_redirects=True).get_data(as_text=True)
    assert "still open" in page
    db.session.remove()
    assert db.session.scalar(select(Invoice).where(Invoice.org_id == org.id)) is None


def test_void_needs_a_reason_and_is_admin_only(org, users, login):
    _last_month_usage(org)
    admin = login(users["admin"])
    post(admin, f"/invoices/{previous_period()}/finalize")
    number = db.session.scalar(select(Invoice.number).where(Invoice.org_id == org.id))
    finance = login(users["finance"])
    assert 'id="void-form"' not in finance.get(f"/invoices/number/{number}").get_data(as_text=True)
    assert post(finance, f"/invoices/number/{number}/void", {"reason": "duplicate"}).status_code == 403
    empty = post(admin, f"/invoices/number/{number}/void", {"reason": ""})
    assert empty.status_code == 400 and "Say why" in empty.get_data(as_text=True)
    db.session.remove()
    assert db.session.scalar(select(Invoice.status).where(Invoice.number == number)) == "finalized"
    assert post(admin, f"/invoices/number/{number}/void", {"reason": "wrong price applied"}).status_code == 302
    html = admin.get(f"/invoices/number/{number}").get_data(as_text=True)
    assert 'id="invoice-status">void' in html and "wrong price applied" in html


def test_malformed_period_is_404(org, users, login):
    client = login(users["finance"])
    assert client.get("/invoices/2026-13").status_code == 404
    assert client.get("/invoices/number/KW-0000-000000").status_code == 404
