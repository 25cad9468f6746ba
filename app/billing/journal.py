"""The production usage writer: journal each event locally, commit in batches, replay after a crash.

The response path only appends one line to this worker's journal segment and
queues the event; a background thread (a greenlet under gevent) commits what
is queued in batches through app.billing.recorder.commit_events, and retries
with back-off while the database is unreachable. An event the database refuses
for a reason in its data goes to the quarantine instead and counts as done, so
one bad row never stops the writer. A segment is deleted once every event in
it is committed or quarantined. A segment whose owner died (its flock is free) is replayed by any
worker; replays are idempotent because the request id is unique.

A journal line holds a UsageEvent and nothing else: no credentials ever reach
it. Lines are written with one unbuffered append each, so a crashed process
loses nothing the kernel has accepted; METERING_JOURNAL_FSYNC adds an fsync
per batch for power loss.
"""
from __future__ import annotations

import atexit
import fcntl
import glob
import hashlib
import logging
import os
import threading
import time
from collections import deque
from itertools import islice
from typing import Any, Callable

from app.billing.codec import decode, encode
from app.billing.events import UsageEvent
from app.billing.recorder import commit_events
from app.db import session_scope

log = logging.getLogger(__name__)

SEGMENT_BYTES = 4 * 1024 * 1024
MAX_QUEUED = 200_000  # beyond this, events wait in the journal for the replay instead of in memory
ORPHAN_SCAN_SECONDS = 30.0


def read_segment(path: str) -> list[UsageEvent]:
    """Every complete event in a segment; a line torn by a crash mid-write is skipped."""
    events = []
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.endswith(b"\n"):
                log.warning("journal %s: skipping a torn last line", os.path.basename(path))
                break
            try:
                events.append(decode(line))
            except (ValueError, TypeError, KeyError):
                log.error("journal %s: line %d is unreadable; kept in %s.bad", os.path.basename(path), number, path)
                with open(path + ".bad", "ab") as bad:
                    bad.write(line)
    return events


class Segment:
    """One append-only journal file, flock-ed by its writer for as long as the writer lives."""

    def __init__(self, directory: str, seq: int):
        name = f"events-{os.getpid()}-{int(time.time() * 1000)}-{seq}.jsonl"
        self.path = os.path.join(directory, name)
        # Locked before it gets the name replayers look for, so none can take it for an orphan.
        hidden = os.path.join(directory, "." + name)
        self.fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(hidden, self.path)
        self.size = 0
        self.pending = 0  # written, not yet committed
        self.spilled = False  # some events live only here: leave the file for the replay
        self.closed = False

    def append(self, line: bytes) -> None:
        os.write(self.fd, line)
        self.size += len(line)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)  # releases the flock: a spilled segment becomes an orphan to replay


