"""SQLite checkpoints in a thread of the agent, not in a commit.

In WAL mode SQLite appends each commit to the ``-wal`` file and copies the changed pages back into
the database file (a checkpoint) in whichever connection's commit takes the log past
``wal_autocheckpoint`` pages. With SQLite's default, 1,000, that commit writes every page changed
since the last checkpoint and syncs the file: in an agent, about one claim in 130 took 20 to 25 ms,
73 % of all the time claims spent committing (one job of 3,000 tasks claimed in one thread on a
2-core VM, issue 18). SQLite's documentation gives the way out ("Application-Initiated
Checkpoints", https://www.sqlite.org/wal.html): run checkpoints from a separate thread.

So every connection of the store and the queue checkpoints only past
:data:`~jobmanager.store.sqlite.AUTOCHECKPOINT_PAGES` (a fallback), and each agent runs a
:class:`Checkpointer`: a PASSIVE checkpoint of each file every :data:`INTERVAL_S`, which waits for no
writer and no reader. While commits follow each other without a pause, a PASSIVE checkpoint rarely
ends with the whole log copied, and SQLite starts the log file over only when it does: past
:data:`RESTART_PAGES` the thread runs a RESTART checkpoint, which lets no writer in until the log is
copied and its readers have moved on (a pause like the one a commit took before, once per
RESTART_PAGES pages). It waits at most :data:`RESTART_WAIT_MS` for them; a reader that stays longer
(a long report) makes it go back to PASSIVE checkpoints for :data:`RESTART_BACKOFF_S`, so it never
holds writers again and again.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from jobmanager.engine.queue import Queue, QueueStorage
from jobmanager.store import JobStore
from jobmanager.store.sqlite import SQLiteStore
from jobmanager.trouble import Backoff, TroubleLog

#: a log of more pages than this (16 MB at 4 KiB) is copied with a RESTART checkpoint, so that the file starts over
RESTART_PAGES = 4_000
#: how often the thread checkpoints each file; while nothing is written, less and less often, down to IDLE_S
INTERVAL_S = 0.1
IDLE_S = 1.0
#: how long a RESTART checkpoint waits for the writer and the readers it must let finish (its busy timeout)
RESTART_WAIT_MS = 200
#: after a RESTART checkpoint that could not finish in time, PASSIVE checkpoints only for this long
RESTART_BACKOFF_S = 5.0


class CheckpointFailed(Exception):
    """A file could not be checkpointed (``error`` says why)."""

    def __init__(self, path: Path, error: sqlite3.Error) -> None:
        super().__init__(f"{path}: {error}")
        self.path, self.error = path, error


class Checkpointer:
    """Checkpoints ``paths`` (SQLite files in WAL mode) from its own thread until :meth:`close`."""

    def __init__(self, paths: Sequence[Path], trouble: TroubleLog, interval_s: float = INTERVAL_S) -> None:
        self.paths = list(dict.fromkeys(paths))
        self.trouble = trouble
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conns: dict[Path, sqlite3.Connection] = {}
        self._no_restart_until: dict[Path, float] = {}
        #: checkpoints run, and how many were RESTART checkpoints (for tests and benchmarks)
        self.rounds = 0
        self.restarts = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="checkpoints", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=RESTART_WAIT_MS / 1000 + 5)
            self._thread = None

    def checkpoint(self) -> dict[Path, tuple[int, int, int]]:
        """One checkpoint of each file: ``(busy, pages in the log, pages copied)`` by path, as
        ``PRAGMA wal_checkpoint`` returns them. Raises :class:`CheckpointFailed`."""
        done = {}
        for path in self.paths:
            try:
                done[path] = self._checkpoint(path)
            except sqlite3.Error as exc:
                raise CheckpointFailed(path, exc) from exc
        self.rounds += 1
        return done

    def _checkpoint(self, path: Path) -> tuple[int, int, int]:
        conn = self._conns.get(path)
        if conn is None:
            # mode=rw: a file that is gone is an error here, not a new empty database
            conn = self._conns[path] = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=rw", uri=True,
                                                       isolation_level=None, check_same_thread=False,
                                                       timeout=RESTART_WAIT_MS / 1000)
        row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if row[1] > RESTART_PAGES and time.monotonic() >= self._no_restart_until.get(path, 0.0):
            row = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            self.restarts += 1
            if row[0]:  # a reader stayed: leave the writers alone for a while
                self._no_restart_until[path] = time.monotonic() + RESTART_BACKOFF_S
        return int(row[0]), int(row[1]), int(row[2])

    def _loop(self) -> None:
        backoff, delay, last = Backoff(), self.interval_s, None
        try:
            while not self._stop.wait(delay):
                if self.trouble.failing(besides="checkpoints"):
                    # A full disk: a checkpoint that starts the log over lets a few commits through, which then
                    # fail again, and every writer would say "recovered" and "disk full" by turns. The workers'
                    # commits take the checkpoints meanwhile, as before this thread (past AUTOCHECKPOINT_PAGES).
                    delay = self.interval_s
                    continue
                try:
                    done = self.checkpoint()
                except CheckpointFailed as failed:  # a full disk, a file gone: commits fall back on their own threshold
                    self.trouble.failed("checkpoints", failed.error, failed.path)
                    delay = max(self.interval_s, backoff.failed())
                else:
                    self.trouble.ok("checkpoints")
                    backoff.reset()
                    # nothing written since the last round (all copied, as before): an idle agent looks less often
                    idle = done == last and all(pages == copied for _, pages, copied in done.values())
                    delay = min(IDLE_S, delay * 2) if idle else self.interval_s
                    last = done
        finally:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()


def for_agent(store: JobStore, queue: Queue, trouble: TroubleLog) -> Checkpointer | None:
    """An agent's checkpoint thread for those of its store and queue that are SQLite files (None if neither is)."""
    paths = []
    if isinstance(store, SQLiteStore):
        paths.append(store.path)
    storage = queue.huey.storage
    if isinstance(storage, QueueStorage):
        paths.append(Path(storage.filename))
    return Checkpointer(paths, trouble) if paths else None
