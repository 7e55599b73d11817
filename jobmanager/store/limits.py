"""Concurrency limits: a database fact across all agents.

A limit row (name, type, queue, per_case, max_running) means "at most max_running running tasks of the
jobs matching type and queue (NULL: any), per case when per_case". How it holds on both backends:
- claim_task refuses a task whose limit is full inside its transaction: the task stays queued with
  ``waiting`` set to the reason and spends no attempt; its message is consumed, so nothing polls.
- Every transaction that counts or frees a limit's slots first locks the limit's row (SELECT ... FOR
  UPDATE; on SQLite the write lock already serialises everything), before any job or task row, so the
  lock order is agents -> limits (by name) -> jobs -> tasks, and a claim counting the running tasks
  sees every finish that committed before it (READ COMMITTED re-reads per statement).
- When a task matching a limit ends (finish_task, recovery), the same transaction picks the best
  waiting tasks (priority, then age) for the free slots, clears their ``waiting`` and returns their
  dispatches; those rows are taken with SKIP LOCKED, so this never waits for (or deadlocks with) a
  transaction holding one of them.
- The sweep leaves waiting tasks out (no busy loop) and calls wake_waiting for lost wake-ups.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jobmanager.engine.states import RUNNABLE_TASK
from jobmanager.errors import NotFound
from jobmanager.models import Dispatch
from jobmanager.store.connection import Connection, Row, first_row

if TYPE_CHECKING:
    from jobmanager.store.sql import SqlStore

#: whether limit ``l`` counts job ``j``'s tasks (its type and queue; a per-case limit counts each case apart)
COUNTS_JOB = "(l.type IS NULL OR l.type = j.type) AND (l.queue IS NULL OR l.queue = j.queue)"

#: :meth:`Limits.wake`'s default: a per-case limit's free slots are counted in every case
ALL_CASES = object()


def describe_limit(type: str | None, queue: str | None, per_case: bool, max_running: int) -> str:
    """``at most 2 print_to_pdf running in queue pdf per case``: a limit in words."""
    where = f" in queue {queue}" if queue is not None else ""
    return f"at most {max_running} {type or 'tasks'} running{where}" + (" per case" if per_case else "")


class Limits:
    """``store.limits``: the limit rows, and the rule a claim, a finish and a recovery apply inside their
    own transactions (:meth:`lock` first, then :meth:`full` or :meth:`wake`)."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    # -- inside a transition's transaction -----------------------------------------------------------------
    def lock(self, c: Connection, jobs: str, params: Sequence[Any]) -> list[Row]:
        """The limits matching any job of ``FROM {jobs}`` (alias ``j``), locked in name order."""
        return list(c.execute(
            "SELECT * FROM limits l WHERE EXISTS (SELECT 1 FROM " + jobs + f" AND {COUNTS_JOB})"
            " ORDER BY name" + self._store.dialect.for_update,
            params,
        ).fetchall())

    @staticmethod
    def _match(limit: Row, case: Any) -> tuple[str, list[Any]]:
        """The jobs (alias ``j``) a limit counts; ``case`` (one case, or None for no case) if per case."""
        parts, values = ["1 = 1"], []
        for column in ("type", "queue"):
            if limit[column] is not None:
                parts.append(f"j.{column} = ?")
                values.append(limit[column])
        if limit["per_case"]:
            if case is None:
                parts.append("j.case_id IS NULL")
            else:
                parts.append("j.case_id = ?")
                values.append(case)
        return " AND ".join(parts), values

    def _running(self, c: Connection, limit: Row, case: Any) -> int:
        match, values = self._match(limit, case)
        row = c.execute(
            f"SELECT count(*) AS n FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.state = 'running' AND {match}",
            values,
        ).fetchone()
        return int(row["n"])

    def full(self, c: Connection, limits: list[Row], job: Row) -> str | None:
        """Why a task of ``job`` may not start now (the first full limit), or None."""
        for limit in limits:
            n = self._running(c, limit, job["case_id"])
            if n >= limit["max_running"]:
                what = limit["type"] or "tasks"
                where = f" in queue {limit['queue']}" if limit["queue"] is not None else ""
                if limit["per_case"]:
                    where += f" in case {job['case_id']}" if job["case_id"] is not None else " without a case"
                return f"waiting: {n}/{limit['max_running']} {what} running{where} (limit {limit['name']})"
        return None

    def wake(self, c: Connection, limits: list[Row], case: Any = ALL_CASES) -> list[Dispatch]:
        """Messages for the best waiting tasks that fit in the free slots of ``limits`` (locked), their
        ``waiting`` cleared; a per-case limit's slots are counted in ``case`` (else in every case)."""
        out: list[Dispatch] = []
        runnable, runnable_values = self._store.dialect.in_("t.state", RUNNABLE_TASK)
        waiting = f"t.waiting IS NOT NULL AND {runnable} AND j.state IN ('queued', 'running')"
        for limit in limits:
            cases: list[Any] = [None]
            if limit["per_case"]:
                if case is ALL_CASES:
                    no_case = {**dict(limit), "per_case": 0}
                    match, values = self._match(no_case, None)
                    cases = [r["case_id"] for r in c.execute(
                        f"SELECT DISTINCT j.case_id FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE {waiting}"
                        f" AND {match}", (*runnable_values, *values)).fetchall()]
                else:
                    cases = [case]
            for one in cases:
                free = limit["max_running"] - self._running(c, limit, one)
                if free <= 0:
                    continue
                match, values = self._match(limit, one)
                out += self._take_waiting(c, f"{waiting} AND {match}", [*runnable_values, *values], free)
        return out

    def _take_waiting(self, c: Connection, where: str, values: list[Any], limit: int | None) -> list[Dispatch]:
        """Clear ``waiting`` of the best ``limit`` tasks matching ``where`` (rows others hold are skipped)."""
        rows = c.execute(
            "SELECT t.id, t.dispatch, j.priority, j.queue, t.job_id FROM tasks t JOIN jobs j ON j.id = t.job_id"
            f" WHERE {where} ORDER BY j.priority DESC, t.id" + (" LIMIT ?" if limit is not None else "")
            + self._store.dialect.skip_locked,
            (*values, *([limit] if limit is not None else [])),
        ).fetchall()
        if rows:
            ids, id_values = self._store.dialect.in_("id", [r["id"] for r in rows])
            c.execute(f"UPDATE tasks SET waiting = NULL WHERE {ids}", id_values)
        return [Dispatch(r["id"], r["dispatch"], r["priority"], r["queue"], r["job_id"]) for r in rows]

    def wake_all(self, c: Connection) -> list[Dispatch]:
        """Wake what fits under every limit, and every waiting task no limit matches any more."""
        limits = c.execute("SELECT * FROM limits ORDER BY name" + self._store.dialect.for_update).fetchall()
        out = self.wake(c, limits)
        runnable, runnable_values = self._store.dialect.in_("t.state", RUNNABLE_TASK)
        out += self._take_waiting(
            c, f"t.waiting IS NOT NULL AND {runnable} AND j.state IN ('queued', 'running') AND NOT EXISTS"
               f" (SELECT 1 FROM limits l WHERE {COUNTS_JOB})",
            list(runnable_values), None,
        )
        return out

    # -- the limits' own transactions ----------------------------------------------------------------------
    def wake_waiting(self) -> list[Dispatch]:
        """The sweep's catch of lost wake-ups: :meth:`wake_all` when some runnable task is waiting."""
        runnable, values = self._store.dialect.in_("state", RUNNABLE_TASK)
        waiting = f"SELECT 1 AS x FROM tasks WHERE waiting IS NOT NULL AND {runnable} LIMIT 1"
        if self._store._fetchone(waiting, values) is None:
            return []
        return self._store._retrying(self.wake_all)

    def save(self, name: str, *, type: str | None, queue: str | None, per_case: bool, max_running: int,
                  actor: str) -> list[Dispatch]:
        """Create or replace limit ``name``: at most ``max_running`` running tasks of the jobs of ``type``
        in ``queue`` (None: any), per case if ``per_case``. Returns the messages of waiting tasks that
        now fit (and of those no limit holds back any more)."""
        def write(c: Connection) -> list[Dispatch]:
            now = time.time()
            c.execute("SELECT name FROM limits ORDER BY name" + self._store.dialect.for_update).fetchall()
            c.execute(
                "INSERT INTO limits (name, type, queue, per_case, max_running, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT (name) DO UPDATE SET type = excluded.type,"
                " queue = excluded.queue, per_case = excluded.per_case, max_running = excluded.max_running,"
                " updated_at = excluded.updated_at",
                (name, type, queue, int(per_case), max_running, now, now),
            )
            described = describe_limit(type, queue, per_case, max_running)
            self._store._event(c, "limit", actor=actor, message=f"limit {name} set: {described}")
            return self.wake_all(c)

        return self._store._retrying(write)

    def delete(self, name: str, *, actor: str) -> list[Dispatch]:
        """Delete a limit (NotFound if there is none); returns the messages of tasks it held back."""
        def delete(c: Connection) -> list[Dispatch]:
            c.execute("SELECT name FROM limits ORDER BY name" + self._store.dialect.for_update).fetchall()
            if first_row(c.execute("DELETE FROM limits WHERE name = ? RETURNING name", (name,))) is None:
                raise NotFound(f"no limit {name!r}")
            self._store._event(c, "limit", actor=actor, message=f"limit {name} deleted")
            return self.wake_all(c)

        return self._store._retrying(delete)

    def list_all(self) -> list[dict[str, Any]]:
        """The limits, with the tasks running and waiting that each matches."""
        out = []
        with self._store._read() as c:
            for r in c.execute("SELECT * FROM limits ORDER BY name").fetchall():
                d = dict(r)
                d["per_case"] = bool(d["per_case"])
                d["running"] = self._running(c, {**dict(r), "per_case": 0}, None)
                runnable, values = self._store.dialect.in_("t.state", RUNNABLE_TASK)
                match, match_values = self._match({**dict(r), "per_case": 0}, None)
                d["waiting"] = int(c.execute(
                    f"SELECT count(*) AS n FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.waiting IS NOT NULL"
                    f" AND {runnable} AND {match}", (*values, *match_values)).fetchone()["n"])
                out.append(d)
        return out
