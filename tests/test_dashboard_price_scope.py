"""The price catalog is shared: PRICE_ADMIN_ORGS limits who may change it on a multi-tenant installation."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app import db
from app.models import Price
from tests.dashboard_helpers import login, other_org, other_users, post, users  # noqa: F401  (fixtures)
from tests.test_dashboard_admin import _price_form


@pytest.fixture
def app_config(app_config):
    return {**app_config, "PRICE_ADMIN_ORGS": "operator"}


def versions() -> int:
    db.session.remove()
    return db.session.scalar(select(func.count(Price.id)))


def test_only_the_operators_admins_change_prices(org, users, other_org, other_users, login):  # noqa: F811
    with db.session_scope() as session:
        session.get(type(other_org), other_org.id).slug = "operator"
    before = versions()
    tenant = login(users["admin"])
    page = tenant.get("/admin/prices").get_data(as_text=True)
    assert 'id="price-read-only"' in page and 'id="price-form"' not in page
    assert post(tenant, "/admin/prices", _price_form()).status_code == 403
    assert versions() == before

    operator = login(other_users["admin"])
    assert 'id="price-form"' in operator.get("/admin/prices").get_data(as_text=True)
    assert post(operator, "/admin/prices", _price_form()).status_code == 302
    assert versions() == before + 1
