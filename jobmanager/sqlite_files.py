"""How a home's SQLite files are written: one rule for the job store and the queue.

Both files are in WAL mode and every connection to either sets the same two pragmas here:

- ``synchronous = NORMAL``: a commit writes the log without an fsync; the log is synced at each
  checkpoint. A process that dies (SIGKILL included) loses nothing it committed, and in WAL mode the file
  cannot be corrupted; an OS crash or a power cut can lose the last commits (the README says so). The
  queue holds no truth: an agent's sweep sends lost messages again from the store.
- ``wal_autocheckpoint = AUTOCHECKPOINT_PAGES``: a commit copies the log back into the file (a
  checkpoint) only past this many pages. A running agent's own thread (:mod:`jobmanager.engine.checkpoints`)
  copies both files long before that, so with an agent running no commit does; SQLite's default, 1,000,
  put a 20-25 ms copy into one commit in about 130, an agent worker's claim or a user's submit (issue 18).

A writer waits for the write lock by :func:`begin_immediate`, not by SQLite's busy handler.
"""

from __future__ import annotations

import random
import sqlite3
import time

#: 32 MB at 4 KiB: twice the length at which an agent's checkpoint thread starts the log over
AUTOCHECKPOINT_PAGES = 8_000


def tune(conn: sqlite3.Connection) -> None:
    """Set this project's pragmas on a new connection to a home's store or queue file."""
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")


#: how long a writer that found the write lock taken sleeps before it tries again: from the first value,
#: doubling (with jitter) up to the second. SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20 ms ... : a
#: process that found the lock taken three times has slept 8 ms, while a busy agent takes and releases it
#: every fraction of a millisecond, so a user's submit lost the lock to the agent's threads again and again
#: (6-8 ms a submit instead of 1, issue 18).
WRITE_WAIT_S = (50e-6, 1e-3)


def begin_immediate(conn: sqlite3.Connection, timeout_s: float) -> None:
    """``BEGIN IMMEDIATE`` on ``conn``, trying again every :data:`WRITE_WAIT_S` while another connection
    holds the write lock, for at most ``timeout_s`` (then SQLite's "database is locked" is raised, as its
    busy timeout would). The connection's busy timeout is off while it tries (each try returns at once) and
    back to ``timeout_s`` after, for every other statement."""
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        wait, deadline = WRITE_WAIT_S[0], time.monotonic() + timeout_s
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() + wait > deadline:
                    raise
            time.sleep(wait * random.uniform(0.5, 1.5))
            wait = min(2 * wait, WRITE_WAIT_S[1])
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
