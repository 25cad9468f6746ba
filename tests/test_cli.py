"""manage.py as scripts use it: real subprocesses, the exact output contract, one-line errors, and /healthz."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, inspect, text

from app import create_app
from tests.conftest import base_config

ROOT = Path(__file__).resolve().parents[1]


def manage(db_url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}
    env.update(DATABASE_URL=db_url, LOG_LEVEL="WARNING")
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def last_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout.strip().splitlines()[-1]


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    """Non-zero exit, exactly one line on stderr that names the problem, never a traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]
    return lines[0]


def rows(db_url: str, sql: str, **params) -> list:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def database_dump(db_url: str) -> str:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return "\n".join(str(value) for table in inspect(conn).get_table_names()
                             for row in conn.execute(text(f'SELECT * FROM "{table}"')) for value in row)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def cli_db(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'keyway.db'}"
    result = manage(url, "db", "upgrade")
    assert last_line(result) == "database is at the latest revision"
    assert "price catalog loaded:" in result.stdout
    return url


@pytest.fixture(scope="module")
def org_slug(cli_db) -> str:
    return last_line(manage(cli_db, "orgs", "create", "Initech Labs"))


# -- db upgrade -------------------------------------------------------------------------
def test_db_upgrade_is_idempotent_and_loads_the_catalog_once(cli_db):
    prices = rows(cli_db, "SELECT COUNT(*) FROM prices")[0][0]
    again = manage(cli_db, "db", "upgrade")
    assert last_line(again) == "database is at the latest revision"
    assert "price catalog loaded" not in again.stdout
    assert prices > 0 and rows(cli_db, "SELECT COUNT(*) FROM prices")[0][0] == prices
    assert rows(cli_db, "SELECT version_num FROM alembic_version")


# -- orgs -------------------------------------------------------------------------------
def test_orgs_create_prints_the_slug_as_the_last_line(cli_db):
    first = last_line(manage(cli_db, "orgs", "create", "Umbrella Corp, Ltd."))
    second = last_line(manage(cli_db, "orgs", "create", "Umbrella Corp, Ltd."))
    assert (first, second) == ("umbrella-corp-ltd", "umbrella-corp-ltd-2")
    names = rows(cli_db, "SELECT name FROM organizations WHERE slug IN ('umbrella-corp-ltd', 'umbrella-corp-ltd-2')")
    assert [n for (n,) in names] == ["Umbrella Corp, Ltd.", "Umbrella Corp, Ltd."]


def test_orgs_create_with_an_empty_name_is_one_line_error(cli_db):
    assert_one_line_error(manage(cli_db, "orgs", "create", "   "), "name")


# -- users ------------------------------------------------------------------------------
def test_users_create_stores_a_password_hash_not_the_password(cli_db, org_slug):
    result = manage(cli_db, "users", "create", "--org", org_slug, "--email", "Finance@Initech.example",
                    "--role", "finance", "--password", "correct horse battery")
    assert last_line(result) == f"created finance finance@initech.example in {org_slug}"
    [(role, password_hash)] = rows(cli_db, "SELECT role, password_hash FROM users WHERE email = :e",
                                   e="finance@initech.example")
    assert role == "finance"
    assert "correct horse battery" not in password_hash and password_hash.startswith("scrypt:")


@pytest.fixture(scope="module")
def existing_user(cli_db, org_slug) -> str:
    last_line(manage(cli_db, "users", "create", "--org", org_slug, "--email", "dup@initech.example", "--role",
                     "admin", "--password", "long enough password"))
    return "dup@initech.example"


@pytest.mark.parametrize("args, words", [
    (["--email", "dup@initech.example", "--role", "admin"], ["already exists"]),
    (["--email", "DUP@initech.example", "--role", "developer"], ["already exists"]),
    (["--email", "new@initech.example", "--role", "owner"], ["--role", "owner"]),
    (["--email", "not-an-email", "--role", "admin"], ["not an email"]),
], ids=["duplicate-email", "duplicate-email-other-case", "unknown-role", "bad-email"])
def test_users_create_bad_input_is_one_line_error(cli_db, org_slug, existing_user, args, words):
    before = rows(cli_db, "SELECT COUNT(*) FROM users")[0][0]
    result = manage(cli_db, "users", "create", "--org", org_slug, *args, "--password", "long enough password")
    assert_one_line_error(result, *words)
    assert rows(cli_db, "SELECT COUNT(*) FROM users")[0][0] == before


def test_users_create_in_an_unknown_org_is_one_line_error(cli_db):
    result = manage(cli_db, "users", "create", "--org", "no-such-org", "--email", "a@b.example", "--role", "admin",
                    "--password", "long enough password")
    assert_one_line_error(result, "no-such-org")


# -- keys -------------------------------------------------------------------------------
def test_keys_create_prints_the_key_last_and_stores_only_hash_and_prefix(cli_db, org_slug):
    key = last_line(manage(cli_db, "keys", "create", "--org", org_slug, "--name", "ci"))
    assert key.startswith("kw-") and len(key) > 40
    [(prefix, key_hash, scope)] = rows(cli_db, "SELECT prefix, key_hash, scope FROM api_keys WHERE name = 'ci'")
    assert key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key.startswith(prefix) and len(prefix) < 16 and scope == "inference"
    dump = database_dump(cli_db)
    # Nothing beyond the visible prefix is stored: no 8-character window that reaches past it.
    leaked = [key[i:i + 8] for i in range(len(key) - 7) if i + 8 > len(prefix) and key[i:i + 8] in dump]
    assert not leaked


