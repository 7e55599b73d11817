"""The schedule half of the SQLite store (a mixin of :class:`SQLiteStore`).

Firing is a database fact: one transaction moves ``next_run_at`` on only if it
still holds the due time (compare-and-set) and inserts the (schedule, due time)
row whose primary key refuses a second firing, then creates the job. However
many agents look at once, each due run becomes exactly one job.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from ..errors import InvalidState, NotFound
from ..models import Dispatch, NewTask

SCHEDULE_FIELDS = (
    "name", "type", "params", "owner", "case_id", "priority", "trigger_kind", "trigger_value", "timezone",
    "anchor", "misfire", "enabled", "next_run_at", "source_kind", "source_ref",
)


def _row(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    d["params"] = json.loads(d["params"])
    d["enabled"] = bool(d["enabled"])
    return d


class SQLiteSchedules:
    # provided by SQLiteStore
    _tx: Any
    _conn: Any
    _event: Any
    _insert_job: Any

    def save_schedule(self, spec: dict[str, Any], *, actor: str, create_only: bool = False) -> int:
        """Create a schedule, or (unless ``create_only``) replace the one with the same name."""
        now = time.time()
        values = [json.dumps(spec["params"]) if k == "params" else spec.get(k) for k in SCHEDULE_FIELDS]
        values[SCHEDULE_FIELDS.index("enabled")] = int(bool(spec.get("enabled", True)))
        with self._tx() as c:
            old = c.execute("SELECT id FROM schedules WHERE name = ?", (spec["name"],)).fetchone()
            if old is not None and create_only:
                raise InvalidState(f"schedule {spec['name']!r} already exists; edit it or choose another name")
            if old is None:
                cur = c.execute(
                    f"INSERT INTO schedules ({', '.join(SCHEDULE_FIELDS)}, created_at, updated_at)"
                    f" VALUES ({', '.join('?' * len(SCHEDULE_FIELDS))}, ?, ?)",
                    (*values, now, now),
                )
                sid = int(cur.lastrowid)
                self._event(c, "schedule", actor=actor, message=f"schedule {spec['name']} created")
            else:
                sid = old["id"]
                c.execute(
                    f"UPDATE schedules SET {', '.join(f'{k} = ?' for k in SCHEDULE_FIELDS)}, updated_at = ?"
                    " WHERE id = ?",
                    (*values, now, sid),
                )
                self._event(c, "schedule", actor=actor, message=f"schedule {spec['name']} updated")
            return sid

    def get_schedule(self, name: str) -> dict[str, Any]:
        row = self._conn().execute("SELECT * FROM schedules WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no schedule {name!r}")
        return _row(row)

    def list_schedules(self) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT s.*, j.state AS last_job_state FROM schedules s LEFT JOIN jobs j ON j.id = s.last_job_id"
            " ORDER BY s.name"
        ).fetchall()
        return [_row(r) for r in rows]

    def update_schedule(self, name: str, fields: dict[str, Any], *, actor: str, message: str) -> None:
        unknown = set(fields) - set(SCHEDULE_FIELDS)
        if unknown:
            raise ValueError(f"unknown schedule fields {sorted(unknown)}")
        values = [json.dumps(v) if k == "params" else v for k, v in fields.items()]
        with self._tx() as c:
            cur = c.execute(
                f"UPDATE schedules SET {', '.join(f'{k} = ?' for k in fields)}, updated_at = ? WHERE name = ?",
                (*values, time.time(), name),
            )
            if cur.rowcount != 1:
                raise NotFound(f"no schedule {name!r}")
            self._event(c, "schedule", actor=actor, message=f"schedule {name} {message}")

    def delete_schedule(self, name: str, *, actor: str) -> None:
        with self._tx() as c:
            row = c.execute("SELECT id FROM schedules WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no schedule {name!r}")
            c.execute("DELETE FROM schedules WHERE id = ?", (row["id"],))
            self._event(c, "schedule", actor=actor, message=f"schedule {name} deleted")

    def due_schedules(self, now: float) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT * FROM schedules WHERE enabled = 1 AND next_run_at IS NOT NULL AND next_run_at <= ?"
            " ORDER BY next_run_at",
            (now,),
        ).fetchall()
        return [_row(r) for r in rows]

    def fire_schedule(
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
    ) -> tuple[int | None, list[Dispatch]] | None:
        """Fire (or, with ``tasks=None``, skip) the run due at ``schedule['next_run_at']``.

        Returns None when another agent fired it first; else the new job id (None
        when skipped) and its queue messages.
        """
        try:
            return self._fire(schedule, next_run_at, agent=agent, tasks=tasks, has_finish=has_finish,
                              retries=retries, outcome=outcome, message=message)
        except _AlreadyFired:  # rolled back: nothing of this attempt was written
            return None

    def _fire(
        self, schedule: dict[str, Any], next_run_at: float | None, *, agent: str, tasks: list[NewTask] | None,
        has_finish: bool, retries: int, outcome: str, message: str | None,
    ) -> tuple[int | None, list[Dispatch]] | None:
        due = schedule["next_run_at"]
        now = time.time()
        with self._tx() as c:
            cur = c.execute(
                "UPDATE schedules SET next_run_at = ?, updated_at = ? WHERE id = ? AND next_run_at = ? AND enabled = 1",
                (next_run_at, now, schedule["id"], due),
            )
            if cur.rowcount != 1:
                return None
            try:
                c.execute(
                    "INSERT INTO schedule_runs (schedule_id, due_at, fired_at, outcome, agent, message)"
                    " VALUES (?,?,?,?,?,?)",
                    (schedule["id"], due, now, outcome, agent, message),
                )
            except sqlite3.IntegrityError:
                raise _AlreadyFired() from None
            if tasks is None:
                self._event(c, "schedule", agent=agent, message=f"schedule {schedule['name']}: {message}")
                return None, []
            job_id, dispatches = self._insert_job(
                c, type=schedule["type"], name=schedule["name"], params=schedule["params"], owner=schedule["owner"],
                case=schedule["case_id"], priority=schedule["priority"], retries=retries, has_finish=has_finish,
                tasks=tasks, actor=f"schedule:{schedule['name']}", schedule_id=schedule["id"],
            )
            c.execute("UPDATE schedule_runs SET job_id = ? WHERE schedule_id = ? AND due_at = ?",
                      (job_id, schedule["id"], due))
            c.execute("UPDATE schedules SET last_run_at = ?, last_job_id = ? WHERE id = ?",
                      (now, job_id, schedule["id"]))
            return job_id, dispatches

    def run_schedule_now(
        self, schedule: dict[str, Any], *, tasks: list[NewTask], has_finish: bool, retries: int, actor: str
    ) -> tuple[int, list[Dispatch]]:
        """A manual run: a job now, recorded as the last run; the next run is unchanged."""
        now = time.time()
        with self._tx() as c:
            job_id, dispatches = self._insert_job(
                c, type=schedule["type"], name=schedule["name"], params=schedule["params"], owner=schedule["owner"],
                case=schedule["case_id"], priority=schedule["priority"], retries=retries, has_finish=has_finish,
                tasks=tasks, actor=actor, schedule_id=schedule["id"],
            )
            c.execute(
                "INSERT INTO schedule_runs (schedule_id, due_at, fired_at, outcome, job_id, agent, message)"
                " VALUES (?,?,?,'run-now',?,NULL,?)",
                (schedule["id"], now, now, job_id, f"run now by {actor}"),
            )
            c.execute(
                "UPDATE schedules SET last_run_at = ?, last_job_id = ? WHERE id = ?", (now, job_id, schedule["id"])
            )
            return job_id, dispatches

    def schedule_runs(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        sid = self.get_schedule(name)["id"]
        rows = self._conn().execute(
            "SELECT r.*, j.state AS job_state FROM schedule_runs r LEFT JOIN jobs j ON j.id = r.job_id"
            " WHERE r.schedule_id = ? ORDER BY r.fired_at DESC LIMIT ?",
            (sid, limit),
        ).fetchall()
        return [dict(r) for r in rows]


class _AlreadyFired(Exception):
    """The (schedule, due time) row exists: another agent fired this run."""
