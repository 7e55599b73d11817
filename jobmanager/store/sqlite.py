"""The SQLite job store: WAL mode, one writer at a time, short transactions.

Only what is SQLite's own lives here: the connection (one per thread and process,
autocommit, with its pragmas), WAL, and the per-state job counters that triggers
keep (``job_counts``). Every store method is :class:`SqlStore`'s; writes begin
with ``BEGIN IMMEDIATE`` (the dialect's), so the write lock is taken up front and
a busy database waits (busy timeout) instead of failing half-way. SQLite needs no
retries: its writers take turns, they never deadlock.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from jobmanager import sqlite_files
from jobmanager.errors import HomeError
from jobmanager.home import create_private
from jobmanager.store.connection import Connection
from jobmanager.store.dialect import SQLITE
from jobmanager.store.schema import statements
from jobmanager.store.sql import SqlStore
from jobmanager.trouble import storage_problem

BUSY_TIMEOUT_S = 30.0


class SQLiteStore(SqlStore):
    dialect = SQLITE

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False, check: bool = True) -> None:
        """Open (``create``: or create) the store file; ``check=False`` skips the schema checks
        (``jobmanager migrate`` and ``doctor`` look at an old schema themselves)."""
        self.path = Path(path)
        self._local = threading.local()
        if not create and not self.path.exists():
            raise HomeError(f"no job store at {self.path}")
        if create and self.path.parent.is_dir():
            create_private(self.path)
        if check:
            self.initialize(create=create)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _where(self) -> str:
        return str(self.path)

    # -- connections --------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            sqlite_files.tune(conn)
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- schema -------------------------------------------------------------------------------
    def initialize(self, create: bool = True) -> None:
        try:
            self._conn()  # the pragmas read the file's header
        except sqlite3.DatabaseError as exc:
            raise self._cannot_open(exc) from None
        super().initialize(create)

    def _schema_state(self, c: Connection) -> tuple[int | None, set[str]]:
        try:
            return super()._schema_state(c)
        except sqlite3.DatabaseError as exc:
            raise self._cannot_open(exc) from None

    def _cannot_open(self, exc: sqlite3.DatabaseError) -> HomeError:
        """Say what it is: a full disk, a permission, or not a store."""
        problem = storage_problem(exc, self.path)
        if problem is None and getattr(exc, "sqlite_errorname", "") != "SQLITE_NOTADB":
            problem = f"cannot open {self.path}: {exc}"
        return HomeError(problem or f"{self.path} is not a Job Manager store ({exc})")

    def _storage_problem(self, exc: BaseException) -> str | None:
        return storage_problem(exc, self.path) if isinstance(exc, sqlite3.OperationalError) else None

    def _prepare_new(self) -> None:
        mode = self._conn().execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise HomeError(f"{self.path}: could not switch to WAL mode (got {mode})")

    def _repair(self) -> None:
        """Tables and triggers added to version 1 after a store was made (all IF NOT EXISTS); version 4's
        index statements again after them, as version 1's would bring back the indexes 4 dropped."""
        have = {r["name"] for r in self._conn().execute("SELECT name FROM sqlite_master").fetchall()}
        if {"job_counts", "job_counts_update"} <= have:
            return
        with self._tx() as c:
            for stmt in statements(1, self.dialect) + statements(4, self.dialect):
                c.execute(stmt)
            if "job_counts" not in have:
                c.execute("DELETE FROM job_counts")
                c.execute("INSERT INTO job_counts (state, n) SELECT state, count(*) FROM jobs GROUP BY state")

    def job_counts(self) -> dict[str, int]:
        """Jobs per state, from the trigger-kept counters (no scan)."""
        return {r["state"]: int(r["n"]) for r in self._fetchall("SELECT state, n FROM job_counts")}