def test_a_printed_key_authenticates_and_a_wrong_one_does_not(cli_db, org_slug):
    key = last_line(manage(cli_db, "keys", "create", "--org", org_slug))
    app = create_app(base_config(cli_db))
    client = app.test_client()
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {key[:-2]}xx"}).status_code == 401


def test_keys_create_management_scope(cli_db, org_slug):
    key = last_line(manage(cli_db, "keys", "create", "--org", org_slug, "--name", "ops", "--scope", "management"))
    assert rows(cli_db, "SELECT scope FROM api_keys WHERE key_hash = :h",
                h=hashlib.sha256(key.encode()).hexdigest()) == [("management",)]


@pytest.mark.parametrize("args, words", [
    (["--org", "no-such-org"], ["no-such-org"]),
    (["--org", "{org}", "--scope", "root"], ["--scope", "root"]),
], ids=["unknown-org", "unknown-scope"])
def test_keys_create_bad_input_is_one_line_error(cli_db, org_slug, args, words):
    before = rows(cli_db, "SELECT COUNT(*) FROM api_keys")[0][0]
    assert_one_line_error(manage(cli_db, "keys", "create", *(a.format(org=org_slug) for a in args)), *words)
    assert rows(cli_db, "SELECT COUNT(*) FROM api_keys")[0][0] == before


# -- credits ----------------------------------------------------------------------------
def test_credits_grant_adds_to_the_ledger_and_prints_the_balance(cli_db):
    slug = last_line(manage(cli_db, "orgs", "create", "Hooli"))
    first = last_line(manage(cli_db, "credits", "grant", "--org", slug, "--amount", "25.00", "--note", "welcome"))
    second = last_line(manage(cli_db, "credits", "grant", "--org", slug, "--amount", "0.5"))
    assert first == f"granted $25.00 to {slug}; balance $25.00"
    assert second == f"granted $0.5 to {slug}; balance $25.50"
    app = create_app(base_config(cli_db))  # read through the Money type: exact Decimals on any backend
    with app.app_context():
        from app import db
        from app.billing.ledger import balance_of, ledger_sum
        from app.models import Organization

        with db.session_scope() as session:
            org_id = session.query(Organization.id).filter_by(slug=slug).scalar()
            balance, reserved = balance_of(session, org_id)
            assert balance == ledger_sum(session, org_id) == Decimal("25.50") and reserved == 0
        db.get_engine().dispose()


@pytest.mark.parametrize("amount, words", [
    ("abc", ["--amount", "not a number"]),
    ("-5", ["--amount", "greater than zero"]),
    ("0", ["--amount", "greater than zero"]),
    ("NaN", ["--amount"]),
    ("0.00000000001", ["--amount", "decimal places"]),
    ("1e400", ["--amount"]),
    ("99999999999999", ["--amount"]),
])
def test_credits_grant_bad_amount_is_one_line_error(cli_db, org_slug, amount, words):
    before = rows(cli_db, "SELECT COUNT(*) FROM credit_entries")[0][0]
    assert_one_line_error(manage(cli_db, "credits", "grant", "--org", org_slug, "--amount", amount), *words)
    assert rows(cli_db, "SELECT COUNT(*) FROM credit_entries")[0][0] == before


def test_credits_grant_to_an_unknown_org_is_one_line_error(cli_db):
    assert_one_line_error(manage(cli_db, "credits", "grant", "--org", "nobody", "--amount", "5"), "nobody")


def test_an_unreachable_database_is_one_line_error():
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    assert_one_line_error(manage(url, "orgs", "create", "Nowhere"), "database")


# -- serve and /healthz -------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_runs_gunicorn_that_answers_healthz(cli_db, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}
    env.update(DATABASE_URL=cli_db, METERING_JOURNAL_DIR=str(tmp_path / "journal"))
    server = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "serve", "--port", str(port), "--workers", "1"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    try:
        answer = None
        for _ in range(300):  # a bounded wait for the server to come up, not a timing assertion
            if server.poll() is not None:
                break
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except (requests.ConnectionError, requests.Timeout):  # not up yet, or a worker still booting
                time.sleep(0.1)
        assert answer is not None, server.communicate(timeout=10)[0]
        assert answer.status_code == 200 and answer.json()["status"] == "ok"
        assert answer.headers["Server"].startswith("gunicorn")
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_healthz_is_200_when_the_database_answers(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok", "database": "ok"}


def test_healthz_is_503_until_the_database_is_reachable(tmp_path):
    folder = tmp_path / "not-yet"
    app = create_app(base_config(f"sqlite:///{folder / 'keyway.db'}"))
    client = app.test_client()
    down = client.get("/healthz")
    assert down.status_code == 503 and down.get_json()["database"] == "unreachable"
    folder.mkdir()
    assert client.get("/healthz").status_code == 200


def test_healthz_is_503_when_postgres_is_down():
    app = create_app(base_config(f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"))
    response = app.test_client().get("/healthz")
    assert response.status_code == 503 and "Traceback" not in response.get_data(as_text=True)
