"""The demo's server: simulated providers on loopback in this process, `manage.py serve` in a child.

The simulated providers are the fake provider servers of simulators/, which
speak each provider's real wire format and validate what they receive, so the
demo exercises exactly the adapters the tests pin (docs/demo.md).
"""
from __future__ import annotations

import ctypes
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import deque

import click

from app import db

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPENAI_COMPATIBLE = ("openai", "mistral", "groq", "deepseek", "xai", "together", "fireworks")
REPLY = "Hello from Keyway's simulated provider. This answer never left your machine."


def simulated_providers() -> tuple[list, dict[str, str]]:
    """The fake provider servers of simulators, bound on loopback (not yet started), and the env pointing at them."""
    from simulators.openai import FakeOpenAI
    from simulators.server import Fault

    openai, azure = FakeOpenAI(reply=REPLY), FakeOpenAI(flavor="azure", reply=REPLY)
    env = {}
    for pid in OPENAI_COMPATIBLE:
        env[f"GATEWAY_{pid.upper()}_BASE_URL"] = openai.url + "/v1"
        env[f"GATEWAY_{pid.upper()}_SHARED_API_KEY"] = f"sk-demo-shared-{pid}-1,sk-demo-shared-{pid}-2"
    env.update(GATEWAY_AZURE_BASE_URL=azure.url, GATEWAY_AZURE_SHARED_API_KEY="sk-demo-shared-azure",
               GATEWAY_AZURE_SHARED_ENDPOINT="https://keyway-demo.openai.azure.com")
    openai.on_key("sk-demo-rate-limited", Fault("status", 429, headers={"retry-after": "1"}))
    openai.on_key("sk-demo-revoked", Fault("status", 401))
    fakes = [openai, azure]
    for provider, setup in NATIVE.items():
        module = importlib.import_module(f"simulators.{provider}")
        fake, settings = setup(module)
        fakes.append(fake)
        env.update(settings)
    for fake in fakes:
        fake.received = deque(maxlen=64)  # the fakes keep what they saw for tests; a long demo must not
    return fakes, env


# Native providers: each fake and the settings that point the gateway and its shared pool at it.
DEMO_TOKEN, DEMO_AKID, DEMO_SECRET = "ya29.keyway-demo", "AKIAKEYWAYDEMO000001", "keyway-demo-secret"


def _anthropic(module):
    fake = module.FakeAnthropic()
    return fake, {"GATEWAY_ANTHROPIC_BASE_URL": fake.url, "GATEWAY_ANTHROPIC_SHARED_API_KEY": "sk-ant-demo-shared"}


def _gemini(module):
    fake = module.FakeGemini()
    return fake, {"GATEWAY_GEMINI_BASE_URL": fake.url, "GATEWAY_GEMINI_SHARED_API_KEY": "AIza-demo-shared"}


def _vertex(module):
    fake = module.FakeVertex()
    fake.accept_token(DEMO_TOKEN)  # BYOK callers may send it as credentials.access_token too
    return fake, {"GATEWAY_VERTEX_BASE_URL": fake.url, "GATEWAY_VERTEX_TOKEN_URL": fake.token_url,
                  "GATEWAY_VERTEX_SHARED_PROJECT_ID": "keyway-demo", "GATEWAY_VERTEX_SHARED_REGION": "us-central1",
                  "GATEWAY_VERTEX_SHARED_ACCESS_TOKEN": DEMO_TOKEN}


def _bedrock(module):
    fake = module.FakeBedrock(region="us-east-1", reply=REPLY)
    fake.add_key(DEMO_AKID, DEMO_SECRET)  # the shared pool's key, and one BYOK callers may use
    return fake, {"GATEWAY_BEDROCK_BASE_URL": fake.url, "GATEWAY_BEDROCK_SHARED_ACCESS_KEY_ID": DEMO_AKID,
                  "GATEWAY_BEDROCK_SHARED_SECRET_ACCESS_KEY": DEMO_SECRET, "GATEWAY_BEDROCK_SHARED_REGION": "us-east-1"}


NATIVE = {"anthropic": _anthropic, "gemini": _gemini, "vertex": _vertex, "bedrock": _bedrock}


def serve(host: str, port: int, workers: int, url: str, journal: str | None, banner_for) -> None:
    """`manage.py serve` (gunicorn + gevent) in a child process, the simulated providers in this one."""
    _check_port_free(host, port)
    fakes, env = simulated_providers()
    env = {**os.environ, **env, "DATABASE_URL": url}
    if journal:
        env["METERING_JOURNAL_DIR"] = journal
    env.setdefault("SESSION_COOKIE_SECURE", "false")  # the demo is plain http on loopback
    command = [sys.executable, os.path.join(ROOT, "manage.py"), "serve", "--host", host, "--port", str(port),
               "--workers", str(workers)]
    db.get_engine().dispose()
    # The server is started before the fakes' threads, so forking it never copies a thread mid-lock.
    server = subprocess.Popen(command, env=env, cwd=ROOT, preexec_fn=_die_with_parent)
    for fake in fakes:
        fake.start()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
        _wait_healthy(base, server)
        providers = sorted(k[len("GATEWAY_"):-len("_BASE_URL")].lower() for k in env if k.endswith("_BASE_URL"))
        click.echo(banner_for(base, providers))
        server.wait()
        if server.returncode not in (0, -signal.SIGINT, -signal.SIGTERM):
            raise click.ClickException(f"the server exited with status {server.returncode}")
    except KeyboardInterrupt:
        click.echo("\nstopping the demo ...")
    finally:
        _stop(server)
        for fake in fakes:
            fake.stop()
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if the demo process dies without cleaning up (kill -9)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise click.ClickException(f"{host}:{port} is already in use; choose another port with --port") from None


def _wait_healthy(base: str, server) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never via a proxy
    deadline = time.monotonic() + 90
    while True:
        if server.poll() is not None:
            raise click.ClickException(f"the server exited (status {server.returncode}) before it answered")
        try:
            with opener.open(base + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise click.ClickException(f"the server did not answer {base}/healthz within 90 seconds")
        time.sleep(0.2)


def _stop(server) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=40)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
