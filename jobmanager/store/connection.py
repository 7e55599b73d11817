"""What the store's SQL needs of a database connection, and the two helpers every part of it uses.

``sqlite3.Connection`` fits these protocols as it is; psycopg's connection fits behind the adapter in
:mod:`.postgres`. Every module of the store (:mod:`.sql` and the concept stores beside it) reads rows by
column name through them, so one SQL text serves both backends.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol


class Row(Protocol):
    """A result row read by column name: ``sqlite3.Row`` or psycopg's dict row."""

    def __getitem__(self, key: str, /) -> Any: ...

    def keys(self) -> Iterable[str]: ...


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """What the store needs of a connection: ``sqlite3.Connection``, or psycopg's behind an adapter."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> object: ...


def assignments(fields: dict[str, Any]) -> tuple[str, list[Any]]:
    """``a = ?, b = ?`` and the values, for an UPDATE's SET (the keys are the store's own column names)."""
    return ", ".join(f"{key} = ?" for key in fields), list(fields.values())


def first_row(cur: Cursor) -> Any:
    """The first row a statement returned, or None; reads them all, so the statement is finished
    (SQLite refuses to COMMIT while an ``UPDATE ... RETURNING`` has rows left to step through)."""
    rows = cur.fetchall()
    return rows[0] if rows else None
