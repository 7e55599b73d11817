"""SQLite checkpoints in a thread of the agent, not in a commit.

In WAL mode SQLite appends each commit to the ``-wal`` file and copies the changed pages back into
the database file (a checkpoint) in whichever connection's commit takes the log past
``wal_autocheckpoint`` pages. With SQLite's default, 1,000, that commit writes every page changed
since the last checkpoint and syncs the file: in an agent, about one claim in 130 took 20 to 25 ms,
73 % of all the time claims spent committing (one job of 3,000 tasks claimed in one thread on a
2-core VM, issue 18). SQLite's documentation gives the way out ("Application-Initiated
Checkpoints", https://www.sqlite.org/wal.html): run checkpoints from a separate thread.

So every connection of the store and the queue checkpoints only past
:data:`~jobmanager.sqlite_files.AUTOCHECKPOINT_PAGES` (twice :data:`RESTART_PAGES`: with an agent
running no commit does), and each agent runs a :class:`Checkpointer`: a PASSIVE checkpoint of each
file every :data:`INTERVAL_S`, which waits for no writer and no reader. While commits follow each
other without a pause, a PASSIVE checkpoint rarely ends with the whole log copied, and SQLite starts
the log file over only when one does: past RESTART_PAGES the thread runs a RESTART checkpoint, which
lets no writer in until the log is copied and its readers have moved on (a pause like the one a
commit took before, once per RESTART_PAGES pages instead of 1,000). It waits at most
:data:`RESTART_WAIT_MS` for readers, then copies; a reader that stays longer (a long report) makes
it use PASSIVE checkpoints only for :data:`RESTART_BACKOFF_S`, doubled each time up to
:data:`RESTART_BACKOFF_MAX_S`. While another activity of the agent fails for want of storage (a
full disk) the thread waits (at most :data:`PAUSED_S`): starting the log over would let a few
commits through and every writer would report "recovered" and "disk full" by turns.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
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
#: after a RESTART checkpoint a reader kept from finishing, PASSIVE checkpoints only for this long, doubled
#: each time it happens again up to RESTART_BACKOFF_MAX_S (a long report), and back to it after one finishes
RESTART_BACKOFF_S = 5.0
RESTART_BACKOFF_MAX_S = 60.0
#: while another activity of the agent fails for want of storage, a round at most this often
PAUSED_S = 60.0

#: held by each round: a fork (Huey's process workers) waits for it, so no child starts with SQLite's locks
#: taken by a thread it does not have
_ROUND = threading.Lock()
os.register_at_fork(before=_ROUND.acquire, after_in_parent=_ROUND.release, after_in_child=_ROUND.release)


class CheckpointFailed(Exception):
    """A file could not be checkpointed (``error`` says why)."""

    def __init__(self, path: Path, error: sqlite3.Error) -> None:
        super().__init__(f"{path}: {error}")
        self.path, self.error = path, error


class Checkpointer:
    """Checkpoints ``paths`` (SQLite files in WAL mode) from its own thread until :meth:`close`."""

    def __init__(self, paths: Sequence[Path], trouble: TroubleLog, interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.paths = list(dict.fromkeys(paths))
        self.trouble = trouble
        self.interval_s = interval_s
        self._clock = clock  # when a RESTART back-off ends (a test moves it on instead of waiting)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conns: dict[Path, sqlite3.Connection] = {}
        self._no_restart_until: dict[Path, float] = {}
        self._restart_backoff: dict[Path, float] = {}
        self._restarted: dict[Path, tuple[int, int, int]] = {}  # the PASSIVE result that led to a finished RESTART
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
        ``PRAGMA wal_checkpoint`` returns them. Every file is tried; then the first failure raises
        :class:`CheckpointFailed`."""
        done, failed = {}, None
        with _ROUND:
            for path in self.paths:
                try:
                    done[path] = self._checkpoint(path)
                except sqlite3.Error as exc:
                    failed = failed or CheckpointFailed(path, exc)
        self.rounds += 1
        if failed is not None:
            raise failed
        return done

    def restart_paused_for(self, path: Path) -> float:
        """Seconds before ``path`` may get a RESTART checkpoint again (0: now): the back-off after a reader
        kept the last one from finishing."""
        return max(0.0, self._no_restart_until.get(path, 0.0) - self._clock())

    def _checkpoint(self, path: Path) -> tuple[int, int, int]:
        conn = self._conns.get(path)
        if conn is None:
            # mode=rw: a file that is gone is an error here, not a new empty database
            conn = self._conns[path] = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=rw", uri=True,
                                                       isolation_level=None, check_same_thread=False,
                                                       timeout=RESTART_WAIT_MS / 1000)
        row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        passive = (int(row[0]), int(row[1]), int(row[2]))
        now = self._clock()
        # A long log, unless a RESTART just finished and nothing was written since (the log then keeps its length
        # until the next writer starts it over), or a reader kept the last RESTART from finishing.
        if passive[1] > RESTART_PAGES and self._restarted.get(path) != passive \
                and now >= self._no_restart_until.get(path, 0.0):
            row = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            self.restarts += 1
            if row[0]:  # a reader stayed: leave the writers alone for a while, longer each time
                pause = min(RESTART_BACKOFF_MAX_S, self._restart_backoff.get(path, RESTART_BACKOFF_S / 2) * 2)
                self._restart_backoff[path] = pause
                self._no_restart_until[path] = now + pause
            else:
                self._restart_backoff.pop(path, None)
                self._restarted[path] = passive
        return int(row[0]), int(row[1]), int(row[2])

    def _loop(self) -> None:
        backoff, delay, last = Backoff(), self.interval_s, None
        paused_since: float | None = None
        try:
            while not self._stop.wait(delay):
                if self.trouble.storage_failing(besides="checkpoints"):
                    # A full disk: a checkpoint that starts the log over lets a few commits through, which then
                    # fail again, and every writer would say "recovered" and "disk full" by turns. Commits still
                    # checkpoint past AUTOCHECKPOINT_PAGES meanwhile; this thread looks again at most every PAUSED_S.
                    now = time.monotonic()
                    paused_since = paused_since or now
                    if now - paused_since < PAUSED_S:
                        delay = self.interval_s
                        continue
                paused_since = None
                try:
                    done = self.checkpoint()
                except CheckpointFailed as failed:  # a full disk, a file gone: commits fall back on their threshold
                    self.trouble.failed("checkpoints", failed.error, failed.path)
                    delay = max(self.interval_s, backoff.failed())
                except Exception as exc:  # noqa: BLE001 - a bug must not end the thread without a word
                    self.trouble.failed("checkpoints", exc, None)
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
