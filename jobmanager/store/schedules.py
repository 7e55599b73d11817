"""Schedules' rows: what each schedule runs and when, and the record of every run it fired.

The rules of schedules (triggers, misfires, who a schedule runs as, the schedules file) are
:mod:`jobmanager.schedules`'; this is only their storage. Firing is a database fact: one transaction moves
``next_run_at`` on only if it still holds the due time (compare-and-set) and inserts the (schedule, due
time) row whose primary key refuses a second firing, so two agents never fire one run twice.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from jobmanager.errors import InvalidState, NotFound
from jobmanager.models import Dispatch, JobOptions, NewTask
from jobmanager.store.connection import Connection, Row, assignments, first_row

if TYPE_CHECKING:
    from jobmanager.store.sql import SqlStore

#: the columns a schedule is saved with
SCHEDULE_FIELDS = (
    "name", "type", "params", "owner", "case_id", "priority", "trigger_kind", "trigger_value", "timezone",
    "anchor", "misfire", "enabled", "next_run_at", "source_kind", "source_ref", "options",
)


class _AlreadyFired(Exception):
    """The (schedule, due time) row exists: another agent fired this run."""


class Schedules:
    """``store.schedules``: a schedule's row and its runs, in the store's transactions (a run's job is
    inserted by the store's own job insert, in the same transaction)."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def save(self, spec: dict[str, Any], *, actor: str, create_only: bool = False) -> int:
        """Create a schedule, or (unless ``create_only``) replace the one with the same name."""
        with self._store._tx() as c:
            return self._save(c, spec, actor, create_only)

    def sync(self, saves: list[dict[str, Any]], deletes: list[str], *, actor: str) -> None:
        """Save and delete several schedules in one transaction: all of them, or (on any error) none."""
        with self._store._tx() as c:
            for spec in saves:
                self._save(c, spec, actor, False)
            for name in deletes:
                self._delete(c, name, actor)

    def _save(self, c: Connection, spec: dict[str, Any], actor: str, create_only: bool) -> int:
        now = time.time()
        values = [json.dumps(spec.get(k) or {}) if k in ("params", "options") else spec.get(k) for k in SCHEDULE_FIELDS]
        values[SCHEDULE_FIELDS.index("enabled")] = int(bool(spec.get("enabled", True)))
        find = f"SELECT id FROM schedules WHERE name = ?{self._store.dialect.for_update}"
        old = c.execute(find, (spec["name"],)).fetchone()
        if old is None:
            row = first_row(c.execute(
                f"INSERT INTO schedules ({', '.join(SCHEDULE_FIELDS)}, created_at, updated_at)"
                f" VALUES ({', '.join('?' * len(SCHEDULE_FIELDS))}, ?, ?)"
                " ON CONFLICT (name) DO NOTHING RETURNING id",
                (*values, now, now),
            ))
            if row is not None:
                self._store._event(c, "schedule", actor=actor, message=f"schedule {spec['name']} created")
                return int(row["id"])
            old = c.execute(find, (spec["name"],)).fetchone()  # created by another writer since our SELECT
        if create_only:
            raise InvalidState(f"schedule {spec['name']!r} already exists; edit it or choose another name")
        sid = int(old["id"])
        c.execute(
            f"UPDATE schedules SET {', '.join(f'{k} = ?' for k in SCHEDULE_FIELDS)}, updated_at = ? WHERE id = ?",
            (*values, now, sid),
        )
        self._store._event(c, "schedule", actor=actor, message=f"schedule {spec['name']} updated")
        return sid

    def get(self, name: str) -> dict[str, Any]:
        row = self._store._fetchone("SELECT * FROM schedules WHERE name = ?", (name,))
        if row is None:
            raise NotFound(f"no schedule {name!r}")
        return _schedule(row)

    def list_all(self) -> list[dict[str, Any]]:
        """Every schedule, with ``last_job_state`` joined in."""
        rows = self._store._fetchall(
            "SELECT s.*, j.state AS last_job_state FROM schedules s LEFT JOIN jobs j ON j.id = s.last_job_id"
            " ORDER BY s.name"
        )
        return [_schedule(r) for r in rows]

    def update(self, name: str, fields: dict[str, Any], *, actor: str, message: str) -> None:
        unknown = set(fields) - set(SCHEDULE_FIELDS)
        if unknown:
            raise ValueError(f"unknown schedule fields {sorted(unknown)}")
        sets, values = assignments({k: json.dumps(v) if k == "params" else int(bool(v)) if k == "enabled" else v
                                     for k, v in fields.items()})
        with self._store._tx() as c:
            cur = c.execute(f"UPDATE schedules SET {sets}, updated_at = ? WHERE name = ?", (*values, time.time(), name))
            if cur.rowcount != 1:
                raise NotFound(f"no schedule {name!r}")
            self._store._event(c, "schedule", actor=actor, message=f"schedule {name} {message}")

    def delete(self, name: str, *, actor: str) -> None:
        with self._store._tx() as c:
            self._delete(c, name, actor)

    def _delete(self, c: Connection, name: str, actor: str) -> None:
        if first_row(c.execute("DELETE FROM schedules WHERE name = ? RETURNING id", (name,))) is None:
            raise NotFound(f"no schedule {name!r}")
        self._store._event(c, "schedule", actor=actor, message=f"schedule {name} deleted")

    def due(self, now: float) -> list[dict[str, Any]]:
        rows = self._store._fetchall(
            "SELECT * FROM schedules WHERE enabled = 1 AND next_run_at IS NOT NULL AND next_run_at <= ?"
            " ORDER BY next_run_at",
            (now,),
        )
        return [_schedule(r) for r in rows]

    def fire(
        self,
        schedule: dict[str, Any],
        next_run_at: float | None,
        *,
        agent: str,
        tasks: list[NewTask] | None,
        has_finish: bool = False,
        retries: int = 0,
        outcome: str = "fired",
        message: str | None = None,
        options: JobOptions = JobOptions(),
    ) -> tuple[int | None, list[Dispatch]] | None:
        """Fire (or, with ``tasks=None``, skip) the run due at ``schedule['next_run_at']``.

        Returns None when another agent fired it first; else the new job id (None
        when skipped) and its queue messages.
        """
        try:
            return self._fire(schedule, next_run_at, agent=agent, tasks=tasks, has_finish=has_finish,
                              retries=retries, outcome=outcome, message=message, options=options)
        except _AlreadyFired:  # rolled back: nothing of this attempt was written
            return None

    def _fire(
        self, schedule: dict[str, Any], next_run_at: float | None, *, agent: str, tasks: list[NewTask] | None,
        has_finish: bool, retries: int, outcome: str, message: str | None, options: JobOptions,
    ) -> tuple[int | None, list[Dispatch]] | None:
        due = schedule["next_run_at"]
        now = time.time()
        with self._store._tx() as c:
            # On PostgreSQL the UPDATE locks the schedule row: a second agent waits, then matches nothing.
            cur = c.execute(
                "UPDATE schedules SET next_run_at = ?, updated_at = ? WHERE id = ? AND next_run_at = ? AND enabled = 1",
                (next_run_at, now, schedule["id"], due),
            )
            if cur.rowcount != 1:
                return None
            cur = c.execute(
                "INSERT INTO schedule_runs (schedule_id, due_at, fired_at, outcome, agent, message)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT (schedule_id, due_at) DO NOTHING",
                (schedule["id"], due, now, outcome, agent, message),
            )
            if cur.rowcount != 1:
                raise _AlreadyFired()
            if tasks is None:
                self._store._event(c, "schedule", agent=agent, message=f"schedule {schedule['name']}: {message}")
                return None, []
            job_id, dispatches = self._store._insert_job(
                c, type=schedule["type"], name=schedule["name"], params=schedule["params"], owner=schedule["owner"],
                case=schedule["case_id"], priority=schedule["priority"], retries=retries, has_finish=has_finish,
                tasks=tasks, actor=f"schedule:{schedule['name']}", schedule_id=schedule["id"], options=options,
            )
            c.execute("UPDATE schedule_runs SET job_id = ? WHERE schedule_id = ? AND due_at = ?",
                      (job_id, schedule["id"], due))
            c.execute("UPDATE schedules SET last_run_at = ?, last_job_id = ? WHERE id = ?",
                      (now, job_id, schedule["id"]))
            return job_id, dispatches

    def run_now(
        self, schedule: dict[str, Any], *, tasks: list[NewTask], has_finish: bool, retries: int, actor: str,
        options: JobOptions = JobOptions(),
    ) -> tuple[int, list[Dispatch]]:
        """A manual run: a job now, recorded as the last run; the next run is unchanged."""
        now = time.time()
        with self._store._tx() as c:
            job_id, dispatches = self._store._insert_job(
                c, type=schedule["type"], name=schedule["name"], params=schedule["params"], owner=schedule["owner"],
                case=schedule["case_id"], priority=schedule["priority"], retries=retries, has_finish=has_finish,
                tasks=tasks, actor=actor, schedule_id=schedule["id"], options=options,
            )
            c.execute(
                "INSERT INTO schedule_runs (schedule_id, due_at, fired_at, outcome, job_id, agent, message)"
                " VALUES (?,?,?,'run-now',?,NULL,?) ON CONFLICT (schedule_id, due_at) DO NOTHING",
                (schedule["id"], now, now, job_id, f"run now by {actor}"),
            )
            c.execute("UPDATE schedules SET last_run_at = ?, last_job_id = ? WHERE id = ?",
                      (now, job_id, schedule["id"]))
            return job_id, dispatches

    def runs(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        """A schedule's runs, newest first, each with its job's state."""
        sid = self.get(name)["id"]
        rows = self._store._fetchall(
            "SELECT r.*, j.state AS job_state FROM schedule_runs r LEFT JOIN jobs j ON j.id = r.job_id"
            " WHERE r.schedule_id = ? ORDER BY r.fired_at DESC LIMIT ?",
            (sid, int(limit)),
        )
        return [dict(r) for r in rows]


def _schedule(r: Row) -> dict[str, Any]:
    d = dict(r)
    d["params"] = json.loads(d["params"])
    d["enabled"] = bool(d["enabled"])
    d["options"] = json.loads(d["options"])
    return d
