"""Where a canary could have landed, searched for any 8-character piece of it (or its common hashes).

A hit is reported by location only — the sink, the table and column with the
row's key, or the file and line — never with the matched text: the report of a
leak must not be a second leak.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

from sqlalchemy import column, inspect, select, table
from sqlalchemy.engine import Engine

PIECE = 8
# Canary values are random letters and digits around fixed prefixes; pieces are taken from runs of these.
_RUN = re.compile(r"[A-Za-z0-9]{%d,}" % PIECE)
_DIGEST_SIZES = (32, 40, 64)  # hex md5, sha1, sha256


@dataclass(frozen=True)
class Hit:
    sink: str  # database | journal | instance | server log | log file | response
    location: str  # table.column [key] or path:line or a response's description
    canary: str  # which probe's value, by name (provider.field (mangling)): never the value; "" if unreadable

    def __str__(self) -> str:
        if not self.canary:
            return f"{self.sink}: {self.location}"
        return f"{self.sink}: {self.location}: a piece of {self.canary}"


class Finder:
    """Finds any 8-character piece of any canary, and the hex sha256/sha1/md5 of any whole canary, in text.

    A piece found in several canaries (a fixed prefix such as an STS token's) or in a `public` text
    (the fixed structure every RSA key shares, seen in a decoy key) is not secret: it is not looked
    for, so that a hit is a real leak and names the one probe whose random value leaked.
    """

    def __init__(self, canaries: Iterable[tuple[str, str]], public: Iterable[str] = ()):
        names: dict[str, list[str]] = {}
        for name, value in canaries:
            names.setdefault(value, []).append(name)
        owners: dict[str, set[str]] = {}
        self._digests: dict[str, str] = {}
        for value, probes in names.items():
            label = probes[0] if len(probes) == 1 else f"{probes[0]} (and {len(probes) - 1} more probes)"
            for run in _RUN.findall(value):
                for i in range(len(run) - PIECE + 1):
                    owners.setdefault(run[i:i + PIECE], set()).add(label)
            for algorithm in ("sha256", "sha1", "md5"):
                self._digests[hashlib.new(algorithm, value.encode("utf-8", "surrogatepass")).hexdigest()] = label
        shared = {run[i:i + PIECE] for text in public for run in _RUN.findall(text) for i in range(len(run) - PIECE + 1)}
        self._pieces = {piece: labels.pop() for piece, labels in owners.items()
                        if len(labels) == 1 and piece not in shared}
        if not self._pieces:
            raise ValueError("no canary has a run of 8 letters or digits of its own to look for")

    def find(self, text: str) -> list[str]:
        """The names of the canaries of which `text` holds a piece (each once, in order of appearance)."""
        found: dict[str, None] = {}
        for match in _RUN.finditer(text):
            run = match.group()
            for i in range(len(run) - PIECE + 1):
                name = self._pieces.get(run[i:i + PIECE])
                if name is not None:
                    found.setdefault(name)
            for size in _DIGEST_SIZES:
                for i in range(len(run) - size + 1):
                    name = self._digests.get(run[i:i + size])
                    if name is not None:
                        found.setdefault(name)
        return list(found)


def as_text(value: object) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("latin-1")
    return str(value)


def sweep_database(engine: Engine, finder: Finder) -> Iterator[Hit]:
    """Every column of every row of every table."""
    inspector = inspect(engine)
    for name in inspector.get_table_names():
        columns = [c["name"] for c in inspector.get_columns(name)]
        keys = inspector.get_pk_constraint(name).get("constrained_columns") or []
        query = select(*(column(c) for c in columns)).select_from(table(name))
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=1000).execute(query)
            for number, row in enumerate(result, 1):
                mapping = row._mapping
                for col in columns:
                    value = mapping[col]
                    if value is None:
                        continue
                    for canary in finder.find(as_text(value)):
                        yield Hit("database", f"{name}.{col} [{_row_key(mapping, keys, number, finder)}]", canary)


def _row_key(mapping, keys: list[str], number: int, finder: Finder) -> str:
    where = ", ".join(f"{k}={mapping[k]}" for k in keys)
    # A key that itself holds a canary piece would repeat the leak in the report.
    return where if where and not finder.find(where) else f"row {number}"


def sweep_file(path: str, finder: Finder, sink: str) -> Iterator[Hit]:
    try:
        with open(path, "rb") as fh:
            for number, line in enumerate(fh, 1):
                for canary in finder.find(line.decode("latin-1")):
                    yield Hit(sink, f"{path}:{number}", canary)
    except OSError as exc:  # a file that vanished (a committed journal segment) or cannot be read
        if not isinstance(exc, FileNotFoundError):
            yield Hit(sink, f"{path}: could not be read ({exc.strerror}), so it is unchecked", "")


def files_under(folder: str, seen: set[str]) -> Iterator[str]:
    """Every file under `folder` not in `seen` (real paths; added to `seen`): a folder inside another is swept once."""
    for root, _dirs, names in os.walk(folder):
        for name in sorted(names):
            path = os.path.realpath(os.path.join(root, name))
            if path not in seen:
                seen.add(path)
                yield path


def log_files(patterns: Iterable[str]) -> tuple[list[str], list[str]]:
    """The files the operator named (globs expanded), and the patterns that matched nothing."""
    files, unmatched = [], []
    for pattern in patterns:
        matched = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(p))
        files.extend(matched)
        if not matched:
            unmatched.append(pattern)
    return files, unmatched


def sweep_text(text: str, finder: Finder, sink: str, location: str) -> Iterator[Hit]:
    for canary in finder.find(text):
        yield Hit(sink, location, canary)
