"""The dashboard in a real browser: Playwright driving Debian's Chromium against a live server."""
from __future__ import annotations

import csv
import io
import os
import re
import shutil
from datetime import datetime, timezone
from decimal import Decimal

import pytest
import requests

from tests.dashboard_helpers import PASSWORD, login, record, users  # noqa: F401
from tests.factories import grant
from simulators.server import Fault

CHROMIUM = shutil.which("chromium")
ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "test-artifacts")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
USER_KEY = "sk-user-browser-0001"

# Chromium keeps cookies by its own, real clock: the server in this process must use the same one, so
# these tests name their dates explicitly or let the server stamp them (tests/clock.py).
pytestmark = [pytest.mark.browser, pytest.mark.real_clock,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")]
# A month long past whatever day the suite runs: its invoice is a draft with exactly the usage written here.
PAST = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, live_server, request):
    context = browser.new_context(base_url=live_server.url, accept_downloads=True)
    context.set_default_timeout(10_000)
    tab = context.new_page()
    failed_before = request.session.testsfailed
    yield tab
    # The call phase's report is counted before teardown runs: keep a screenshot of a failure.
    if request.session.testsfailed > failed_before:
        os.makedirs(ARTIFACTS, exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.nodeid)[-150:]
        tab.screenshot(path=os.path.join(ARTIFACTS, f"{name}.png"), full_page=True)
    context.close()


def sign_in(page, email: str):
    page.goto("/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Overview')")


@pytest.mark.parametrize("role, sees, hidden", [
    ("admin", ["Invoices", "Credits", "API keys", "Admin"], []),
    ("finance", ["Invoices", "Credits"], ["API keys", "Admin"]),
    ("developer", ["API keys"], ["Invoices", "Credits", "Admin"]),
])
def test_each_role_signs_in(page, users, role, sees, hidden):
    sign_in(page, users[role].email)
    nav = page.locator("nav.mainnav")
    for label in ["Overview", "Usage", "Request log", *sees]:
        assert nav.get_by_role("link", name=label, exact=True).count() == 1, label
    for label in hidden:
        assert nav.get_by_role("link", name=label, exact=True).count() == 0, label
    assert page.locator(".role").inner_text().lower() == role


def test_wrong_password_shows_the_generic_message(page, users):
    page.goto("/login")
    page.fill("#email", users["admin"].email)
    page.fill("#password", "wrong password")
    page.click("button[type=submit]")
    assert "Incorrect email or password" in page.locator(".flash-error").inner_text()


def test_overview_chart_renders_with_data(page, org, users):
    grant(org, "50")
    record(org, credential="byok", cost="2.00")  # stamped by the server's clock: inside its chart
    record(org, credential="shared", cost="1.00", charge="1.00")
    sign_in(page, users["finance"].email)
    bars = page.locator("svg.chart-svg rect.bar")
    assert bars.count() == 2
    for i in range(2):
        box = bars.nth(i).bounding_box()
        assert box and box["height"] > 1 and box["width"] > 1
    # The stylesheet (not inline style, which the CSP forbids) colours the two kinds differently.
    colours = {bars.nth(i).evaluate("el => getComputedStyle(el).fill") for i in range(2)}
    assert len(colours) == 2


def test_usage_filter_changes_the_table(page, org, users):
    record(org, provider="openai", model="gpt-4o-mini")
    record(org, provider="mistral", model="mistral-small-latest")
    sign_in(page, users["developer"].email)
    page.goto("/usage?group=model")
    rows = page.locator("#usage-table tbody tr")
    assert rows.count() == 2
    page.select_option("#f-provider", "mistral")
    page.click("#usage-filters button[type=submit]")
    page.wait_for_url(re.compile(r"provider=mistral"))
    assert rows.count() == 1
    assert rows.first.locator("td").first.inner_text() == "mistral/mistral-small-latest"


def test_invoice_csv_downloads_and_matches_the_page(page, org, users):
    grant(org, "100")
    record(org, credential="byok", provider="openai", model="gpt-4o", cost="12.345", at=PAST)
    record(org, credential="shared", provider="openai", model="gpt-4o-mini", cost="3.00", charge="3.00", at=PAST)
    sign_in(page, users["finance"].email)
    page.goto(f"/invoices/{PAST:%Y-%m}")
    shown = {name: page.locator(f'dd[data-total="{name}"]').inner_text()
             for name in ("shared_total", "byok_total", "total_spend")}
    assert shown["total_spend"] == "$15.35"
    with page.expect_download() as info:
        page.click("#download-csv")
    text = open(info.value.path(), encoding="utf-8").read()
    rows = list(csv.DictReader(io.StringIO(text)))
    summary = {r["detail"]: r["amount"] for r in rows if r["section"] == "summary"}
    for name, value in shown.items():
        assert Decimal(value.replace("$", "").replace(",", "")) == Decimal(summary[name])


def test_fallback_policy_off_makes_the_next_byok_429_a_429(page, org, users, gateway_key, fake_openai, live_server):
    grant(org, "10")
    fake_openai.on_key(USER_KEY, Fault("status", 429, headers={"retry-after": "1"}))
    body = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
            "byok_conf": {"provider": "openai", "credentials": {"api_key": USER_KEY}}}
    headers = {"Authorization": f"Bearer {gateway_key}"}
    url = live_server.url + "/v1/chat/completions"
    before = requests.post(url, json=body, headers=headers, timeout=10)
    assert before.status_code == 200 and before.headers["X-Gateway-Fallback"] == "1"
    sign_in(page, users["admin"].email)
    page.goto("/admin/policy")
    page.uncheck("#policy-enabled")
    page.click("#save-policy")
    page.wait_for_selector(".flash-success")
    after = requests.post(url, json=body, headers=headers, timeout=10)
    assert after.status_code == 429
    assert after.json()["error"]["type"] == "rate_limit_error"


def test_developer_gets_403_on_invoices(page, users):
    sign_in(page, users["developer"].email)
    response = page.goto("/invoices")
    assert response.status == 403
    assert "403" in page.locator("h1").inner_text()
