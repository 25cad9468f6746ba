"""`manage.py audit keys`: prove on this deployment that provider keys are never persisted.

It starts the built-in simulators and a `manage.py serve` child with this
deployment's configuration (database, journal, instance folder), its provider
base URLs pointed at the simulators and LOG_LEVEL=DEBUG; sends canary BYOK keys
for every provider (mangled variants included) in an audit organization of its
own; stops the server (the journal drains); then sweeps the database, the
journal, the instance folder, the server's output, the answers and the log
files named with --log. It prints each hit's location, never the key, and exits
non-zero on any hit. docs/security.md describes it for operators.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Iterator

import click
import orjson
from sqlalchemy import update

from app import db
from app.audit import canaries, sweep, traffic


def register(cli: click.Group) -> None:
    cli.add_command(audit_group)


@click.group("audit")
def audit_group() -> None:
    """Checks an operator can run against this deployment."""


@audit_group.command("keys")
@click.option("--log", "log_patterns", multiple=True, metavar="PATH",
              help="A log file to sweep as well (globs allowed; repeatable).")
@click.option("--provider", "providers", multiple=True, type=click.Choice(sorted(canaries.REGISTRY)),
              help="Audit only these providers (repeatable; default: every provider).")
@click.option("--server-log", default=None, metavar="PATH",
              help="Keep the audit server's output in PATH (default: a temporary file, deleted afterwards).")
def audit_keys(log_patterns: tuple[str, ...], providers: tuple[str, ...], server_log: str | None) -> None:
    """Send canary BYOK keys through a Keyway server, then sweep every place a key could land."""
    from flask import current_app

    pem = canaries.new_private_key_pem()
    probes = [p for p in canaries.probes(pem) if not providers or p.provider in providers]
    run = AuditRun(current_app.config, current_app.instance_path, probes)
    with tempfile.TemporaryDirectory(prefix="keyway-audit-") as scratch:
        output = server_log or os.path.join(scratch, "server.log")
        try:
            run.serve_and_send(pem, output)
        except click.ClickException as exc:
            hint = "" if server_log else "; run it again with --server-log PATH to keep the server's output"
            raise click.ClickException(exc.format_message() + hint) from None
        # Globs are expanded now: the server may have created or rotated log files while it served.
        files, unmatched = sweep.log_files(log_patterns)
        if unmatched:
            raise click.ClickException(f"--log {unmatched[0]} matches no file")
        hits = list(run.sweep_sinks(output, files))
    click.echo(run.summary(files))
    if hits:
        for hit in hits:
            click.echo(f"hit  {hit}")
        raise click.ClickException(f"{len(hits)} hits: provider keys were found where they must never be")
    click.echo("0 hits")


@dataclass
class AuditRun:
    config: Any
    instance_path: str
    probes: list[canaries.Probe]
    answers: list[tuple[canaries.Probe, str, traffic.Answer]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    org_slug: str = ""

    def serve_and_send(self, pem: str, output: str) -> None:
        """The audit organization and key, the simulators and the server; every probe sent; the key revoked."""
        from app.demo_server import _stop, _wait_healthy

        org_id, key = self._audit_key()
        fakes, settings = traffic.simulators(self.probes, pem)
        port = _free_port()
        db.get_engine().dispose()  # no pooled connection crosses into the child
        with open(output, "ab") as out:
            server = _start_server(port, self.config["DATABASE_URL"], settings, out)
        try:
            for fake in traffic.servers(fakes):
                fake.start()
            base = f"http://127.0.0.1:{port}"
            _wait_healthy(base, server)
            self.answers = traffic.exercise(self.probes, fakes, _sender(base, key))
        finally:
            _stop(server)  # a graceful stop: the usage journal drains into the database
            for fake in traffic.servers(fakes):
                fake.stop()
            self._revoke(org_id)

    def sweep_sinks(self, output: str, files: list[str]) -> Iterator[sweep.Hit]:
        # A second, unused key shows which pieces every RSA key shares (its ASN.1 structure): those are not secret.
        finder = sweep.Finder((named for p in self.probes for named in p.named_secrets()),
                              public=[canaries.new_private_key_pem()])
        yield from sweep.sweep_database(db.get_engine(), finder)
        swept: set[str] = set()
        for sink, folder in (("journal", self.journal_dir()), ("instance folder", self.instance_path)):
            for path in sweep.files_under(folder, swept):
                yield from sweep.sweep_file(path, finder, sink)
        self.counts["journal and instance files"] = len(swept)
        yield from sweep.sweep_file(output, finder, "server log")
        for path in files:
            yield from sweep.sweep_file(path, finder, "log file")
        for probe, scenario, answer in self.answers:
            yield from sweep.sweep_text(traffic.answer_text(answer), finder, "response",
                                        f"the answer to {probe.name}, {scenario} (status {answer[0]})")

    def journal_dir(self) -> str:
        directory = self.config["METERING_JOURNAL_DIR"]
        if not os.path.isabs(directory):  # resolved as the journal writer resolves it
            directory = os.path.join(self.instance_path, directory.removeprefix("instance/"))
        return directory

    def summary(self, files: list[str]) -> str:
        statuses: dict[int, int] = {}
        for _, _, (status, _, _) in self.answers:
            statuses[status] = statuses.get(status, 0) + 1
        providers = sorted({p.provider for p in self.probes})
        return "\n".join([
            f"sent {len(self.answers)} requests with {len(self.probes)} canary keys "
            f"({len(providers)} providers: {', '.join(providers)}; plain and {len(canaries.MANGLES) - 1} manglings)",
            "answers: " + ", ".join(f"{n}× {s}" for s, n in sorted(statuses.items())),
            f"audit organization: {self.org_slug} (its key is revoked; its usage records stay, BYOK at $0)",
            f"swept: the database (every table and column), {self.counts.get('journal and instance files', 0)} "
            f"journal and instance files, the server's output, {len(files)} log files, every answer",
        ])

    def _audit_key(self) -> tuple[int, str]:
        from app.cli import create_key, create_org

        with db.session_scope() as session:
            org = create_org(session, "Keyway key audit")
            _, key = create_key(session, org.id, "manage.py audit keys")
            self.org_slug = org.slug
            return org.id, key

    def _revoke(self, org_id: int) -> None:
        from app.models import ApiKey
        from app.types import utcnow

        with db.session_scope() as session:
            session.execute(update(ApiKey).where(ApiKey.org_id == org_id, ApiKey.revoked_at.is_(None))
                            .values(revoked_at=utcnow()))


def _start_server(port: int, database_url: str, settings: dict[str, str], out) -> subprocess.Popen:
    """`manage.py serve` with this deployment's settings, but every provider pointed at the simulators."""
    from app.demo_server import ROOT, _die_with_parent

    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(settings, DATABASE_URL=database_url, LOG_LEVEL="DEBUG",
               GATEWAY_AZURE_ALLOWED_HOSTS=canaries.AZURE_ENDPOINT.removeprefix("https://"))
    command = [sys.executable, os.path.join(ROOT, "manage.py"), "serve", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent)


def _sender(base: str, key: str) -> traffic.Send:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never via a proxy

    def send(body: dict[str, Any]) -> traffic.Answer:
        request = urllib.request.Request(base + "/v1/chat/completions", data=orjson.dumps(body), method="POST",
                                         headers={"Authorization": f"Bearer {key}",
                                                  "Content-Type": "application/json"})
        try:
            with opener.open(request, timeout=60) as response:
                return response.status, dict(response.headers.items()), response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers.items()), error.read().decode("utf-8", "replace")

    return send


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
