"""The production install: a fresh venv with `pip install .` (no extras) serves a chat request on PostgreSQL.

The dev environment has every dev extra installed, so it hides a dependency that
only arrives through one of them; this test installs exactly what pyproject.toml
declares, as an operator would, and serves from it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request

import orjson
import pytest

from tests.conftest import PG_URL
from tests.test_cli import ROOT, free_port, rows

pytestmark = [pytest.mark.install,
              pytest.mark.skipif(not PG_URL, reason="production runs on PostgreSQL: this runs in the PostgreSQL half")]

# What a clone of the repository holds, without this checkout's own environment and artefacts.
NOT_SHIPPED = shutil.ignore_patterns(".venv", ".git", "instance", "build", "*.egg-info", "__pycache__",
                                     ".pytest_cache", "test-artifacts", ".env")


def run(*command: str, env: dict[str, str], cwd, timeout: float = 600) -> str:
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{' '.join(command[:4])} … exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture
def installed(tmp_path):
    """A copy of the source and a fresh venv holding `pip install .` of it: nothing from this checkout's .venv."""
    source = tmp_path / "keyway"
    shutil.copytree(ROOT, source, ignore=NOT_SHIPPED)
    venv = tmp_path / "venv"
    clean = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    run(sys.executable, "-m", "venv", str(venv), env=clean, cwd=tmp_path)
    run(str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", ".",
        env=clean, cwd=source)
    return source, venv / "bin" / "python", clean


def test_pip_install_then_serve_answers_a_chat_request(installed, database_url, tmp_path, fake_openai):
    source, python, clean = installed
    env = {k: v for k, v in clean.items() if k != "TEST_DATABASE_URL" and not k.startswith("GATEWAY_")}
    env.update(DATABASE_URL=database_url, METERING_JOURNAL_DIR=str(tmp_path / "journal"), LOG_LEVEL="WARNING",
               SECRET_KEY="install-test", GATEWAY_OPENAI_BASE_URL=fake_openai.url + "/v1")
    manage = [str(python), str(source / "manage.py")]
    assert "database is at the latest revision" in run(*manage, "db", "upgrade", env=env, cwd=source)
    slug = run(*manage, "orgs", "create", "Install Test", env=env, cwd=source).strip().splitlines()[-1]
    key = run(*manage, "keys", "create", "--org", slug, env=env, cwd=source).strip().splitlines()[-1]
    port = free_port()
    server = subprocess.Popen([*manage, "serve", "--port", str(port), "--workers", "1"], env=env, cwd=source,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_healthy(base, server)
        request = urllib.request.Request(base + "/v1/chat/completions", method="POST", headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json"}, data=orjson.dumps({
                "model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}],
                "byok_conf": {"provider": "openai", "credentials": {"api_key": "sk-install-test-0001"}}}))
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=60) as response:
            status, body = response.status, orjson.loads(response.read())
        assert status == 200 and body["choices"][0]["message"]["content"]
        assert fake_openai.received[-1].headers["authorization"] == "Bearer sk-install-test-0001"
    finally:
        server.terminate()
        output = server.communicate(timeout=60)[0].decode(errors="replace")
    assert server.returncode == 0, output
    assert "Traceback" not in output, output
    assert rows(database_url, "SELECT COUNT(*) FROM usage_records WHERE status = 'ok'")[0][0] == 1


def _wait_until_healthy(base: str, server: subprocess.Popen) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for _ in range(600):  # a bounded wait for the worker to boot, not a timing assertion
        if server.poll() is not None:
            raise AssertionError(f"`manage.py serve` from the fresh install exited {server.returncode}:\n"
                                 + server.communicate()[0].decode(errors="replace")[-3000:])
        try:
            with opener.open(base + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("`manage.py serve` from the fresh install never answered /healthz")
