"""`manage.py audit keys`: canary keys through a real server, then every sink swept; hits by location, never by value."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from app.audit import canaries, sweep
from tests.test_cli import ROOT, rows

RANDOM = "Q7vT2mX9pLk4Wz8RbN3cYh6JdF1sGa5E"
CANARY = "sk-" + RANDOM


# -- the finder ---------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(start=st.integers(0, len(RANDOM) - 8), length=st.integers(8, 20),
       before=st.text(max_size=30), after=st.text(max_size=30))
def test_any_piece_of_eight_or_more_random_characters_is_found(start, length, before, after):
    """Canaries are random letters and digits behind fixed prefixes: any 8 of the random characters give it away."""
    piece = RANDOM[start:start + length]
    finder = sweep.Finder([("openai.api_key (plain)", CANARY)])
    assert finder.find(f"{before} {piece} {after}") == ["openai.api_key (plain)"]


def test_hashes_of_the_whole_canary_are_found_and_unrelated_text_is_not():
    finder = sweep.Finder([("k", CANARY)])
    for algorithm in ("sha256", "sha1", "md5"):
        assert finder.find("digest=" + hashlib.new(algorithm, CANARY.encode()).hexdigest()) == ["k"]
    assert finder.find("sk-" + "Q7vT2mX" + " and other text 0123456789abcdef") == []


def test_pieces_shared_by_several_canaries_or_public_text_are_not_looked_for():
    """A fixed prefix (an STS token's, the ASN.1 structure of every RSA key) is not a leak of any one probe."""
    prefix = "IQoJb3JpZ2luX2Vj"
    finder = sweep.Finder([("a", prefix + "AAAAbbbbCCCCdddd"), ("b", prefix + "EEEEffffGGGGhhhh")],
                          public=["structure MIIEvQIBADANBgkq"])
    assert finder.find("token " + prefix) == []
    assert finder.find("tail EEEEffffGGGG") == ["b"]
    only = sweep.Finder([("c", "MIIEvQIBADANBgkq" + "ZZZZyyyyXXXXwwww")], public=["MIIEvQIBADANBgkq"])
    assert only.find("MIIEvQIBADANBgkq") == []


def test_database_hits_name_table_column_and_row_never_the_value(app, org):
    from app import db
    from app.models import AuditLog

    with db.session_scope() as session:
        row = AuditLog(org_id=org.id, action="oops", summary=f"key tail {CANARY[-12:]}")
        session.add(row)
        session.flush()
        row_id = row.id
    hits = list(sweep.sweep_database(db.get_engine(), sweep.Finder([("openai.api_key (plain)", CANARY)])))
    assert [str(h) for h in hits] == [f"database: audit_logs.summary [id={row_id}]: a piece of openai.api_key (plain)"]


def test_file_hits_name_the_file_and_line(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("first line\nsecond line\nAuthorization: Bearer " + CANARY + "\nlast\n")
    hits = list(sweep.sweep_file(str(log), sweep.Finder([("k", CANARY)]), "log file"))
    assert [h.location for h in hits] == [f"{log}:3"]
    assert CANARY[3:11] not in str(hits[0])


# -- end to end ---------------------------------------------------------------------------------------
# An operator's mistake the audit must catch: something in the server process (here a Python audit hook, as
# a traffic-dumping debug tool would be) writes every upstream request's headers into a log file.
LEAKY_SITECUSTOMIZE = '''
import os, sys

def _dump(event, args):
    if event == "http.client.send" and "serve" in sys.argv:
        with open(os.environ["KEYWAY_TEST_LEAK_FILE"], "ab") as fh:
            fh.write(bytes(args[1]) + b"\\n")

if os.environ.get("KEYWAY_TEST_LEAK_FILE"):
    sys.addaudithook(_dump)
'''


HEADERS = r"(?i)(authorization|api-key|x-api-key|x-goog-api-key|x-amz-security-token): "


def audit(database_url: str, tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL" and not k.startswith("GATEWAY_")}
    environ.update(DATABASE_URL=database_url, METERING_JOURNAL_DIR=str(tmp_path / "journal"), LOG_LEVEL="INFO",
                   **env)
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), "audit", "keys", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def test_audit_finds_a_key_an_operator_leaked_into_a_log_file_and_names_only_its_location(database_url, tmp_path):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(LEAKY_SITECUSTOMIZE)
    logs = tmp_path / "logs"
    logs.mkdir()
    leak = logs / "upstream-dump.log"
    (logs / "quiet.log").write_text("nothing to see\n")
    result = audit(database_url, tmp_path, "--log", str(logs / "*.log"),
                   PYTHONPATH=str(hooks), KEYWAY_TEST_LEAK_FILE=str(leak))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    hits = [line for line in result.stdout.splitlines() if line.startswith("hit  ")]
    assert hits and all(line.startswith(f"hit  log file: {leak}:") for line in hits), output
    dumped = leak.read_bytes().decode("latin-1").splitlines()
    for line in hits:  # each location points at a line that really carries a key
        number = int(re.match(rf"hit  log file: {re.escape(str(leak))}:(\d+):", line)[1])
        assert re.match(HEADERS, dumped[number - 1]), line
    assert any("a piece of openai.api_key (plain)" in line for line in hits)
    assert any("a piece of bedrock.aws_session_token (plain)" in line for line in hits)
    assert any("a piece of bedrock.aws_session_token (sent with bedrock.aws_access_key_id (plain))" in line
               for line in hits)
    keys = [line.split(": ", 1)[1] for line in dumped if re.match(HEADERS, line)]
    assert keys and not any(key[-16:] in output for key in keys), "the report repeated a leaked key"
    assert re.search(r"\d+ hits: provider keys were found where they must never be", result.stderr)


def test_audit_of_a_clean_deployment_prints_0_hits_and_revokes_its_key(database_url, tmp_path):
    result = audit(database_url, tmp_path, "--provider", "openai", "--provider", "bedrock",
                   "--server-log", str(tmp_path / "server.log"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "0 hits"
    assert "sent " in result.stdout and "2 providers: bedrock, openai" in result.stdout
    assert (tmp_path / "server.log").stat().st_size > 0  # the server's own output was there to be swept
    keys = rows(database_url, "SELECT k.revoked_at FROM api_keys k JOIN organizations o ON o.id = k.org_id "
                              "WHERE o.name = 'Keyway key audit'")
    assert keys and all(revoked is not None for (revoked,) in keys)
    recorded = rows(database_url, "SELECT COUNT(*) FROM usage_records WHERE byok_label = :label",
                    label=canaries.AUDIT_LABEL)[0][0]
    assert recorded > 0  # the journal drained into the database before it was swept


def test_a_log_pattern_that_matches_nothing_is_an_error_not_a_clean_bill(database_url, tmp_path):
    result = audit(database_url, tmp_path, "--log", str(tmp_path / "missing-*.log"))
    assert result.returncode == 1
    assert "matches no file" in result.stderr and "Traceback" not in result.stderr
