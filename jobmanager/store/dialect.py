"""What SQLite and PostgreSQL spell differently, as data: one small object per backend.

The store's SQL (:mod:`jobmanager.store.sql`) is written once, with ``?`` placeholders, and asks
its dialect for the few fragments that differ: row locks (``FOR UPDATE``, ``SKIP LOCKED``, which
SQLite does not need because ``BEGIN IMMEDIATE`` already serialises every writer), ``IN`` lists,
``LEAST`` versus ``MIN``, string aggregates, integer buckets, advisory locks, the statements that
begin a transaction, and the column types of the schema. Everything else (upserts with
``ON CONFLICT``, ``RETURNING``, ``COALESCE``, ``CASE``) is the same on both (SQLite >= 3.35).

:meth:`Dialect.adapt` is the one public way to turn that ``?``-style SQL into the backend's own
paramstyle (psycopg wants ``%s``, and a literal ``%`` doubled).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, ClassVar


@lru_cache(maxsize=2048)
def _percent_s(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class Dialect:
    """One backend's spelling of the store's SQL; the instances are :data:`SQLITE` and :data:`POSTGRES`.

    Class attributes hold the fragments; the two subclasses override what differs, as huey's
    ``BaseSqlStorage`` subclasses do.
    """

    name: ClassVar[str]
    #: the statement that opens a write transaction
    begin_write: ClassVar[str]
    #: the statement that opens a consistent read-only snapshot
    begin_read: ClassVar[str]
    #: whether rows can be locked (``SELECT ... FOR UPDATE``); SQLite locks the whole database instead
    row_locks: ClassVar[bool]
    #: whether a WITH clause may hold INSERT/UPDATE ... RETURNING (one statement, one round trip, for several
    #: writes); SQLite's may not
    writes_in_with: ClassVar[bool] = False
    #: whether an agent claims a prefetched batch's tasks together (engine/prefetch.py). On SQLite a claim is a
    #: write transaction under the one write lock, and the read each claimed task needs before it starts is
    #: in-process: batching pays. On PostgreSQL that read is a round trip as dear as the one-statement claim
    #: it saves, and the batch's transaction holds its jobs' rows longer (measured, 2 agents: 1,474-1,559 ->
    #: 1,192-1,210 tasks/s), so its agents claim one task at a time
    claims_ahead: ClassVar[bool] = False
    #: the scalar two-argument minimum
    least: ClassVar[str]
    #: statements (outside a transaction) that switch foreign-key checks off and on again, for a bulk insert
    #: of rows consistent by construction (SQLite checks each row: a third of the time of demo data)
    unchecked: ClassVar[tuple[str, str] | None] = None
    #: the case-insensitive LIKE (SQLite's own LIKE is, for ASCII)
    ilike: ClassVar[str]
    #: whether triggers keep per-state job counters (``job_counts``)
    job_counts: ClassVar[bool]
    #: the tables of the store's schema (one column, ``name``)
    tables_sql: ClassVar[str]
    #: schema column types, by the names the schema uses: ``{id}`` (an id column), ``{ref}`` (an id
    #: held elsewhere), ``{real}`` (seconds since the epoch, other floats), ``{big}`` (sizes)
    types: ClassVar[dict[str, str]]

    # -- placeholders ---------------------------------------------------------------------
    def adapt(self, sql: str) -> str:
        """``sql`` written with ``?`` placeholders, in this backend's paramstyle."""
        return sql

    def in_(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """``column IN (values)`` with bound parameters."""
        return f"{column} IN ({','.join('?' * len(values)) or 'NULL'})", list(values)

    # -- row locks ------------------------------------------------------------------------
    @property
    def for_update(self) -> str:
        """Appended to a SELECT that reads a row this transaction is about to change."""
        return " FOR UPDATE" if self.row_locks else ""

    @property
    def for_share(self) -> str:
        """Appended to a SELECT that checks a row exists and must keep existing until commit."""
        return " FOR SHARE" if self.row_locks else ""

    @property
    def skip_locked(self) -> str:
        """Appended to a SELECT whose rows, when another transaction holds them, are left to it."""
        return " FOR UPDATE SKIP LOCKED" if self.row_locks else ""

    def advisory_lock(self) -> str | None:
        """A statement (one ``?``: a name) that serialises transactions on that name, if one is needed."""
        return None

    def lock_writers_out(self, tables: Sequence[str]) -> str | None:
        """A statement that keeps other writers (not readers) off ``tables`` until commit, if one is needed."""
        return None

    def move_sequence(self, table: str) -> str | None:
        """After rows with explicit ids: a statement that moves ``table``'s id sequence past them, if needed
        (SQLite's INTEGER PRIMARY KEY follows the largest id by itself)."""
        return None

    def no_index(self, column: str) -> str:
        """``column`` in a WHERE clause whose index the planner must not pick (SQLite's unary ``+``)."""
        return column

    # -- functions ------------------------------------------------------------------------
    def string_agg(self, expr: str, *, distinct: bool = False) -> str:
        """Comma-joined values of ``expr`` in a GROUP BY."""
        raise NotImplementedError

    def bucket(self, expr: str) -> str:
        """The whole part of a non-negative number, as an integer."""
        raise NotImplementedError

    def ddl(self, template: str) -> str:
        """A schema statement with this backend's column types filled in."""
        return template.format_map(self.types)

    def __repr__(self) -> str:
        return f"<{self.name} dialect>"


class SQLiteDialect(Dialect):
    name = "sqlite"
    begin_write = "BEGIN IMMEDIATE"  # the write lock up front: a busy store waits instead of failing half-way
    begin_read = "BEGIN"
    row_locks = False  # BEGIN IMMEDIATE lets one writer in at a time
    claims_ahead = True
    least = "MIN"
    unchecked = ("PRAGMA foreign_keys = OFF", "PRAGMA foreign_keys = ON")
    ilike = "LIKE"
    job_counts = True
    tables_sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    types = {"id": "INTEGER PRIMARY KEY", "ref": "INTEGER", "real": "REAL", "big": "INTEGER"}

    def no_index(self, column: str) -> str:
        return f"+{column}"

    def string_agg(self, expr: str, *, distinct: bool = False) -> str:
        # group_concat(DISTINCT x) takes no separator; ',' is its default
        return f"group_concat(DISTINCT {expr})" if distinct else f"group_concat({expr}, ',')"

    def bucket(self, expr: str) -> str:
        return f"CAST({expr} AS INTEGER)"


class PostgresDialect(Dialect):
    name = "postgresql"
    begin_write = "BEGIN"  # READ COMMITTED: the conditional UPDATEs and row locks decide
    begin_read = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"
    row_locks = True
    writes_in_with = True
    least = "LEAST"
    ilike = "ILIKE"
    job_counts = False  # COUNT(*) on the jobs_state_id index
    tables_sql = "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema()"
    types = {"id": "BIGSERIAL PRIMARY KEY", "ref": "BIGINT", "real": "DOUBLE PRECISION", "big": "BIGINT"}

    def adapt(self, sql: str) -> str:
        return _percent_s(sql)

    def in_(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(?)", [list(values)]

    def advisory_lock(self) -> str | None:
        return "SELECT pg_advisory_xact_lock(hashtext(?))"

    def lock_writers_out(self, tables: Sequence[str]) -> str | None:
        return f"LOCK TABLE {', '.join(tables)} IN EXCLUSIVE MODE"

    def move_sequence(self, table: str) -> str | None:
        return (f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                f" (SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)")

    def string_agg(self, expr: str, *, distinct: bool = False) -> str:
        return f"string_agg({'DISTINCT ' if distinct else ''}{expr}, ',')"

    def bucket(self, expr: str) -> str:
        return f"FLOOR({expr})::bigint"


SQLITE = SQLiteDialect()
POSTGRES = PostgresDialect()
