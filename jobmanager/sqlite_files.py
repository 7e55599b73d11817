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
"""

from __future__ import annotations

import sqlite3

#: 32 MB at 4 KiB: twice the length at which an agent's checkpoint thread starts the log over
AUTOCHECKPOINT_PAGES = 8_000


def tune(conn: sqlite3.Connection) -> None:
    """Set this project's pragmas on a new connection to a home's store or queue file."""
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")
