"""The PostgreSQL job store: the same SQL as SQLite's (:class:`SqlStore`), for many agents on many hosts.

Only what is PostgreSQL's own lives here: psycopg 3 connections (one per thread and
per process: a forked child opens its own) in autocommit mode, so that transactions
are begun by the dialect's ``BEGIN`` exactly as on SQLite and a single SELECT needs
no transaction; the adapter that turns the store's ``?`` placeholders into
psycopg's ``%s``; and the errors worth running a transaction again for (deadlocks
and serialisation failures, which SQLite's one-writer-at-a-time never raises).
How races are decided (row locks, ``SKIP LOCKED``, compare-and-set) is described
in :mod:`jobmanager.store.sql`.

The schema lives in the connection's current schema (``search_path``), so a URL
like ``postgresql://jm@db/jobs?options=-csearch_path%3Dteam_a`` keeps several
stores in one database.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row

from jobmanager.backends import redact
from jobmanager.errors import HomeError
from jobmanager.store.connection import Connection
from jobmanager.store.dialect import POSTGRES
from jobmanager.store.sql import SqlStore
from jobmanager.trouble import storage_problem

RawConn = psycopg.Connection[dict[str, Any]]

CONNECT_TIMEOUT_S = 10


class PgConnection:
    """A psycopg connection that takes the store's SQL: ``?`` placeholders (:meth:`Dialect.adapt`)."""

    def __init__(self, raw: RawConn) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> psycopg.Cursor[dict[str, Any]]:
        if not params:  # nothing to bind: sent as written (psycopg reads no placeholders then)
            return self.raw.execute(sql.encode())
        return self.raw.execute(_query(sql), params)

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(_query(sql), params)


@lru_cache(maxsize=2048)
def _query(sql: str) -> bytes:
    """The store's SQL as psycopg takes it. Bytes, not str: psycopg's type hints ask for a LiteralString
    to keep user input out of SQL, and the store's SQL is built from its own constants and identifiers
    (every value is bound), which a type checker cannot see through the f-strings."""
    return POSTGRES.adapt(sql).encode()


class PostgresStore(SqlStore):
    dialect = POSTGRES
    retryable = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)

    def __init__(self, url: str, *, create: bool = False, check: bool = True) -> None:
        """Open (``create``: or create) the store at ``url``; ``check=False`` skips the schema checks
        (``jobmanager migrate`` and ``doctor`` look at an old or missing schema themselves)."""
        self.url = url
        self._local = threading.local()
        self._all: list[tuple[int, RawConn]] = []  # (pid that opened it, connection)
        self._all_lock = threading.Lock()
        if check:
            try:
                self.initialize(create=create)
            except psycopg.Error as exc:  # say what it is: a full disk, a permission, or else what the server said
                problem = storage_problem(exc, redact(self.url))
                raise HomeError(problem or f"cannot open the store {redact(self.url)}: {_first_line(exc)}") from None

    def __repr__(self) -> str:
        return f"PostgresStore({redact(self.url)!r})"

    def _where(self) -> str:
        return redact(self.url)

    # -- connections --------------------------------------------------------------------------
    def _conn(self) -> PgConnection:
        conn: PgConnection | None = getattr(self._local, "conn", None)
        if conn is None or conn.raw.closed or conn.raw.broken or getattr(self._local, "pid", None) != os.getpid():
            try:
                raw = psycopg.connect(
                    self.url, autocommit=True, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT_S,
                    application_name="jobmanager",
                )
            except psycopg.Error as exc:
                raise HomeError(f"cannot connect to the store {redact(self.url)}: {_first_line(exc)}") from None
            conn = PgConnection(raw)
            self._local.conn = conn
            self._local.pid = os.getpid()
            with self._all_lock:
                self._all.append((os.getpid(), raw))
        elif conn.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.raw.execute("ROLLBACK")  # never build on a transaction someone left open
        return conn

    def close(self) -> None:
        """Close every connection this process opened (other threads reconnect if they go on).

        Connections inherited from a parent process are left alone: closing them here would end
        the parent's sessions, which share the socket.
        """
        pid = os.getpid()
        with self._all_lock:
            mine = [conn for owner, conn in self._all if owner == pid]
            self._all = [(owner, conn) for owner, conn in self._all if owner != pid]
        for conn in mine:
            conn.close()
        self._local.conn = None

    # -- schema -------------------------------------------------------------------------------
    def _schema_state(self, c: Connection) -> tuple[int | None, set[str]]:
        if c.execute("SELECT current_schema() AS s").fetchone()["s"] is None:
            raise HomeError(f"{self._where()}: the search_path names no existing schema to keep the store in")
        return super()._schema_state(c)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
