"""The schedule half of the PostgreSQL store (a mixin of :class:`PostgresStore`).

Firing is a database fact, as on SQLite: one transaction moves ``next_run_at`` on
only if it still holds the due time (the conditional UPDATE locks the schedule
row, so a second agent waits and then matches nothing) and inserts the
(schedule, due time) row whose primary key refuses a second firing.
"""

from __future__ import annotations

import json
import time
from typing import Any

from psycopg import errors as pg_errors

from ..errors import InvalidState, NotFound
from ..models import Dispatch, NewTask
from .sqlite_schedules import SCHEDULE_FIELDS


def _row(r: dict[str, Any]) -> dict[str, Any]:
    d = dict(r)
    d["params"] = json.loads(d["params"])
    d["enabled"] = bool(d["enabled"])
    return d


class _AlreadyFired(Exception):
    """The (schedule, due time) row exists: another agent fired this run."""


class PostgresSchedules:
    # provided by PostgresStore
    _tx: Any
    _read: Any
    _fetchall: Any
    _fetchone: Any
    _event: Any
    _insert_job: Any

    def save_schedule(self, spec: dict[str, Any], *, actor: str, create_only: bool = False) -> int:
        now = time.time()
        values = [json.dumps(spec["params"]) if k == "params" else spec.get(k) for k in SCHEDULE_FIELDS]
        values[SCHEDULE_FIELDS.index("enabled")] = int(bool(spec.get("enabled", True)))
        try:
            with self._tx() as c:
                old = c.execute("SELECT id FROM schedules WHERE name = %s FOR UPDATE", (spec["name"],)).fetchone()
                if old is not None and create_only:
                    raise InvalidState(f"schedule {spec['name']!r} already exists; edit it or choose another name")
                if old is None:
                    row = c.execute(
                        f"INSERT INTO schedules ({', '.join(SCHEDULE_FIELDS)}, created_at, updated_at)"
                        f" VALUES ({', '.join(['%s'] * len(SCHEDULE_FIELDS))}, %s, %s) RETURNING id",
                        (*values, now, now),
                    ).fetchone()
                    sid = int(row["id"])
                    self._event(c, "schedule", actor=actor, message=f"schedule {spec['name']} created")
                else:
                    sid = int(old["id"])
                    c.execute(
                        f"UPDATE schedules SET {', '.join(f'{k} = %s' for k in SCHEDULE_FIELDS)}, updated_at = %s"
                        " WHERE id = %s",
                        (*values, now, sid),
                    )
                    self._event(c, "schedule", actor=actor, message=f"schedule {spec['name']} updated")
                return sid
        except pg_errors.UniqueViolation:  # created by someone else between our SELECT and INSERT
            if create_only:
                raise InvalidState(
                    f"schedule {spec['name']!r} already exists; edit it or choose another name") from None
            return self.save_schedule(spec, actor=actor)

    def get_schedule(self, name: str) -> dict[str, Any]:
        row = self._fetchone("SELECT * FROM schedules WHERE name = %s", (name,))
        if row is None:
            raise NotFound(f"no schedule {name!r}")
        return _row(row)

    def list_schedules(self) -> list[dict[str, Any]]:
        rows = self._fetchall(
            "SELECT s.*, j.state AS last_job_state FROM schedules s LEFT JOIN jobs j ON j.id = s.last_job_id"
            " ORDER BY s.name"
        )
        return [_row(r) for r in rows]

    def update_schedule(self, name: str, fields: dict[str, Any], *, actor: str, message: str) -> None:
        unknown = set(fields) - set(SCHEDULE_FIELDS)
        if unknown:
            raise ValueError(f"unknown schedule fields {sorted(unknown)}")
        values = [json.dumps(v) if k == "params" else int(bool(v)) if k == "enabled" else v
                  for k, v in fields.items()]
        with self._tx() as c:
            cur = c.execute(
                f"UPDATE schedules SET {', '.join(f'{k} = %s' for k in fields)}, updated_at = %s WHERE name = %s",
                (*values, time.time(), name),
            )
            if cur.rowcount != 1:
                raise NotFound(f"no schedule {name!r}")
            self._event(c, "schedule", actor=actor, message=f"schedule {name} {message}")

    def delete_schedule(self, name: str, *, actor: str) -> None:
        with self._tx() as c:
            row = c.execute("DELETE FROM schedules WHERE name = %s RETURNING id", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no schedule {name!r}")
            self._event(c, "schedule", actor=actor, message=f"schedule {name} deleted")

    def due_schedules(self, now: float) -> list[dict[str, Any]]:
        rows = self._fetchall(
            "SELECT * FROM schedules WHERE enabled = 1 AND next_run_at IS NOT NULL AND next_run_at <= %s"
            " ORDER BY next_run_at",
            (now,),
        )
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
        """Fire (or, with ``tasks=None``, skip) the run due at ``schedule['next_run_at']`` exactly once."""
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
                "UPDATE schedules SET next_run_at = %s, updated_at = %s"
                " WHERE id = %s AND next_run_at = %s AND enabled = 1",
                (next_run_at, now, schedule["id"], due),
            )
            if cur.rowcount != 1:
                return None
            cur = c.execute(
                "INSERT INTO schedule_runs (schedule_id, due_at, fired_at, outcome, agent, message)"
                " VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (schedule_id, due_at) DO NOTHING",
                (schedule["id"], due, now, outcome, agent, message),
            )
            if cur.rowcount != 1:
                raise _AlreadyFired()
            if tasks is None:
                self._event(c, "schedule", agent=agent, message=f"schedule {schedule['name']}: {message}")
                return None, []
            job_id, dispatches = self._insert_job(
                c, type=schedule["type"], name=schedule["name"], params=schedule["params"], owner=schedule["owner"],
                case=schedule["case_id"], priority=schedule["priority"], retries=retries, has_finish=has_finish,
                tasks=tasks, actor=f"schedule:{schedule['name']}", schedule_id=schedule["id"],
            )
            c.execute("UPDATE schedule_runs SET job_id = %s WHERE schedule_id = %s AND due_at = %s",
                      (job_id, schedule["id"], due))
            c.execute("UPDATE schedules SET last_run_at = %s, last_job_id = %s WHERE id = %s",
                      (now, job_id, schedule["id"]))
            return job_id, dispatches

    def run_schedule_now(
        self, schedule: dict[str, Any], *, tasks: list[NewTask], has_finish: bool, retries: int, actor: str
    ) -> tuple[int, list[Dispatch]]:
        now = time.time()
        with self._tx() as c:
            job_id, dispatches = self._insert_job(
                c, type=schedule["type"], name=schedule["name"], params=schedule["params"], owner=schedule["owner"],
                case=schedule["case_id"], priority=schedule["priority"], retries=retries, has_finish=has_finish,
                tasks=tasks, actor=actor, schedule_id=schedule["id"],
            )
            c.execute(
                "INSERT INTO schedule_runs (schedule_id, due_at, fired_at, outcome, job_id, agent, message)"
                " VALUES (%s,%s,%s,'run-now',%s,NULL,%s) ON CONFLICT (schedule_id, due_at) DO NOTHING",
                (schedule["id"], now, now, job_id, f"run now by {actor}"),
            )
            c.execute("UPDATE schedules SET last_run_at = %s, last_job_id = %s WHERE id = %s",
                      (now, job_id, schedule["id"]))
            return job_id, dispatches

    def schedule_runs(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        sid = self.get_schedule(name)["id"]
        return self._fetchall(
            "SELECT r.*, j.state AS job_state FROM schedule_runs r LEFT JOIN jobs j ON j.id = r.job_id"
            " WHERE r.schedule_id = %s ORDER BY r.fired_at DESC LIMIT %s",
            (sid, int(limit)),
        )
