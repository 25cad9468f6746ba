"""Test set-up: a migrated database per test (SQLite, or PostgreSQL with TEST_DATABASE_URL), fake providers."""
from __future__ import annotations

import decimal
import os
import shutil
import tempfile
import threading
import uuid
from typing import Any, Iterator

import pytest
import time_machine
from sqlalchemy import create_engine, text
from werkzeug.serving import make_server

from app import create_app, db
from app.billing.pricing import import_catalog, load_catalog, price_book
from app.gateway import auth
from app.migrate import upgrade
from simulators.openai import FakeOpenAI
from tests.clock import INSTANTS, NOON

PG_URL = os.environ.get("TEST_DATABASE_URL", "")


@pytest.fixture(autouse=True)
def _trap_float_in_money():
    """A float sneaking into Decimal arithmetic raises instead of rounding silently."""
    ctx = decimal.getcontext()
    ctx.traps[decimal.FloatOperation] = True
    yield
    ctx.traps[decimal.FloatOperation] = False


# -- the clock -------------------------------------------------------------------
@pytest.fixture(params=list(INSTANTS.values()), ids=list(INSTANTS))
def instant(request):
    """Take this fixture to run a test at each boundary instant, the clock stopped there (see tests/clock.py)."""
    return request.param


@pytest.fixture(autouse=True)
def _clock(request):
    """Every test runs at a fixed instant, whatever today's date: see tests/clock.py."""
    if request.node.get_closest_marker("real_clock"):
        yield None
        return
    if "instant" in request.fixturenames:
        destination, tick = request.getfixturevalue("instant"), False
    else:
        destination, tick = NOON, True
    with time_machine.travel(destination, tick=tick) as traveller:
        yield traveller


# -- database --------------------------------------------------------------------
def _worker_database(url: str) -> str:
    """Under pytest-xdist each worker gets its own PostgreSQL database, created beside the given one."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    base, _, name = url.rpartition("/")
    own = f"{name}_{worker}"
    admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{own}"'))
        conn.execute(text(f'CREATE DATABASE "{own}"'))
    admin.dispose()
    return f"{base}/{own}"


@pytest.fixture(scope="session")
def database_template() -> Iterator[str]:
    if PG_URL:
        url = _worker_database(db.normalize_url(PG_URL))
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
        upgrade(url)
        yield url
        return
    folder = tempfile.mkdtemp(prefix="keyway-test-")
    path = os.path.join(folder, "template.db")
    upgrade(f"sqlite:///{path}")
    yield path
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def database_url(database_template, tmp_path) -> str:
    if PG_URL:
        engine = create_engine(database_template)
        with engine.begin() as conn:
            tables = conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            )).scalars().all()
            # TRUNCATE does not fire the row triggers that guard finalized invoices.
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        engine.dispose()
        return database_template
    path = tmp_path / "keyway.db"
    shutil.copy(database_template, path)
    return f"sqlite:///{path}"


# -- fake providers ----------------------------------------------------------------
@pytest.fixture(scope="session")
def _fake_openai_server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def _fake_azure_server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(flavor="azure").start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_openai(_fake_openai_server) -> FakeOpenAI:
    _fake_openai_server.reset()
    return _fake_openai_server


@pytest.fixture
def fake_azure(_fake_azure_server) -> FakeOpenAI:
    _fake_azure_server.reset()
    return _fake_azure_server


SHARED_OPENAI_KEY = "sk-shared-pool-key-0001"


def base_config(database_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "TESTING": True,
        "INSTANCE_PATH": tempfile.mkdtemp(prefix="keyway-instance-"),
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret",
        "SESSION_COOKIE_SECURE": False,
        "LOG_LEVEL": "DEBUG",
        "UPSTREAM_CONNECT_TIMEOUT": 2.0,
        "UPSTREAM_READ_TIMEOUT": 2.0,
        "UPSTREAM_ATTEMPT_DEADLINE": 5.0,
        "POLICY_CACHE_SECONDS": 0.0,
        **extra,
    }


@pytest.fixture
def app_config(database_url, fake_openai, fake_azure) -> dict[str, Any]:
    """Override in a test module to add settings; the app fixture builds from it."""
    return base_config(
        database_url,
        GATEWAY_OPENAI_BASE_URL=fake_openai.url + "/v1",
        GATEWAY_OPENAI_SHARED_API_KEY=SHARED_OPENAI_KEY,
        GATEWAY_MISTRAL_BASE_URL=fake_openai.url + "/v1",
        GATEWAY_MISTRAL_SHARED_API_KEY="mistral-shared-key",
        GATEWAY_AZURE_BASE_URL=fake_azure.url,
        GATEWAY_AZURE_ALLOWED_HOSTS="*.openai.azure.com,*.cognitiveservices.azure.com",
    )


@pytest.fixture
def app(app_config):
    application = create_app(app_config)
    auth.forget_cache()
    price_book().invalidate()
    with db.session_scope() as session:
        import_catalog(session, load_catalog())
    yield application
    db.session.remove()
    db.get_engine().dispose()


@pytest.fixture
def client(app):
    return app.test_client()


class LiveServer:
    def __init__(self, app):
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def live_server(app) -> Iterator[LiveServer]:
    server = LiveServer(app)
    yield server
    server.stop()


# -- organizations and keys ------------------------------------------------------------
@pytest.fixture
def org(app):
    from tests.factories import OrganizationFactory

    return OrganizationFactory()


@pytest.fixture
def gateway_key(org) -> str:
    from tests.factories import issue_key

    return issue_key(org)


def unique(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