class JournalWriter:
    """metering's writer in journal mode; call it with a UsageEvent."""

    def __init__(self, directory: str, write: Callable[[list[UsageEvent]], Any] | None = None,
                 batch_size: int = 500, interval: float = 0.05, max_backoff: float = 5.0, fsync: bool = False):
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._write = write or commit_events
        self.batch_size, self.interval, self.max_backoff, self.fsync = batch_size, interval, max_backoff, fsync
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._drained = threading.Condition(self._lock)
        self._queue: deque[tuple[UsageEvent, Segment]] = deque()
        self._seq = 0
        self._segment = self._new_segment()
        self._running = True
        self._last_scan = 0.0
        self._thread = threading.Thread(target=self._run, name="usage-journal", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    @classmethod
    def for_app(cls, app) -> "JournalWriter":
        directory = app.config["METERING_JOURNAL_DIR"]
        if not os.path.isabs(directory):
            directory = os.path.join(app.instance_path, directory.removeprefix("instance/"))
        # One folder per database: a journal must never be replayed into another database.
        database = hashlib.sha256(app.config["DATABASE_URL"].encode()).hexdigest()[:12]
        return cls(os.path.join(directory, database), fsync=bool(app.config.get("METERING_JOURNAL_FSYNC", False)))

    # -- the response path ---------------------------------------------------------------
    def __call__(self, event: UsageEvent) -> None:
        line = encode(event)
        with self._lock:
            segment = self._segment
            segment.append(line)
            if len(self._queue) >= MAX_QUEUED:
                segment.spilled = True
            else:
                segment.pending += 1
                self._queue.append((event, segment))
            if segment.size >= SEGMENT_BYTES:
                self._rotate()
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    def _new_segment(self) -> Segment:
        self._seq += 1
        return Segment(self.directory, self._seq)

    def _rotate(self) -> None:
        old, self._segment = self._segment, self._new_segment()
        if old.spilled:
            old.close()
        else:
            self._retire(old)

    def _retire(self, segment: Segment) -> None:
        """Delete a segment that is no longer written to once all its events are committed."""
        if segment is not self._segment and segment.pending == 0 and not segment.spilled:
            segment.close()
            _unlink(segment.path)

    # -- the background writer -----------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.0
        while self._running or self._queue:
            if backoff:
                time.sleep(backoff)
            elif not self._queue:
                self._wake.wait(self.interval)
                self._wake.clear()
            if time.monotonic() - self._last_scan > ORPHAN_SCAN_SECONDS:
                self._last_scan = time.monotonic()
                self.replay_orphans()
                if self._write is commit_events:  # the real database, not a test's writer
                    _release_stale_reservations()
            with self._lock:
                batch = list(islice(self._queue, self.batch_size))
            if not batch:
                continue
            try:
                if self.fsync:
                    self._sync(batch)
                self._write([event for event, _ in batch])
            except Exception as exc:
                backoff = min(self.max_backoff, max(0.1, backoff * 2))
                log.warning("usage journal: %d records not committed yet (%s); retrying in %.1fs",
                            len(batch), type(exc).__name__, backoff)
                if not self._running:
                    return  # shutting down with the database away: the journal keeps them for the replay
                continue
            backoff = 0.0
            self._committed(batch)

    def _sync(self, batch: list[tuple[UsageEvent, Segment]]) -> None:
        for segment in {id(s): s for _, s in batch}.values():
            if not segment.closed:
                os.fsync(segment.fd)

    def _committed(self, batch: list[tuple[UsageEvent, Segment]]) -> None:
        with self._lock:
            for _ in batch:
                self._queue.popleft()
            for segment in {id(s): s for _, s in batch}.values():
                segment.pending -= sum(1 for _, s in batch if s is segment)
                self._retire(segment)
            if not self._queue:
                self._drained.notify_all()

    def replay_orphans(self) -> int:
        """Commit the events of segments whose writer is gone, then delete those segments."""
        replayed = 0
        for path in sorted(glob.glob(os.path.join(self.directory, "events-*.jsonl"))):
            fd = _try_lock(path)
            if fd is None:
                continue  # a live writer owns it
            try:
                events = read_segment(path)
                for start in range(0, len(events), self.batch_size):
                    self._write(events[start:start + self.batch_size])
                replayed += len(events)
                _unlink(path)
            except Exception as exc:
                log.warning("usage journal: replay of %s postponed (%s)", os.path.basename(path), type(exc).__name__)
                self._last_scan = time.monotonic() - ORPHAN_SCAN_SECONDS + 1.0
                break
            finally:
                os.close(fd)
        if replayed:
            log.info("usage journal: replayed %d records from orphaned segments", replayed)
        return replayed

    # -- draining ----------------------------------------------------------------------
    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until the queue is committed; True if it drained within the timeout."""
        self._wake.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._drained.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Drain what can be committed, stop the thread, and release the segment (kept if anything is left)."""
        if not self._running:
            return
        self.flush(timeout)
        self._running = False
        self._wake.set()
        self._thread.join(timeout)
        with self._lock:
            segment = self._segment
            if segment.pending == 0 and not segment.spilled:
                segment.close()
                _unlink(segment.path)
            else:
                segment.close()


def _release_stale_reservations() -> None:
    """After the orphans are replayed: credits held by requests that were never recorded go back."""
    from app.billing import ledger

    try:
        with session_scope() as session:
            released = ledger.release_stale(session)
    except Exception as exc:
        log.warning("usage journal: stale reservation sweep postponed (%s)", type(exc).__name__)
        return
    if released:
        log.warning("released %d stale credit reservations of requests that were never recorded", released)


def _try_lock(path: str) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
