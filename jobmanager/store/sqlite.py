"""The SQLite job store: WAL mode, one writer at a time, short transactions.

Each thread gets its own connection (SQLite connections are not shared across
threads here). Writes run in ``BEGIN IMMEDIATE`` so the write lock is taken up
front and a busy database waits (busy timeout) instead of failing half-way.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import HomeError, InvalidState, NotFound
from ..models import Claim, Dispatch, Job, NewTask, Outcome, Task
from ..states import DONE_TASK, FINISHED, IN_PROGRESS, RUNNABLE_TASK
from ..trouble import storage_problem
from .base import SCHEMA_VERSION, JobStore
from .schema import SQLITE_DDL
from .sqlite_agents import LOST_AFTER_INTERVALS, SQLiteAgents, _pid_alive  # noqa: F401 (postgres.py)
from .sqlite_schedules import SQLiteSchedules
from .sqlite_users import SQLiteUsers

BUSY_TIMEOUT_S = 30.0

_COUNTER = {"succeeded": "tasks_succeeded", "failed": "tasks_failed", "cancelled": "tasks_cancelled"}


def _in(values: tuple[str, ...]) -> str:
    """Placeholders for an IN list of constants (the values are still bound)."""
    return "(" + ",".join("?" * len(values)) + ")"


class SQLiteStore(SQLiteAgents, SQLiteSchedules, SQLiteUsers, JobStore):
    def __init__(self, path: str | os.PathLike[str], *, create: bool = False) -> None:
        self.path = Path(path)
        self._local = threading.local()
        if not create and not self.path.exists():
            raise HomeError(f"no job store at {self.path}")
        self.initialize(create=create)

    # -- connections and transactions ------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: the write lock is taken at BEGIN, not half-way.

        A full disk or a permission problem becomes one HomeError line that says so (and the
        transaction is rolled back, even when COMMIT itself failed, so the connection works
        again once there is room).
        """
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise
        except sqlite3.OperationalError as exc:
            problem = storage_problem(exc, self.path)
            if problem is None:
                raise
            raise HomeError(problem) from exc

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several SELECTs."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- schema ---------------------------------------------------------------------------
    def initialize(self, create: bool = True) -> None:
        try:
            conn = self._conn()
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:  # say what it is: a full disk, a permission, or not a store
            problem = storage_problem(exc, self.path)
            if problem is None and getattr(exc, "sqlite_errorname", "") != "SQLITE_NOTADB":
                problem = f"cannot open {self.path}: {exc}"
            raise HomeError(problem or f"{self.path} is not a Job Manager store ({exc})") from None
        if "meta" not in tables:
            if tables or not create:
                raise HomeError(f"{self.path} is not a Job Manager store (no meta table)")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise HomeError(f"{self.path}: could not switch to WAL mode (got {mode})")
            conn.executescript(
                "BEGIN IMMEDIATE;" + SQLITE_DDL
                + f"INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}'); COMMIT;"
            )
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise HomeError(
                f"{self.path} has schema version {version}, newer than this jobmanager "
                f"understands ({SCHEMA_VERSION}); upgrade jobmanager"
            )
        self._add_missing_objects(tables)

    def _add_missing_objects(self, tables: set[str]) -> None:
        """Indexes, tables and triggers added to version 1 after a store was made (all IF NOT EXISTS)."""
        conn = self._conn()
        have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if {"job_counts", "job_counts_update", "tasks_agent_job"} <= have:
            return
        conn.executescript("BEGIN IMMEDIATE;" + SQLITE_DDL + "COMMIT;")
        if "job_counts" not in have:
            with self._tx() as c:
                c.execute("DELETE FROM job_counts")
                c.execute("INSERT INTO job_counts (state, n) SELECT state, count(*) FROM jobs GROUP BY state")

    def job_counts(self) -> dict[str, int]:
        """Jobs per state, from the trigger-kept counters (no scan)."""
        return {r[0]: int(r[1]) for r in self._conn().execute("SELECT state, n FROM job_counts")}

    def schema_version(self) -> int:
        row = self._conn().execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            raise HomeError(f"{self.path} is not a Job Manager store (no schema version)")
        return int(row[0])

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _event(
        c: sqlite3.Connection,
        kind: str,
        *,
        job_id: int | None = None,
        task_id: int | None = None,
        seq: int | None = None,
        from_state: str | None = None,
        to_state: str | None = None,
        agent: str | None = None,
        actor: str | None = None,
        message: str | None = None,
        at: float | None = None,
    ) -> None:
        c.execute(
            "INSERT INTO events (at, job_id, task_id, seq, kind, from_state, to_state, agent, actor, message)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            (at or time.time(), job_id, task_id, seq, kind, from_state, to_state, agent, actor, message),
        )

    def _job_row(self, c: sqlite3.Connection, job_id: int) -> sqlite3.Row:
        row = c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return row

    def _task_state(
        self,
        c: sqlite3.Connection,
        task: sqlite3.Row,
        new_state: str,
        *,
        by: str | None = None,
        actor: str | None = None,
        message: str | None = None,
        require_agent: str | None = None,
        **fields: Any,
    ) -> bool:
        """Move one task from the state it was read in to ``new_state``, conditionally.

        Keeps the job's per-state counters and writes the event. Returns False when
        someone else changed the task first.
        """
        now = time.time()
        sets = ["state = ?"]
        values: list[Any] = [new_state]
        for key, value in fields.items():
            sets.append(f"{key} = ?")
            values.append(value)
        where = "id = ? AND state = ? AND dispatch = ?"
        values += [task["id"], task["state"], task["dispatch"]]
        if require_agent is not None:
            where += " AND agent = ?"
            values.append(require_agent)
        cur = c.execute(f"UPDATE tasks SET {', '.join(sets)} WHERE {where}", values)
        if cur.rowcount != 1:
            return False
        old, new = _COUNTER.get(task["state"]), _COUNTER.get(new_state)
        if old != new:
            parts = ([f"{old} = {old} - 1"] if old else []) + ([f"{new} = {new} + 1"] if new else [])
            c.execute(f"UPDATE jobs SET {', '.join(parts)}, updated_at = ? WHERE id = ?", (now, task["job_id"]))
        self._event(
            c, "task", job_id=task["job_id"], task_id=task["id"], seq=task["seq"],
            from_state=task["state"], to_state=new_state, agent=by, actor=actor, message=message, at=now,
        )
        return True

    def _job_state(
        self,
        c: sqlite3.Connection,
        job: sqlite3.Row,
        new_state: str,
        *,
        by: str | None = None,
        actor: str | None = None,
        message: str | None = None,
        **fields: Any,
    ) -> bool:
        now = time.time()
        sets = ["state = ?", "updated_at = ?"]
        values: list[Any] = [new_state, now]
        for key, value in fields.items():
            sets.append(f"{key} = ?")
            values.append(value)
        values += [job["id"], job["state"]]
        cur = c.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ? AND state = ?", values)
        if cur.rowcount != 1:
            return False
        self._event(
            c, "job", job_id=job["id"], from_state=job["state"], to_state=new_state,
            agent=by, actor=actor, message=message, at=now,
        )
        return True

    @staticmethod
    def _final_state(job: sqlite3.Row) -> str:
        if job["tasks_succeeded"] == job["tasks_total"]:
            return "completed"
        if job["tasks_succeeded"] == 0:
            return "failed"
        return "completed_with_errors"

    def _failure_summary(self, c: sqlite3.Connection, job: sqlite3.Row) -> str | None:
        bad = job["tasks_failed"] + job["tasks_cancelled"]
        if not bad:
            return None
        first = c.execute(
            "SELECT name, error FROM tasks WHERE job_id = ? AND state IN ('failed', 'cancelled')"
            " ORDER BY seq LIMIT 1",
            (job["id"],),
        ).fetchone()
        detail = f" (first: {first['name']}: {first['error']})" if first and first["error"] else ""
        return f"{bad} of {job['tasks_total']} tasks failed{detail}"

    def _settle(self, c: sqlite3.Connection, job_id: int, agent: str | None) -> tuple[bool, str | None]:
        """After a task ended: finish the job if nothing is left to run.

        Returns (this agent must run the finishing step, the job's final state).
        """
        job = self._job_row(c, job_id)
        if job["state"] not in IN_PROGRESS:
            return False, None
        left = job["tasks_total"] - job["tasks_succeeded"] - job["tasks_failed"] - job["tasks_cancelled"]
        if left > 0:
            return False, None
        if job["has_finish"] and job["tasks_succeeded"] > 0:
            if job["finisher"] is not None or agent is None:
                return False, None
            c.execute(
                "UPDATE jobs SET finisher = ?, updated_at = ? WHERE id = ? AND finisher IS NULL",
                (agent, time.time(), job_id),
            )
            self._event(c, "finish", job_id=job_id, agent=agent, message="finishing step started")
            return True, None
        final = self._final_state(job)
        self._job_state(
            c, job, final, by=agent, finished_at=time.time(), error=self._failure_summary(c, job)
        )
        return False, final

    def _bump_runnable(self, c: sqlite3.Connection, job: sqlite3.Row) -> list[Dispatch]:
        """Give every runnable task of a job a new dispatch; older messages become stale."""
        c.execute(
            f"UPDATE tasks SET dispatch = dispatch + 1 WHERE job_id = ? AND state IN {_in(RUNNABLE_TASK)}",
            (job["id"], *RUNNABLE_TASK),
        )
        rows = c.execute(
            f"SELECT id, dispatch FROM tasks WHERE job_id = ? AND state IN {_in(RUNNABLE_TASK)} ORDER BY seq",
            (job["id"], *RUNNABLE_TASK),
        ).fetchall()
        return [Dispatch(r["id"], r["dispatch"], job["priority"]) for r in rows]

    # -- jobs ---------------------------------------------------------------------------------
    def create_job(
        self,
        *,
        type: str,
        name: str,
        params: dict[str, Any],
        owner: str,
        case: str | None,
        priority: int,
        retries: int,
        has_finish: bool,
        tasks: list[NewTask],
        actor: str,
    ) -> tuple[int, list[Dispatch]]:
        with self._tx() as c:
            return self._insert_job(
                c, type=type, name=name, params=params, owner=owner, case=case, priority=priority,
                retries=retries, has_finish=has_finish, tasks=tasks, actor=actor,
            )

    def _insert_job(
        self, c: sqlite3.Connection, *, type: str, name: str, params: dict[str, Any], owner: str,
        case: str | None, priority: int, retries: int, has_finish: bool, tasks: list[NewTask], actor: str,
        schedule_id: int | None = None,
    ) -> tuple[int, list[Dispatch]]:
        now = time.time()
        cur = c.execute(
            "INSERT INTO jobs (type, name, params, owner, case_id, priority, state, retries, has_finish,"
            " tasks_total, created_at, updated_at, schedule_id) VALUES (?,?,?,?,?,?,'queued',?,?,?,?,?,?)",
            (type, name, json.dumps(params), owner, case, priority, retries, int(has_finish),
             len(tasks), now, now, schedule_id),
        )
        job_id = int(cur.lastrowid)  # type: ignore[arg-type]
        c.executemany(
            "INSERT INTO tasks (job_id, seq, name, params, state, max_attempts, queued_at)"
            " VALUES (?,?,?,?,'queued',?,?)",
            [(job_id, i + 1, t.name, json.dumps(t.params), 1 + retries, now) for i, t in enumerate(tasks)],
        )
        message = "submitted" if schedule_id is None else f"fired by schedule {schedule_id}"
        self._event(c, "job", job_id=job_id, to_state="queued", actor=actor, message=message, at=now)
        rows = c.execute("SELECT id FROM tasks WHERE job_id = ? ORDER BY seq", (job_id,)).fetchall()
        return job_id, [Dispatch(r["id"], 0, priority) for r in rows]

    @staticmethod
    def _to_task(r: sqlite3.Row) -> Task:
        return Task(
            id=r["id"], job_id=r["job_id"], seq=r["seq"], name=r["name"], params=json.loads(r["params"]),
            state=r["state"], attempts=r["attempts"], max_attempts=r["max_attempts"], dispatch=r["dispatch"],
            agent=r["agent"], progress_done=r["progress_done"], progress_total=r["progress_total"],
            cancel_requested=bool(r["cancel_requested"]), error=r["error"], traceback=r["traceback"],
            queued_at=r["queued_at"], started_at=r["started_at"], finished_at=r["finished_at"],
        )

    @staticmethod
    def _to_job(r: sqlite3.Row, running_fraction: float = 0.0) -> Job:
        total = r["tasks_total"] or 1
        done = r["tasks_succeeded"] + r["tasks_failed"] + r["tasks_cancelled"]
        progress = 1.0 if r["state"] in ("completed",) else min(1.0, (done + running_fraction) / total)
        return Job(
            id=r["id"], type=r["type"], name=r["name"], params=json.loads(r["params"]), owner=r["owner"],
            case=r["case_id"], priority=r["priority"], state=r["state"], retries=r["retries"],
            has_finish=bool(r["has_finish"]), finisher=r["finisher"], tasks_total=r["tasks_total"],
            tasks_succeeded=r["tasks_succeeded"], tasks_failed=r["tasks_failed"],
            tasks_cancelled=r["tasks_cancelled"], error=r["error"], created_at=r["created_at"],
            started_at=r["started_at"], finished_at=r["finished_at"], progress=progress,
            schedule_id=r["schedule_id"],
        )

    def _running_fraction(self, c: sqlite3.Connection, job_id: int) -> float:
        row = c.execute(
            "SELECT COALESCE(SUM(MIN(1.0, progress_done / progress_total)), 0) FROM tasks"
            " WHERE job_id = ? AND state = 'running' AND progress_total > 0",
            (job_id,),
        ).fetchone()
        return float(row[0] or 0.0)

    def get_job(self, job_id: int, *, with_tasks: bool = False) -> Job:
        with self._read() as c:
            row = self._job_row(c, job_id)
            job = self._to_job(row, self._running_fraction(c, job_id))
            if with_tasks:
                job.tasks = [
                    self._to_task(r)
                    for r in c.execute("SELECT * FROM tasks WHERE job_id = ? ORDER BY seq", (job_id,))
                ]
        return job

    def get_tasks(self, job_id: int) -> list[Task]:
        return self.get_job(job_id, with_tasks=True).tasks

    def list_jobs(
        self,
        *,
        states: tuple[str, ...] | None = None,
        type: str | None = None,
        owner: str | None = None,
        case: str | None = None,
        limit: int = 100,
        offset: int = 0,
        scope: dict[str, Any] | None = None,
    ) -> list[Job]:
        where, params = ["1 = 1"], []
        if scope is not None:
            clause, values = scope_sql(scope)
            where.append(clause)
            params += values
        if states:
            where.append(f"state IN {_in(states)}")
            params += list(states)
        for column, value in (("type", type), ("owner", owner), ("case_id", case)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ? OFFSET ?"
        with self._read() as c:
            rows = c.execute(sql, (*params, int(limit), int(offset))).fetchall()
            return [self._to_job(r, self._running_fraction(c, r["id"]) if r["state"] == "running" else 0.0)
                    for r in rows]

    def running_info(self, job_ids: list[int]) -> dict[int, dict[str, Any]]:
        """Progress (with in-task progress) and the agents running each job, for one grid page."""
        if not job_ids:
            return {}
        marks = ",".join("?" * len(job_ids))
        c = self._conn()
        out: dict[int, dict[str, Any]] = {}
        for r in c.execute(f"SELECT * FROM jobs WHERE id IN ({marks})", job_ids).fetchall():
            out[r["id"]] = {"progress": self._to_job(r).progress, "agents": ""}
        for r in c.execute(
            f"SELECT job_id, group_concat(DISTINCT agent) AS agents,"
            f" SUM(CASE WHEN progress_total > 0 THEN MIN(1.0, progress_done / progress_total) ELSE 0 END) AS part"
            f" FROM tasks WHERE job_id IN ({marks}) AND state = 'running' GROUP BY job_id", job_ids,
        ).fetchall():
            info = out.get(r["job_id"])
            if info is not None:
                row = c.execute("SELECT * FROM jobs WHERE id = ?", (r["job_id"],)).fetchone()
                info["agents"] = r["agents"] or ""
                info["progress"] = self._to_job(row, float(r["part"] or 0)).progress
        return out

    def events(self, job_id: int) -> list[dict[str, Any]]:
        with self._read() as c:
            self._job_row(c, job_id)
            rows = c.execute("SELECT * FROM events WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
        return [dict(r) for r in rows]

    # -- what agents do with tasks ---------------------------------------------------------------
    def claim_task(self, task_id: int, dispatch: int, agent: str) -> Claim | None:
        now = time.time()
        with self._tx() as c:
            task = c.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if task is None or task["dispatch"] != dispatch or task["state"] not in RUNNABLE_TASK:
                return None
            job = self._job_row(c, task["job_id"])
            if job["state"] not in ("queued", "running"):
                return None
            won = self._claim_update(c, task, agent, now)
            if not won:
                return None
            if job["state"] == "queued":
                self._job_state(c, job, "running", by=agent, started_at=job["started_at"] or now)
                job = self._job_row(c, job["id"])
            task = c.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
            return Claim(self._to_task(task), self._to_job(job))

    def _claim_update(self, c: sqlite3.Connection, task: sqlite3.Row, agent: str, now: float) -> bool:
        """The claim: queued/retrying -> running for ``agent``, counting an attempt."""
        cur = c.execute(
            "UPDATE tasks SET state = 'running', agent = ?, attempts = attempts + 1, started_at = ?,"
            " finished_at = NULL, progress_done = NULL, progress_total = NULL, error = NULL,"
            " traceback = NULL, cancel_requested = 0"
            " WHERE id = ? AND state = ? AND dispatch = ?",
            (agent, now, task["id"], task["state"], task["dispatch"]),
        )
        if cur.rowcount != 1:
            return False
        self._event(
            c, "task", job_id=task["job_id"], task_id=task["id"], seq=task["seq"], from_state=task["state"],
            to_state="running", agent=agent, message=f"attempt {task['attempts'] + 1}", at=now,
        )
        return True

    def report_progress(self, task_id: int, agent: str, done: float, total: float | None) -> bool:
        with self._tx() as c:
            c.execute(
                "UPDATE tasks SET progress_done = ?, progress_total = ? WHERE id = ? AND state = 'running'"
                " AND agent = ?",
                (float(done), None if total is None else float(total), task_id, agent),
            )
            row = c.execute("SELECT cancel_requested, state, agent FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return bool(row is None or row["cancel_requested"] or row["state"] != "running" or row["agent"] != agent)

    def cancel_requested(self, task_id: int) -> bool:
        row = self._conn().execute("SELECT cancel_requested, state FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return bool(row is None or row["cancel_requested"] or row["state"] != "running")

    def finish_task(
        self,
        task_id: int,
        agent: str,
        state: str,
        *,
        error: str | None = None,
        traceback: str | None = None,
    ) -> Outcome:
        if state not in DONE_TASK:
            raise ValueError(f"finish_task: {state!r} is not a final task state")
        now = time.time()
        with self._tx() as c:
            task = c.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if task is None or task["state"] != "running" or task["agent"] != agent:
                return Outcome(recorded=False)
            job = self._job_row(c, task["job_id"])
            if (state == "failed" and task["attempts"] < task["max_attempts"]
                    and job["state"] not in FINISHED and not task["cancel_requested"]):
                self._task_state(
                    c, task, "retrying", by=agent, message=error, require_agent=agent,
                    dispatch=task["dispatch"] + 1, error=error, traceback=traceback, finished_at=now,
                )
                return Outcome(retry=Dispatch(task_id, task["dispatch"] + 1, job["priority"]))
            self._task_state(
                c, task, state, by=agent, message=error, require_agent=agent,
                error=error, traceback=traceback, finished_at=now,
            )
            finalize, final = self._settle(c, task["job_id"], agent)
        return Outcome(finalize=finalize, job_state=final)

    def begin_finalize(self, job_id: int, agent: str) -> Job | None:
        with self._tx() as c:
            cur = c.execute(
                f"UPDATE jobs SET finisher = ? WHERE id = ? AND finisher IS NULL AND has_finish = 1"
                f" AND state IN {_in(IN_PROGRESS)}"
                " AND tasks_succeeded + tasks_failed + tasks_cancelled = tasks_total",
                (agent, job_id, *IN_PROGRESS),
            )
            if cur.rowcount != 1:
                return None
            self._event(c, "finish", job_id=job_id, agent=agent, message="finishing step started")
            return self._to_job(self._job_row(c, job_id))

    def end_finalize(self, job_id: int, agent: str, error: str | None) -> str | None:
        with self._tx() as c:
            job = self._job_row(c, job_id)
            if job["finisher"] != agent or job["state"] not in IN_PROGRESS:
                return None
            if error:
                final, summary = "failed", f"finishing step failed: {error}"
            else:
                final, summary = self._final_state(job), self._failure_summary(c, job)
            self._job_state(c, job, final, by=agent, message=error, finished_at=time.time(),
                            finisher=None, error=summary)
            return final

    def queue_targets(self, queued_before: float | None = None) -> tuple[list[Dispatch], list[int]]:
        c = self._conn()
        rows = c.execute(
            f"SELECT t.id, t.dispatch, j.priority FROM tasks t JOIN jobs j ON j.id = t.job_id"
            f" WHERE t.state IN {_in(RUNNABLE_TASK)} AND j.state IN ('queued', 'running')"
            " AND COALESCE(t.queued_at, 0) < ? ORDER BY t.id",
            (*RUNNABLE_TASK, time.time() if queued_before is None else queued_before),
        ).fetchall()
        finals = c.execute(
            f"SELECT id FROM jobs WHERE state IN {_in(IN_PROGRESS)} AND has_finish = 1 AND finisher IS NULL"
            " AND tasks_succeeded > 0 AND tasks_succeeded + tasks_failed + tasks_cancelled = tasks_total",
            IN_PROGRESS,
        ).fetchall()
        return [Dispatch(r[0], r[1], r[2]) for r in rows], [r[0] for r in finals]

    # -- user actions --------------------------------------------------------------------------------
    def pause_job(self, job_id: int, actor: str) -> None:
        with self._tx() as c:
            job = self._job_row(c, job_id)
            if job["state"] not in ("queued", "running"):
                raise InvalidState(f"job {job_id} is {job['state']}; only a queued or running job can be paused")
            self._job_state(c, job, "paused", actor=actor, message="paused")

    def resume_job(self, job_id: int, actor: str) -> list[Dispatch]:
        with self._tx() as c:
            job = self._job_row(c, job_id)
            if job["state"] != "paused":
                raise InvalidState(f"job {job_id} is {job['state']}; only a paused job can be resumed")
            self._job_state(c, job, "running" if job["started_at"] else "queued", actor=actor, message="resumed")
            return self._bump_runnable(c, job)

    def cancel_job(self, job_id: int, actor: str) -> None:
        now = time.time()
        with self._tx() as c:
            job = self._job_row(c, job_id)
            if job["state"] not in IN_PROGRESS:
                raise InvalidState(f"job {job_id} is {job['state']}; only a job in progress can be cancelled")
            for task in c.execute(
                f"SELECT * FROM tasks WHERE job_id = ? AND state IN {_in(RUNNABLE_TASK)}", (job_id, *RUNNABLE_TASK)
            ).fetchall():
                self._task_state(c, task, "cancelled", actor=actor, finished_at=now, message="job cancelled")
            c.execute(
                "UPDATE tasks SET cancel_requested = 1 WHERE job_id = ? AND state = 'running'", (job_id,)
            )
            self._job_state(c, job, "cancelled", actor=actor, message="cancelled", finished_at=now,
                            finisher=None, error="cancelled by " + actor)

    def retry_job(self, job_id: int, actor: str, seq: int | None = None) -> tuple[list[Dispatch], bool]:
        with self._tx() as c:
            job = self._job_row(c, job_id)
            if seq is None:
                if job["state"] not in FINISHED:
                    raise InvalidState(
                        f"job {job_id} is {job['state']}; retry applies to a finished job (or one failed task)"
                    )
                retryable = ("failed", "cancelled") if job["state"] == "cancelled" else ("failed",)
                tasks = c.execute(
                    f"SELECT * FROM tasks WHERE job_id = ? AND state IN {_in(retryable)} ORDER BY seq",
                    (job_id, *retryable),
                ).fetchall()
            else:
                task = c.execute("SELECT * FROM tasks WHERE job_id = ? AND seq = ?", (job_id, seq)).fetchone()
                if task is None:
                    raise NotFound(f"job {job_id} has no task {seq}")
                if task["state"] not in ("failed", "cancelled"):
                    raise InvalidState(
                        f"task {seq} of job {job_id} is {task['state']}; only a failed task can be retried"
                    )
                tasks = [task]
            refinish = (not tasks and job["state"] == "failed" and job["has_finish"]
                        and job["tasks_succeeded"] == job["tasks_total"])
            if not tasks and not refinish:
                raise InvalidState(f"job {job_id} is {job['state']} and has no failed tasks to retry")
            now = time.time()
            for task in tasks:
                self._task_state(
                    c, task, "queued", actor=actor, message="retry requested", dispatch=task["dispatch"] + 1,
                    max_attempts=task["attempts"] + 1 + job["retries"], error=None, traceback=None,
                    agent=None, queued_at=now, finished_at=None, cancel_requested=0,
                )
            if job["state"] in FINISHED:
                self._job_state(
                    c, job, "running" if refinish else "queued", actor=actor, message="retry requested",
                    finished_at=None, error=None, finisher=None,
                )
            job = self._job_row(c, job_id)
            dispatches = [Dispatch(t["id"], t["dispatch"] + 1, job["priority"]) for t in tasks]
            if job["state"] == "paused":
                dispatches = []
            return dispatches, refinish

    def set_priority(self, job_id: int, priority: int, actor: str) -> list[Dispatch]:
        with self._tx() as c:
            job = self._job_row(c, job_id)
            if job["state"] not in IN_PROGRESS:
                raise InvalidState(f"job {job_id} is {job['state']}; priority applies to jobs in progress")
            c.execute("UPDATE jobs SET priority = ?, updated_at = ? WHERE id = ?", (priority, time.time(), job_id))
            self._event(c, "priority", job_id=job_id, actor=actor,
                        message=f"priority {job['priority']} -> {priority}")
            job = self._job_row(c, job_id)
            dispatches = self._bump_runnable(c, job)
            return [] if job["state"] == "paused" else dispatches

    # -- artifacts -------------------------------------------------------------------------------------
    def add_artifact(
        self, job_id: int, task_id: int | None, name: str, path: str, media_type: str, size: int
    ) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO artifacts (job_id, task_id, name, path, media_type, size, created_at)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT (job_id, name) DO UPDATE SET task_id = excluded.task_id,"
                " path = excluded.path, media_type = excluded.media_type, size = excluded.size,"
                " created_at = excluded.created_at",
                (job_id, task_id, name, path, media_type, size, time.time()),
            )

    def artifacts(self, job_id: int) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT * FROM artifacts WHERE job_id = ? ORDER BY name", (job_id,)
        ).fetchall()
        return [dict(r) for r in rows]


def scope_sql(scope: dict[str, Any], owner: str = "owner", case: str = "case_id") -> tuple[str, list[Any]]:
    """The visibility rule of :meth:`Actor.scope` as a WHERE clause with bound parameters."""
    ors: list[str] = []
    values: list[Any] = []
    if scope["own"]:
        ors.append(f"{owner} = ?")
        values.append(scope["user"])
    if scope["all"]:
        if scope["cases"] is None:
            ors.append("1 = 1")
        else:
            ors.append(f"({case} IS NULL OR {case} IN ({','.join('?' * len(scope['cases'])) or 'NULL'}))")
            values += scope["cases"]
    return "(" + (" OR ".join(ors) or "1 = 0") + ")", values

