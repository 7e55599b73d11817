"""The audit trail: one row for every action a user or an agent asked for, allowed or refused."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobmanager.store.connection import Connection
    from jobmanager.store.sql import SqlStore

#: one row as :meth:`AuditTrail.record` takes it: (actor, interface, action, target_kind, target, allowed, detail)
AuditRecord = tuple[str, str, str, "str | None", "str | None", bool, "str | None"]


class AuditTrail:
    """``store.audit``: rows are only ever added, never changed (``jobmanager audit``, the dashboard's admin view)."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def record(self, actor: str, interface: str, action: str, target_kind: str | None, target: str | None,
               allowed: bool, detail: str | None = None) -> None:
        """One action: who (``actor``) did what (``action`` on ``target_kind`` ``target``) from where
        (``interface``: cli, python, dashboard, agent), whether it was allowed, and how it went."""
        with self._store._tx() as c:
            self.write(c, [(actor, interface, action, target_kind, target, allowed, detail)])

    @staticmethod
    def write(c: Connection, records: Sequence[AuditRecord]) -> None:
        """Add ``records`` inside the caller's transaction: an action whose outcome is that transaction (a
        submit's) lands with its rows, all or none, and takes the write lock once rather than twice."""
        if records:
            at = time.time()
            c.executemany("INSERT INTO audit (at, actor, interface, action, target_kind, target, allowed, detail)"
                          " VALUES (?,?,?,?,?,?,?,?)",
                          [(at, *r[:5], int(r[5]), r[6]) for r in records])

    def recent(self, limit: int = 200) -> list[dict[str, Any]]:
        """The newest rows first."""
        return [dict(r) for r in self._store._fetchall("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (int(limit),))]
