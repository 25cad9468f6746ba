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


class Canaries:
    """Many canaries searched at once, in one pass over the text: every 8-character piece of each, and its hashes."""

    def __init__(self, named: dict[str, str], size: int = 8):
        self.size = size
        self._index: dict[str, list[tuple[str, str]]] = {}
        for name, canary in named.items():
            for piece in pieces(canary, size):
                self._index.setdefault(piece[:size], []).append((name, piece))

    def found_in(self, haystack: str) -> set[str]:
        """The names of the canaries of which `haystack` holds a piece."""
        found: set[str] = set()
        index, size = self._index, self.size
        for i in range(len(haystack) - size + 1):
            for name, piece in index.get(haystack[i:i + size], ()):
                if haystack.startswith(piece, i):
                    found.add(name)
        return found


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
    """Every record at every level from every logger, formatted as a real handler would write it.

    Every logger is lowered to DEBUG while it captures, the quiet third-party ones
    included: what the app's logging set-up lets through at DEBUG is what is swept.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def __enter__(self) -> "LogCapture":
        root = logging.getLogger()
        self._levels = {root: root.level}
        self._attached = [root]
        for logger in list(logging.Logger.manager.loggerDict.values()):
            if isinstance(logger, logging.Logger):
                self._levels[logger] = logger.level
                if not logger.propagate:  # its records never reach the root's handlers
                    self._attached.append(logger)
        for logger in self._levels:
            logger.setLevel(logging.DEBUG)
        for logger in self._attached:
            logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        for logger in self._attached:
            logger.removeHandler(self)
        for logger, level in self._levels.items():
            logger.setLevel(level)

    def text(self) -> str:
        return "\n".join(self.lines)


def assert_nowhere(canary: str, *, logs: LogCapture, responses: Iterable[str], instance_path: str) -> None:
    """Zero hits in the database, the logs, the responses (bodies and headers) and instance/ files."""
    assert_none_anywhere({"canary": canary}, logs=logs, responses=responses, instance_path=instance_path)


def assert_none_anywhere(named: dict[str, str], *, logs: LogCapture, responses: Iterable[str], instance_path: str,
                         journal: Iterable[bytes] = ()) -> None:
    """assert_nowhere for many canaries at once (by name), the usage journal's lines included."""
    sinks = {
        "database": database_text(),
        "logs": logs.text(),
        "responses": "\n".join(responses),
        "files": files_text(instance_path),
        "journal": b"".join(journal).decode("utf-8", errors="replace"),
    }
    search = Canaries(named)
    problems = {name: sorted(search.found_in(content)) for name, content in sinks.items()}
    problems = {k: v for k, v in problems.items() if v}
    assert not problems, f"credential material leaked into: {problems}"
    assert logs.lines, "the log capture saw nothing: the sweep would be vacuous"
