"""The PostgreSQL job store: the same contract as the SQLite store, for many agents on many hosts.

psycopg 3, one connection per thread (and per process: a forked child opens its
own), autocommit off. Every method runs in one short transaction; a transition
is decided by its conditional UPDATE (``... WHERE id = %s AND state = %s AND
dispatch = %s``) exactly as on SQLite.

SQLite serialises all writers, PostgreSQL does not, so the read-then-decide steps
(settling a job when its last task ends, counting tasks) are serialised per job
instead: every write that touches a job locks its ``jobs`` row first
(``SELECT ... FOR UPDATE``), then its tasks. Lock order is always agents -> jobs
(ascending id) -> tasks, so transactions wait for each other instead of
deadlocking; the recovery paths, which lock several jobs, are retried on the rare
deadlock or serialisation failure anyway. Lost-agent recovery takes the lost
agents' rows with ``FOR UPDATE SKIP LOCKED``, so agents looking at once each
recover different agents and never the same one twice; schedule firing is the
compare-and-set on ``schedules.next_run_at`` plus the primary key of
``schedule_runs``, as on SQLite.

The schema lives in the connection's current schema (``search_path``), so a URL
like ``postgresql://jm@db/jobs?options=-csearch_path%3Dteam_a`` keeps several
stores in one database.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row

from ..errors import HomeError, InvalidState, NotFound
from ..models import Claim, Dispatch, Job, NewTask, Outcome, Recovery, Task
from ..states import DONE_TASK, FINISHED, IN_PROGRESS, RUNNABLE_TASK
from ..trouble import storage_problem
from .base import SCHEMA_VERSION, JobStore
from .postgres_schedules import PostgresSchedules
from .postgres_users import PostgresUsers
from .schema_pg import MIGRATIONS
from .sqlite import LOST_AFTER_INTERVALS, SQLiteStore, _pid_alive, scope_sql

Conn = psycopg.Connection[dict[str, Any]]
T = TypeVar("T")

CONNECT_TIMEOUT_S = 10
#: a transaction that deadlocks or hits a serialisation failure is retried this many times
RETRIES = 5
#: pg_advisory_xact_lock key that serialises schema creation and migration
SCHEMA_LOCK = 0x6A6D5F736368  # "jm_sch"

_COUNTER = {"succeeded": "tasks_succeeded", "failed": "tasks_failed", "cancelled": "tasks_cancelled"}
_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _pg(sql_and_values: tuple[str, list[Any]]) -> tuple[str, list[Any]]:
    """A clause built for SQLite's ``?`` placeholders, with psycopg's ``%s`` instead."""
    sql, values = sql_and_values
    return sql.replace("?", "%s"), values


class PostgresStore(PostgresSchedules, PostgresUsers, JobStore):
    def __init__(self, url: str, *, create: bool = False, check: bool = True) -> None:
        """Open (``create``: or create) the store at ``url``; ``check=False`` skips the schema checks
        (``jobmanager migrate`` and ``doctor`` look at an old or missing schema themselves)."""
        self.url = url
        self._local = threading.local()
        self._all: list[tuple[int, Conn]] = []  # (pid that opened it, connection)
        self._all_lock = threading.Lock()
        if check:
            try:
                self.initialize(create=create)
            except psycopg.Error as exc:  # say what it is: a full disk, a permission, or else what the server said
                problem = storage_problem(exc, redact(self.url))
                raise HomeError(problem or f"cannot open the store {redact(self.url)}: {_first_line(exc)}") from None

    def __repr__(self) -> str:
        return f"PostgresStore({redact(self.url)!r})"

    # -- connections and transactions ------------------------------------------------------
    def _conn(self) -> Conn:
        conn: Conn | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken or getattr(self._local, "pid", None) != os.getpid():
            try:
                conn = psycopg.connect(
                    self.url, autocommit=False, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT_S,
                    application_name="jobmanager",
                )
            except psycopg.Error as exc:
                raise HomeError(f"cannot connect to the store {redact(self.url)}: {_first_line(exc)}") from None
            self._local.conn = conn
            self._local.pid = os.getpid()
            with self._all_lock:
                self._all.append((os.getpid(), conn))
        elif conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()  # never build on a transaction someone left open
        return conn

    @contextmanager
    def _tx(self) -> Iterator[Conn]:
        """One write transaction (READ COMMITTED; the conditional UPDATEs and row locks decide)."""
        conn = self._conn()
        with conn.transaction():
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Conn]:
        """A consistent read-only snapshot for one or several SELECTs."""
        conn = self._conn()
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn

    def _retrying(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn`` in a write transaction, again if PostgreSQL aborted it to break a deadlock."""
        for attempt in range(RETRIES):
            try:
                with self._tx() as c:
                    return fn(c)
            except _RETRYABLE:
                if attempt == RETRIES - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _fetchall(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        with self._read() as c:
            return c.execute(sql, params).fetchall()

    def _fetchone(self, sql: str, params: Any = ()) -> dict[str, Any] | None:
        with self._read() as c:
            return c.execute(sql, params).fetchone()

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

    # -- schema ---------------------------------------------------------------------------
    def _tables(self, c: Conn) -> set[str]:
        rows = c.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
        return {r["table_name"] for r in rows}

    def _version(self, c: Conn) -> int | None:
        if "meta" not in self._tables(c):
            return None
        row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            raise HomeError(f"{redact(self.url)} is not a Job Manager store (no schema version)")
        return int(row["value"])

    def initialize(self, create: bool = True) -> None:
        where = redact(self.url)
        with self._tx() as c:
            if c.execute("SELECT current_schema() AS s").fetchone()["s"] is None:  # type: ignore[index]
                raise HomeError(f"{where}: the search_path names no existing schema to keep the store in")
            version = self._version(c)
            tables = self._tables(c)
        if version is None:
            if tables:
                raise HomeError(f"{where} is not a Job Manager store (no meta table; it has other tables)")
            if not create:
                raise HomeError(f"no job store at {where}; create one with: jobmanager init")
            self.migrate()
            return
        if version > SCHEMA_VERSION:
            raise HomeError(
                f"{where} has schema version {version}, newer than this jobmanager "
                f"understands ({SCHEMA_VERSION}); upgrade jobmanager"
            )
        if version < SCHEMA_VERSION:
            if not create:
                raise HomeError(
                    f"{where} has schema version {version}; this jobmanager needs {SCHEMA_VERSION}: "
                    "run jobmanager migrate"
                )
            self.migrate()

    def schema_version(self) -> int:
        with self._read() as c:
            version = self._version(c)
        if version is None:
            raise HomeError(f"{redact(self.url)} is not a Job Manager store (no meta table)")
        return version

    def migrate(self) -> tuple[int, int]:
        """Move the store forward to SCHEMA_VERSION, one version per transaction; returns (from, to).

        An advisory lock makes concurrent ``init``/``migrate`` runs take turns.
        """
        start: int | None = None
        while True:
            with self._tx() as c:
                c.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                version = self._version(c)
                if version is None and self._tables(c):
                    raise HomeError(f"{redact(self.url)} is not a Job Manager store (no meta table)")
                current = version or 0
                if start is None:
                    start = current
                if current > SCHEMA_VERSION:
                    raise HomeError(f"{redact(self.url)} has schema version {current}, newer than this "
                                    f"jobmanager understands ({SCHEMA_VERSION}); upgrade jobmanager")
                if current == SCHEMA_VERSION:
                    return start, current
                for stmt in MIGRATIONS[current + 1]:
                    c.execute(stmt)  # type: ignore[arg-type]  # our own constant DDL
                c.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(current + 1),),
                )

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _event(
        c: Conn,
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
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (at or time.time(), job_id, task_id, seq, kind, from_state, to_state, agent, actor, message),
        )

    @staticmethod
    def _job_row(c: Conn, job_id: int, *, lock: bool = False) -> dict[str, Any]:
        sql = "SELECT * FROM jobs WHERE id = %s" + (" FOR UPDATE" if lock else "")
        row = c.execute(sql, (job_id,)).fetchone()  # type: ignore[arg-type]
        if row is None:
            raise NotFound(f"no job {job_id}")
        return row

    @staticmethod
    def _task_row(c: Conn, task_id: int, *, lock: bool = False) -> dict[str, Any] | None:
        sql = "SELECT * FROM tasks WHERE id = %s" + (" FOR UPDATE" if lock else "")
        return c.execute(sql, (task_id,)).fetchone()  # type: ignore[arg-type]

    def _lock_task_and_job(self, c: Conn, task_id: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Lock a task's job row, then the task (the one lock order: jobs before tasks)."""
        first = self._task_row(c, task_id)
        if first is None:
            return None
        job = self._job_row(c, first["job_id"], lock=True)
        task = self._task_row(c, task_id, lock=True)
        return (task, job) if task is not None else None

    def _task_state(
        self,
        c: Conn,
        task: dict[str, Any],
        new_state: str,
        *,
        by: str | None = None,
        actor: str | None = None,
        message: str | None = None,
        require_agent: str | None = None,
        **fields: Any,
    ) -> bool:
        """Move one task from the state it was read in to ``new_state``, conditionally (see SQLite)."""
        now = time.time()
        sets = ["state = %s"]
        values: list[Any] = [new_state]
        for key, value in fields.items():
            sets.append(f"{key} = %s")
            values.append(value)
        where = "id = %s AND state = %s AND dispatch = %s"
        values += [task["id"], task["state"], task["dispatch"]]
        if require_agent is not None:
            where += " AND agent = %s"
            values.append(require_agent)
        cur = c.execute(f"UPDATE tasks SET {', '.join(sets)} WHERE {where}", values)  # type: ignore[arg-type]
        if cur.rowcount != 1:
            return False
        old, new = _COUNTER.get(task["state"]), _COUNTER.get(new_state)
        if old != new:
            parts = ([f"{old} = {old} - 1"] if old else []) + ([f"{new} = {new} + 1"] if new else [])
            c.execute(f"UPDATE jobs SET {', '.join(parts)}, updated_at = %s WHERE id = %s",  # type: ignore[arg-type]
                      (now, task["job_id"]))
        self._event(
            c, "task", job_id=task["job_id"], task_id=task["id"], seq=task["seq"],
            from_state=task["state"], to_state=new_state, agent=by, actor=actor, message=message, at=now,
        )
        return True

    def _job_state(
        self,
        c: Conn,
        job: dict[str, Any],
        new_state: str,
        *,
        by: str | None = None,
        actor: str | None = None,
        message: str | None = None,
        **fields: Any,
    ) -> bool:
        now = time.time()
        sets = ["state = %s", "updated_at = %s"]
        values: list[Any] = [new_state, now]
        for key, value in fields.items():
            sets.append(f"{key} = %s")
            values.append(value)
        values += [job["id"], job["state"]]
        cur = c.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = %s AND state = %s",  # type: ignore[arg-type]
                        values)
        if cur.rowcount != 1:
            return False
        self._event(c, "job", job_id=job["id"], from_state=job["state"], to_state=new_state,
                    agent=by, actor=actor, message=message, at=now)
        return True

    def _failure_summary(self, c: Conn, job: dict[str, Any]) -> str | None:
        bad = job["tasks_failed"] + job["tasks_cancelled"]
        if not bad:
            return None
        first = c.execute(
            "SELECT name, error FROM tasks WHERE job_id = %s AND state IN ('failed', 'cancelled')"
            " ORDER BY seq LIMIT 1",
            (job["id"],),
        ).fetchone()
        detail = f" (first: {first['name']}: {first['error']})" if first and first["error"] else ""
        return f"{bad} of {job['tasks_total']} tasks failed{detail}"

    def _settle(self, c: Conn, job_id: int, agent: str | None) -> tuple[bool, str | None]:
        """After a task ended: finish the job if nothing is left to run (the job row is locked)."""
        job = self._job_row(c, job_id, lock=True)
        if job["state"] not in IN_PROGRESS:
            return False, None
        left = job["tasks_total"] - job["tasks_succeeded"] - job["tasks_failed"] - job["tasks_cancelled"]
        if left > 0:
            return False, None
        if job["has_finish"] and job["tasks_succeeded"] > 0:
            if job["finisher"] is not None or agent is None:
                return False, None
            c.execute("UPDATE jobs SET finisher = %s, updated_at = %s WHERE id = %s AND finisher IS NULL",
                      (agent, time.time(), job_id))
            self._event(c, "finish", job_id=job_id, agent=agent, message="finishing step started")
            return True, None
        final = SQLiteStore._final_state(job)  # type: ignore[arg-type]
        self._job_state(c, job, final, by=agent, finished_at=time.time(), error=self._failure_summary(c, job))
        return False, final

    def _bump_runnable(self, c: Conn, job: dict[str, Any]) -> list[Dispatch]:
        """Give every runnable task of a job a new dispatch; older messages become stale."""
        rows = c.execute(
            "UPDATE tasks SET dispatch = dispatch + 1 WHERE job_id = %s AND state = ANY(%s)"
            " RETURNING id, dispatch, seq",
            (job["id"], list(RUNNABLE_TASK)),
        ).fetchall()
        return [Dispatch(r["id"], r["dispatch"], job["priority"]) for r in sorted(rows, key=lambda r: r["seq"])]

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
        self, c: Conn, *, type: str, name: str, params: dict[str, Any], owner: str, case: str | None,
        priority: int, retries: int, has_finish: bool, tasks: list[NewTask], actor: str,
        schedule_id: int | None = None,
    ) -> tuple[int, list[Dispatch]]:
        now = time.time()
        row = c.execute(
            "INSERT INTO jobs (type, name, params, owner, case_id, priority, state, retries, has_finish,"
            " tasks_total, created_at, updated_at, schedule_id)"
            " VALUES (%s,%s,%s,%s,%s,%s,'queued',%s,%s,%s,%s,%s,%s) RETURNING id",
            (type, name, json.dumps(params), owner, case, priority, retries, int(has_finish),
             len(tasks), now, now, schedule_id),
        ).fetchone()
        job_id = int(row["id"])  # type: ignore[index]
        with c.cursor() as cur:
            cur.executemany(
                "INSERT INTO tasks (job_id, seq, name, params, state, max_attempts, queued_at)"
                " VALUES (%s,%s,%s,%s,'queued',%s,%s)",
                [(job_id, i + 1, t.name, json.dumps(t.params), 1 + retries, now) for i, t in enumerate(tasks)],
            )
        message = "submitted" if schedule_id is None else f"fired by schedule {schedule_id}"
        self._event(c, "job", job_id=job_id, to_state="queued", actor=actor, message=message, at=now)
        rows = c.execute("SELECT id FROM tasks WHERE job_id = %s ORDER BY seq", (job_id,)).fetchall()
        return job_id, [Dispatch(r["id"], 0, priority) for r in rows]

    def _running_fraction(self, c: Conn, job_id: int) -> float:
        row = c.execute(
            "SELECT COALESCE(SUM(LEAST(1.0, progress_done / progress_total)), 0) AS part FROM tasks"
            " WHERE job_id = %s AND state = 'running' AND progress_total > 0",
            (job_id,),
        ).fetchone()
        return float(row["part"] or 0.0) if row else 0.0

    def get_job(self, job_id: int, *, with_tasks: bool = False) -> Job:
        with self._read() as c:
            row = self._job_row(c, job_id)
            job = SQLiteStore._to_job(row, self._running_fraction(c, job_id))  # type: ignore[arg-type]
            if with_tasks:
                job.tasks = [
                    SQLiteStore._to_task(r)  # type: ignore[arg-type]
                    for r in c.execute("SELECT * FROM tasks WHERE job_id = %s ORDER BY seq", (job_id,)).fetchall()
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
            clause, values = _pg(scope_sql(scope))
            where.append(clause)
            params += values
        if states:
            where.append("state = ANY(%s)")
            params.append(list(states))
        for column, value in (("type", type), ("owner", owner), ("case_id", case)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        sql = f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT %s OFFSET %s"
        with self._read() as c:
            rows = c.execute(sql, (*params, int(limit), int(offset))).fetchall()  # type: ignore[arg-type]
            return [SQLiteStore._to_job(r, self._running_fraction(c, r["id"])  # type: ignore[arg-type]
                                        if r["state"] == "running" else 0.0)
                    for r in rows]

    def running_info(self, job_ids: list[int]) -> dict[int, dict[str, Any]]:
        if not job_ids:
            return {}
        ids = [int(j) for j in job_ids]
        out: dict[int, dict[str, Any]] = {}
        with self._read() as c:
            jobs = {r["id"]: r for r in c.execute("SELECT * FROM jobs WHERE id = ANY(%s)", (ids,)).fetchall()}
            for job_id, r in jobs.items():
                out[job_id] = {"progress": SQLiteStore._to_job(r).progress, "agents": ""}  # type: ignore[arg-type]
            for r in c.execute(
                "SELECT job_id, string_agg(DISTINCT agent, ',') AS agents,"
                " SUM(CASE WHEN progress_total > 0 THEN LEAST(1.0, progress_done / progress_total) ELSE 0 END)"
                " AS part FROM tasks WHERE job_id = ANY(%s) AND state = 'running' GROUP BY job_id", (ids,),
            ).fetchall():
                info = out.get(r["job_id"])
                if info is not None:
                    info["agents"] = r["agents"] or ""
                    info["progress"] = SQLiteStore._to_job(  # type: ignore[arg-type]
                        jobs[r["job_id"]], float(r["part"] or 0)).progress
        return out

    def events(self, job_id: int) -> list[dict[str, Any]]:
        with self._read() as c:
            self._job_row(c, job_id)
            return c.execute("SELECT * FROM events WHERE job_id = %s ORDER BY id", (job_id,)).fetchall()

    # -- what agents do with tasks ---------------------------------------------------------------
    def claim_task(self, task_id: int, dispatch: int, agent: str) -> Claim | None:
        now = time.time()
        with self._tx() as c:
            first = self._task_row(c, task_id)
            # Most stale messages are dropped here, before any lock is taken.
            if first is None or first["dispatch"] != dispatch or first["state"] not in RUNNABLE_TASK:
                return None
            locked = self._lock_task_and_job(c, task_id)
            if locked is None:
                return None
            task, job = locked
            if task["dispatch"] != dispatch or task["state"] not in RUNNABLE_TASK:
                return None
            if job["state"] not in ("queued", "running"):
                return None
            cur = c.execute(
                "UPDATE tasks SET state = 'running', agent = %s, attempts = attempts + 1, started_at = %s,"
                " finished_at = NULL, progress_done = NULL, progress_total = NULL, error = NULL,"
                " traceback = NULL, cancel_requested = 0"
                " WHERE id = %s AND state = %s AND dispatch = %s RETURNING *",
                (agent, now, task_id, task["state"], task["dispatch"]),
            )
            claimed = cur.fetchone()
            if claimed is None:
                return None
            self._event(c, "task", job_id=task["job_id"], task_id=task_id, seq=task["seq"],
                        from_state=task["state"], to_state="running", agent=agent,
                        message=f"attempt {task['attempts'] + 1}", at=now)
            if job["state"] == "queued":
                self._job_state(c, job, "running", by=agent, started_at=job["started_at"] or now)
                job = self._job_row(c, job["id"])
            return Claim(SQLiteStore._to_task(claimed), SQLiteStore._to_job(job))  # type: ignore[arg-type]

    def report_progress(self, task_id: int, agent: str, done: float, total: float | None) -> bool:
        with self._tx() as c:
            c.execute(
                "UPDATE tasks SET progress_done = %s, progress_total = %s WHERE id = %s AND state = 'running'"
                " AND agent = %s",
                (float(done), None if total is None else float(total), task_id, agent),
            )
            row = c.execute("SELECT cancel_requested, state, agent FROM tasks WHERE id = %s", (task_id,)).fetchone()
        return bool(row is None or row["cancel_requested"] or row["state"] != "running" or row["agent"] != agent)

    def cancel_requested(self, task_id: int) -> bool:
        row = self._fetchone("SELECT cancel_requested, state FROM tasks WHERE id = %s", (task_id,))
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
            locked = self._lock_task_and_job(c, task_id)
            if locked is None:
                return Outcome(recorded=False)
            task, job = locked
            if task["state"] != "running" or task["agent"] != agent:
                return Outcome(recorded=False)
            if (state == "failed" and task["attempts"] < task["max_attempts"]
                    and job["state"] not in FINISHED and not task["cancel_requested"]):
                self._task_state(
                    c, task, "retrying", by=agent, message=error, require_agent=agent,
                    dispatch=task["dispatch"] + 1, error=error, traceback=traceback, finished_at=now,
                )
                return Outcome(retry=Dispatch(task_id, task["dispatch"] + 1, job["priority"]))
            self._task_state(c, task, state, by=agent, message=error, require_agent=agent,
                             error=error, traceback=traceback, finished_at=now)
            finalize, final = self._settle(c, task["job_id"], agent)
        return Outcome(finalize=finalize, job_state=final)

    def begin_finalize(self, job_id: int, agent: str) -> Job | None:
        with self._tx() as c:
            row = c.execute(
                "UPDATE jobs SET finisher = %s WHERE id = %s AND finisher IS NULL AND has_finish = 1"
                " AND state = ANY(%s) AND tasks_succeeded + tasks_failed + tasks_cancelled = tasks_total"
                " RETURNING *",
                (agent, job_id, list(IN_PROGRESS)),
            ).fetchone()
            if row is None:
                return None
            self._event(c, "finish", job_id=job_id, agent=agent, message="finishing step started")
            return SQLiteStore._to_job(row)  # type: ignore[arg-type]

    def end_finalize(self, job_id: int, agent: str, error: str | None) -> str | None:
        with self._tx() as c:
            job = self._job_row(c, job_id, lock=True)
            if job["finisher"] != agent or job["state"] not in IN_PROGRESS:
                return None
            if error:
                final, summary = "failed", f"finishing step failed: {error}"
            else:
                final, summary = SQLiteStore._final_state(job), self._failure_summary(c, job)  # type: ignore[arg-type]
            self._job_state(c, job, final, by=agent, message=error, finished_at=time.time(),
                            finisher=None, error=summary)
            return final

    def queue_targets(self, queued_before: float | None = None) -> tuple[list[Dispatch], list[int]]:
        with self._read() as c:
            rows = c.execute(
                "SELECT t.id, t.dispatch, j.priority FROM tasks t JOIN jobs j ON j.id = t.job_id"
                " WHERE t.state = ANY(%s) AND j.state IN ('queued', 'running')"
                " AND COALESCE(t.queued_at, 0) < %s ORDER BY t.id",
                (list(RUNNABLE_TASK), time.time() if queued_before is None else queued_before),
            ).fetchall()
            finals = c.execute(
                "SELECT id FROM jobs WHERE state = ANY(%s) AND has_finish = 1 AND finisher IS NULL"
                " AND tasks_succeeded > 0 AND tasks_succeeded + tasks_failed + tasks_cancelled = tasks_total"
                " ORDER BY id",
                (list(IN_PROGRESS),),
            ).fetchall()
        return [Dispatch(r["id"], r["dispatch"], r["priority"]) for r in rows], [r["id"] for r in finals]

    # -- user actions --------------------------------------------------------------------------------
    def pause_job(self, job_id: int, actor: str) -> None:
        with self._tx() as c:
            job = self._job_row(c, job_id, lock=True)
            if job["state"] not in ("queued", "running"):
                raise InvalidState(f"job {job_id} is {job['state']}; only a queued or running job can be paused")
            self._job_state(c, job, "paused", actor=actor, message="paused")

    def resume_job(self, job_id: int, actor: str) -> list[Dispatch]:
        with self._tx() as c:
            job = self._job_row(c, job_id, lock=True)
            if job["state"] != "paused":
                raise InvalidState(f"job {job_id} is {job['state']}; only a paused job can be resumed")
            self._job_state(c, job, "running" if job["started_at"] else "queued", actor=actor, message="resumed")
            return self._bump_runnable(c, job)

    def cancel_job(self, job_id: int, actor: str) -> None:
        now = time.time()
        with self._tx() as c:
            job = self._job_row(c, job_id, lock=True)
            if job["state"] not in IN_PROGRESS:
                raise InvalidState(f"job {job_id} is {job['state']}; only a job in progress can be cancelled")
            for task in c.execute(
                "SELECT * FROM tasks WHERE job_id = %s AND state = ANY(%s) ORDER BY id FOR UPDATE",
                (job_id, list(RUNNABLE_TASK)),
            ).fetchall():
                self._task_state(c, task, "cancelled", actor=actor, finished_at=now, message="job cancelled")
            c.execute("UPDATE tasks SET cancel_requested = 1 WHERE job_id = %s AND state = 'running'", (job_id,))
            self._job_state(c, job, "cancelled", actor=actor, message="cancelled", finished_at=now,
                            finisher=None, error="cancelled by " + actor)

    def retry_job(self, job_id: int, actor: str, seq: int | None = None) -> tuple[list[Dispatch], bool]:
        with self._tx() as c:
            job = self._job_row(c, job_id, lock=True)
            if seq is None:
                if job["state"] not in FINISHED:
                    raise InvalidState(
                        f"job {job_id} is {job['state']}; retry applies to a finished job (or one failed task)"
                    )
                retryable = ["failed", "cancelled"] if job["state"] == "cancelled" else ["failed"]
                tasks = c.execute(
                    "SELECT * FROM tasks WHERE job_id = %s AND state = ANY(%s) ORDER BY seq FOR UPDATE",
                    (job_id, retryable),
                ).fetchall()
            else:
                task = c.execute("SELECT * FROM tasks WHERE job_id = %s AND seq = %s FOR UPDATE",
                                 (job_id, seq)).fetchone()
                if task is None:
                    raise NotFound(f"job {job_id} has no task {seq}")
                if task["state"] not in ("failed", "cancelled"):
                    raise InvalidState(
                        f"task {seq} of job {job_id} is {task['state']}; only a failed task can be retried"
                    )
                tasks = [task]
            refinish = bool(not tasks and job["state"] == "failed" and job["has_finish"]
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
                self._job_state(c, job, "running" if refinish else "queued", actor=actor,
                                message="retry requested", finished_at=None, error=None, finisher=None)
            job = self._job_row(c, job_id)
            dispatches = [Dispatch(t["id"], t["dispatch"] + 1, job["priority"]) for t in tasks]
            if job["state"] == "paused":
                dispatches = []
            return dispatches, refinish

    def set_priority(self, job_id: int, priority: int, actor: str) -> list[Dispatch]:
        with self._tx() as c:
            job = self._job_row(c, job_id, lock=True)
            if job["state"] not in IN_PROGRESS:
                raise InvalidState(f"job {job_id} is {job['state']}; priority applies to jobs in progress")
            c.execute("UPDATE jobs SET priority = %s, updated_at = %s WHERE id = %s", (priority, time.time(), job_id))
            self._event(c, "priority", job_id=job_id, actor=actor, message=f"priority {job['priority']} -> {priority}")
            job = self._job_row(c, job_id)
            dispatches = self._bump_runnable(c, job)
            return [] if job["state"] == "paused" else dispatches

    # -- agents ----------------------------------------------------------------------------------------
    def register_agent(self, info: dict[str, Any]) -> Recovery:
        def register(c: Conn) -> Recovery:
            now = time.time()
            recovery = Recovery()
            # Serialise registrations of one name even when there is no row to lock yet.
            c.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("jobmanager.agent:" + info["name"],))
            old = c.execute("SELECT * FROM agents WHERE name = %s FOR UPDATE", (info["name"],)).fetchone()
            if old is not None and old["state"] == "online":
                fresh = old["heartbeat_at"] >= now - LOST_AFTER_INTERVALS * old["interval"]
                same_host = old["host"] == info["host"]
                if fresh and not (same_host and not _pid_alive(old["pid"])):
                    raise InvalidState(
                        f"agent {info['name']} is already running (host {old['host']}, pid {old['pid']})"
                    )
            if old is not None and old["state"] in ("online", "lost"):
                self._recover_agent(c, old["name"], info["name"], recovery, message="agent restarted")
            c.execute("DELETE FROM agents WHERE name = %s", (info["name"],))
            c.execute(
                'INSERT INTO agents (name, host, pid, workers, worker_type, version, queues, state, "interval",'
                " started_at, heartbeat_at, log_path) VALUES (%s,%s,%s,%s,%s,%s,%s,'online',%s,%s,%s,%s)",
                (info["name"], info["host"], info["pid"], info["workers"], info["worker_type"], info["version"],
                 json.dumps(info.get("queues", ["default"])), info["interval"], now, now, info.get("log_path")),
            )
            self._event(c, "agent", agent=info["name"], to_state="online",
                        message=f"started on {info['host']} pid {info['pid']}", at=now)
            return recovery

        return self._retrying(register)

    def heartbeat(self, name: str, pid: int, stats: dict[str, Any]) -> str | None:
        now = time.time()
        with self._tx() as c:
            row = c.execute("SELECT state, pid, command FROM agents WHERE name = %s FOR UPDATE", (name,)).fetchone()
            if row is None or row["pid"] != pid:
                return "stop"  # another incarnation owns the name now
            c.execute(
                "UPDATE agents SET heartbeat_at = %s, state = 'online', current_tasks = %s, done = %s, failed = %s,"
                " cpu_percent = %s, rss_bytes = %s WHERE name = %s AND pid = %s",
                (now, json.dumps(stats.get("current", [])), stats.get("done", 0), stats.get("failed", 0),
                 stats.get("cpu_percent"), stats.get("rss_bytes"), name, pid),
            )
            if row["state"] != "online":
                self._event(c, "agent", agent=name, from_state=row["state"], to_state="online",
                            message="heartbeat resumed", at=now)
            return row["command"]

    def agent_stopped(self, name: str, pid: int) -> Recovery:
        def stopped(c: Conn) -> Recovery:
            recovery = Recovery()
            row = c.execute("SELECT * FROM agents WHERE name = %s AND pid = %s FOR UPDATE", (name, pid)).fetchone()
            if row is None:
                return recovery
            self._recover_agent(c, name, name, recovery, message="agent stopped", count_attempt=False)
            c.execute("UPDATE agents SET state = 'offline', stopped_at = %s, current_tasks = '[]', command = NULL"
                      " WHERE name = %s AND pid = %s", (time.time(), name, pid))
            self._event(c, "agent", agent=name, from_state=row["state"], to_state="offline", message="stopped")
            return recovery

        return self._retrying(stopped)

    def recover_lost(self, by_agent: str, now: float | None = None) -> Recovery:
        at = now or time.time()

        def recover(c: Conn) -> Recovery:
            recovery = Recovery()
            # Rows another agent is recovering right now are skipped, not waited for.
            stale = c.execute(
                'SELECT name, heartbeat_at FROM agents WHERE state = \'online\' AND heartbeat_at < %s - %s * "interval"'
                " AND name <> %s ORDER BY name FOR UPDATE SKIP LOCKED",  # never itself: it is evidently alive
                (at, LOST_AFTER_INTERVALS, by_agent),
            ).fetchall()
            for row in stale:
                cur = c.execute(
                    "UPDATE agents SET state = 'lost', stopped_at = %s, current_tasks = '[]'"
                    " WHERE name = %s AND state = 'online' AND heartbeat_at = %s",
                    (at, row["name"], row["heartbeat_at"]),
                )
                if cur.rowcount != 1:
                    continue
                recovery.lost.append(row["name"])
                self._event(c, "agent", agent=row["name"], from_state="online", to_state="lost",
                            actor=by_agent, message=f"no heartbeat for {at - row['heartbeat_at']:.1f} s")
                self._recover_agent(c, row["name"], by_agent, recovery, message=f"agent {row['name']} lost")
            return recovery

        return self._retrying(recover)

    def _recover_agent(
        self, c: Conn, name: str, by: str, recovery: Recovery, *, message: str, count_attempt: bool = True,
    ) -> None:
        """Hand back the work an agent held: its running tasks and finishing steps (jobs locked in id order)."""
        now = time.time()
        held = c.execute(
            "SELECT id, job_id FROM tasks WHERE state = 'running' AND agent = %s ORDER BY job_id, id", (name,)
        ).fetchall()
        finishing = c.execute("SELECT id FROM jobs WHERE finisher = %s", (name,)).fetchall()
        job_ids = sorted({r["job_id"] for r in held} | {r["id"] for r in finishing})
        for job_id in job_ids:
            self._job_row(c, job_id, lock=True)
        for ref in held:
            task = self._task_row(c, ref["id"], lock=True)
            if task is None or task["state"] != "running" or task["agent"] != name:
                continue
            job = self._job_row(c, task["job_id"])
            attempts = task["attempts"] if count_attempt else task["attempts"] - 1
            if job["state"] in FINISHED or task["cancel_requested"]:
                self._task_state(c, task, "cancelled", by=by, message=message, finished_at=now)
            elif attempts < task["max_attempts"]:
                self._task_state(c, task, "queued", by=by, message=message, attempts=attempts,
                                 dispatch=task["dispatch"] + 1, queued_at=now)
                if job["state"] != "paused":
                    recovery.dispatches.append(Dispatch(task["id"], task["dispatch"] + 1, job["priority"]))
                continue
            else:
                self._task_state(c, task, "failed", by=by, message=message, finished_at=now,
                                 error=f"{message} while running the task (attempt {attempts} of "
                                       f"{task['max_attempts']})")
            self._settle(c, task["job_id"], None)
            if job["has_finish"]:
                self._queue_finalize_if_ready(c, task["job_id"], recovery)
        for job in c.execute("UPDATE jobs SET finisher = NULL WHERE finisher = %s RETURNING id", (name,)).fetchall():
            self._event(c, "finish", job_id=job["id"], agent=by, message=f"{message}; finishing step resent")
            recovery.finalize.append(job["id"])

    def _queue_finalize_if_ready(self, c: Conn, job_id: int, recovery: Recovery) -> None:
        job = self._job_row(c, job_id)
        left = job["tasks_total"] - job["tasks_succeeded"] - job["tasks_failed"] - job["tasks_cancelled"]
        if job["state"] in IN_PROGRESS and left == 0 and job["finisher"] is None and job_id not in recovery.finalize:
            recovery.finalize.append(job_id)

    def agent_throughput(self, since: float, width: float, buckets: int) -> dict[str, list[int]]:
        rows = self._fetchall(
            "SELECT agent, FLOOR((at - %s) / %s)::bigint AS b, count(*) AS n FROM events"
            " WHERE kind = 'task' AND at >= %s AND to_state IN ('succeeded', 'failed') AND agent IS NOT NULL"
            " GROUP BY agent, b",
            (since, width, since),
        )
        out: dict[str, list[int]] = {}
        for r in rows:
            if 0 <= r["b"] < buckets:
                out.setdefault(r["agent"], [0] * buckets)[r["b"]] = int(r["n"])
        return out

    def request_agent(self, name: str, command: str | None, actor: str) -> None:
        with self._tx() as c:
            cur = c.execute("UPDATE agents SET command = %s WHERE name = %s AND state = 'online'", (command, name))
            if cur.rowcount != 1:
                raise NotFound(f"no online agent {name!r}")
            self._event(c, "agent", agent=name, actor=actor, message=f"{command} requested")

    def list_agents(self) -> list[dict[str, Any]]:
        out = []
        for d in self._fetchall("SELECT * FROM agents ORDER BY name"):
            d["current_tasks"] = json.loads(d["current_tasks"] or "[]")
            d["queues"] = json.loads(d["queues"] or "[]")
            out.append(d)
        return out

    # -- artifacts -------------------------------------------------------------------------------------
    def add_artifact(
        self, job_id: int, task_id: int | None, name: str, path: str, media_type: str, size: int
    ) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO artifacts (job_id, task_id, name, path, media_type, size, created_at)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (job_id, name) DO UPDATE SET task_id = excluded.task_id,"
                " path = excluded.path, media_type = excluded.media_type, size = excluded.size,"
                " created_at = excluded.created_at",
                (job_id, task_id, name, path, media_type, size, time.time()),
            )

    def artifacts(self, job_id: int) -> list[dict[str, Any]]:
        return self._fetchall("SELECT * FROM artifacts WHERE job_id = %s ORDER BY name", (job_id,))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
