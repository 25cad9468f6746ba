"""The canary sweep: prove a provider credential reached no sink — whole, in part (any 8 characters), or hashed."""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Iterable

from sqlalchemy import inspect, text

from app import db


def pieces(canary: str, size: int = 8) -> set[str]:
    """The canary, every 8-character piece of it, and its common hashes."""
    found = {canary[i:i + size] for i in range(0, len(canary) - size + 1)}
    found.add(canary)
    for algo in ("sha256", "sha1", "md5"):
        found.add(hashlib.new(algo, canary.encode()).hexdigest())
    return found


def hits(haystack: str, canary: str) -> list[str]:
    return sorted(p for p in pieces(canary) if p in haystack)


def database_text() -> str:
    """Every value of every column of every table, as text."""
    engine = db.get_engine()
    parts: list[str] = []
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                parts.extend(f"{table}:{value!s}" for value in row)
    return "\n".join(parts)


def files_text(folder: str) -> str:
    parts: list[str] = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                parts.append(fh.read().decode("utf-8", errors="replace"))
    return "\n".join(parts)


class LogCapture(logging.Handler):
    """Every record at every level from every logger, formatted as a real handler would write it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def __enter__(self) -> "LogCapture":
        root = logging.getLogger()
        self._old_level = root.level
        root.setLevel(logging.DEBUG)
        root.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        root.setLevel(self._old_level)

    def text(self) -> str:
        return "\n".join(self.lines)


def assert_nowhere(canary: str, *, logs: LogCapture, responses: Iterable[str], instance_path: str) -> None:
    """Zero hits in the database, the logs, the responses (bodies and headers) and instance/ files."""
    sinks = {
        "database": database_text(),
        "logs": logs.text(),
        "responses": "\n".join(responses),
        "files": files_text(instance_path),
    }
    problems = {name: hits(content, canary) for name, content in sinks.items()}
    problems = {k: v for k, v in problems.items() if v}
    assert not problems, f"credential material leaked into: {problems}"
    assert logs.lines, "the log capture saw nothing: the sweep would be vacuous"
