"""The job store's SQL, written once for SQLite and PostgreSQL: :class:`SqlStore`.

Every method of the contract (:class:`JobStore`) is here, once, over a small
:class:`~jobmanager.store.dialect.Dialect` that spells the few fragments the two
databases write differently: the life of jobs, tasks and agents, and the
transactions every part of the store writes in. A backend subclass (:mod:`.sqlite`,
:mod:`.postgres`) only connects, sets its pragmas, begins transactions, and says
which errors are worth running a transaction again for.

Tables of their own concept have a module of their own beside this one, reached as
attributes of the store and writing through its transactions: ``store.limits``
(:mod:`.limits`: concurrency limits, whose rule claims, finishes and recoveries
apply inside their own transactions), ``store.accounts`` (:mod:`.accounts`: users
and groups), ``store.audit`` (:mod:`.audit`), ``store.schedules`` (:mod:`.schedules`:
schedules and their runs) and ``store.outbox`` (:mod:`.outbox`: notifications).

How races are decided, on both backends:

- Every state transition is one short transaction whose conditional UPDATE
  (``... WHERE id = ? AND state = ? AND dispatch = ?``) decides who wins; its row
  count says whether this caller did.
- The read-then-decide steps (settling a job when its last task ends, counting
  tasks) are serialised per job: a write that touches a job reads its ``jobs`` row
  ``FOR UPDATE`` first, then its tasks. Lock order is always agents -> jobs
  (ascending id) -> tasks, so transactions wait for each other instead of
  deadlocking; the recovery paths, which lock several jobs, are retried anyway
  (:meth:`SqlStore._retrying`). On SQLite the dialect's row locks are empty:
  ``BEGIN IMMEDIATE`` already lets one writer in at a time.
- Lost-agent recovery takes the lost agents' rows with ``FOR UPDATE SKIP LOCKED``,
  so agents looking at once each recover different agents, never the same one
  twice (and then the conditional UPDATE on ``heartbeat_at`` decides).
- Firing a schedule is a database fact (:mod:`.schedules`).

SQL is written with ``?`` placeholders; the PostgreSQL connection adapts it
(:meth:`Dialect.adapt`). Rows are read by column name (``sqlite3.Row`` or a dict).
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar, TypeVar, cast

import psutil

from jobmanager.engine.states import DONE_TASK, FINISHED, IN_PROGRESS, RUNNABLE_TASK, AgentState, JobState, TaskState
from jobmanager.errors import HomeError, InvalidState, NotFound
from jobmanager.models import (
    LATER,
    Claim,
    Completed,
    Dispatch,
    Finish,
    Job,
    JobOptions,
    Later,
    NewJob,
    NewTask,
    Outcome,
    Recovery,
    Task,
)
from jobmanager.store.accounts import Accounts
from jobmanager.store.audit import AuditRecord, AuditTrail
from jobmanager.store.base import HISTORY_COLUMNS, SCHEMA_VERSION, HistoryBatch, JobStore
from jobmanager.store.connection import Connection, Row, assignments, first_row
from jobmanager.store.dialect import Dialect
from jobmanager.store.limits import ALL_CASES, COUNTS_JOB, Limits
from jobmanager.store.outbox import Outbox
from jobmanager.store.schedules import Schedules
from jobmanager.store.schema import statements

T = TypeVar("T")
M = TypeVar("M", bound=Callable[..., Any])


def _again_after_deadlock(method: M) -> M:
    """A store method whose body is one write transaction, run again when the database aborted it to break a
    deadlock (PostgreSQL; SQLite has one writer at a time), as :meth:`SqlStore._retrying` runs a transaction
    again: a user's pause or cancel, or an agent's outcome, must not fail because two transactions met."""

    @functools.wraps(method)
    def again(self: SqlStore, *args: Any, **kwargs: Any) -> Any:
        return self._again(lambda: method(self, *args, **kwargs))

    return cast(M, again)


#: an agent silent for this many heartbeat intervals is lost
LOST_AFTER_INTERVALS = 3
#: a running task an agent's heartbeat does not report is recovered only if it started this long before
#: the heartbeat's snapshot (besides the runner's exact bound, a margin for the clock being set back)
RECONCILE_MARGIN_S = 1.0

_COUNTER: dict[str, str] = {TaskState.SUCCEEDED: "tasks_succeeded", TaskState.FAILED: "tasks_failed",
                            TaskState.CANCELLED: "tasks_cancelled"}


#: what a claim decides on (not params, error, traceback): a narrow read
_CLAIM_READ = "SELECT id, job_id, seq, state, dispatch FROM tasks WHERE id = ?"


#: what a claim writes into the task row (both claim paths), with the agent and the time
#: then its log mark twice (``@<run>``, appended to ``log_slices``; None: none), see _claim_params
_CLAIM_SET = ("state = 'running', agent = ?, attempts = attempts + 1, started_at = ?, finished_at = NULL,"
              " progress_done = NULL, progress_total = NULL, error = NULL, traceback = NULL, cancel_requested = 0,"
              " waiting = NULL, warning = NULL, log_slices = COALESCE(log_slices || ' ' || ?, ?, log_slices)")


def _claim_params(agent: str, now: float, mark: str | None) -> tuple[str, float, str | None, str | None]:
    """The parameters of :data:`_CLAIM_SET`."""
    return agent, now, mark, mark


def _log_mark(log_run: str | None) -> str | None:
    """What a claim appends to the task's ``log_slices``: which agent process will log its attempt
    (jobmanager/engine/tasklogs.py), so a reader knows whose thread files hold an attempt with no outcome."""
    if log_run is None:
        return None
    if not re.fullmatch(r"[0-9a-f]{12}", log_run):
        raise ValueError(f"not a log run: {log_run!r}")
    return "@" + log_run


def _attempt(n: object) -> str:
    """A claim's event message (``attempt 2``)."""
    return f"attempt {n}"


class SqlStore(JobStore):
    """The store over one SQL database; subclasses connect and begin transactions."""

    dialect: ClassVar[Dialect]
    #: errors after which :meth:`_retrying` runs a transaction again (deadlocks, serialisation failures)
    retryable: ClassVar[tuple[type[BaseException], ...]] = ()
    #: how many times :meth:`_retrying` runs a transaction at most
    RETRIES: ClassVar[int] = 5

    # -- what a backend provides --------------------------------------------------------------
    def _conn(self) -> Connection:
        """This thread's connection (autocommit: transactions are begun explicitly)."""
        raise NotImplementedError

    def _where(self) -> str:
        """The store's location for messages (a path, or a URL without its password)."""
        raise NotImplementedError

    def _prepare_new(self) -> None:
        """Before the first migration of a new store (SQLite: switch to WAL)."""

    def _repair(self) -> None:
        """After opening a store of the current version (SQLite: objects added to version 1 later)."""

    def _storage_problem(self, exc: BaseException) -> str | None:
        """One line naming a full disk or a permission problem behind ``exc``, if the backend can tell."""
        return None

    # -- the concept stores beside this one: their own tables, in this store's transactions ----------------
    @functools.cached_property
    def accounts(self) -> Accounts:
        return Accounts(self)

    @functools.cached_property
    def audit(self) -> AuditTrail:
        return AuditTrail(self)

    @functools.cached_property
    def schedules(self) -> Schedules:
        return Schedules(self)

    @functools.cached_property
    def outbox(self) -> Outbox:
        return Outbox(self)

    @functools.cached_property
    def limits(self) -> Limits:
        return Limits(self)

    # -- transactions ----------------------------------------------------------------------------
    @contextmanager
    def _transaction(self, begin: str) -> Iterator[Connection]:
        """Begin with ``begin``, commit at the end; roll back on any error, even one from COMMIT itself
        (so the connection works again once the trouble is over)."""
        c = self._conn()
        c.execute(begin)
        try:
            yield c
            c.execute("COMMIT")
        except BaseException:
            self._rollback(c)
            raise

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """One write transaction, begun with the dialect's statement (SQLite: the write lock up front).

        A full disk or a permission problem becomes one HomeError line that says so.
        """
        with self._storage_errors(), self._transaction(self.dialect.begin_write) as c:
            yield c

    @contextmanager
    def _storage_errors(self) -> Iterator[None]:
        """A write's full disk or permission problem as one HomeError line that says so."""
        try:
            yield
        except Exception as exc:
            problem = self._storage_problem(exc)
            if problem is None:
                raise
            raise HomeError(problem) from exc

    def _read(self) -> AbstractContextManager[Connection]:
        """A consistent snapshot for several SELECTs."""
        return self._transaction(self.dialect.begin_read)

    @staticmethod
    def _rollback(c: Connection) -> None:
        try:
            c.execute("ROLLBACK")
        except Exception:
            pass  # the connection broke, or the transaction already ended: the error being raised says why

    def _retrying(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in a write transaction, again if the database aborted it to break a deadlock."""
        def once() -> T:
            with self._tx() as c:
                return fn(c)

        return self._again(once)

    def _again(self, fn: Callable[[], T]) -> T:
        """``fn()``, again (at most :attr:`RETRIES` times in all) if the database aborted it to break a deadlock."""
        for attempt in range(self.RETRIES):
            try:
                return fn()
            except self.retryable:
                if attempt == self.RETRIES - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _serialise(self, c: Connection, key: str) -> None:
        """Make transactions naming ``key`` take turns, even when there is no row to lock yet."""
        sql = self.dialect.advisory_lock()
        if sql is not None:
            c.execute(sql, (key,))

    def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """One SELECT outside a transaction (a single statement is its own snapshot)."""
        return self._conn().execute(sql, params).fetchall()

    def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn().execute(sql, params).fetchone()

    # -- schema and migrations -----------------------------------------------------------------------
    def _schema_state(self, c: Connection) -> tuple[int | None, set[str]]:
        """The schema version (None without a ``meta`` table) and the tables there are."""
        tables = {r["name"] for r in c.execute(self.dialect.tables_sql).fetchall()}
        if "meta" not in tables:
            return None, tables
        row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            raise HomeError(f"{self._where()} is not a Job Manager store (no schema version)")
        return int(row["value"]), tables

    def initialize(self, create: bool = True) -> None:
        where = self._where()
        with self._read() as c:
            version, tables = self._schema_state(c)
        if version is None:
            if tables:
                raise HomeError(f"{where} is not a Job Manager store (no meta table; it has other tables)")
            if not create:
                raise HomeError(f"no job store at {where}; create one with: jobmanager init")
            self._prepare_new()
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
        self._repair()

    def schema_version(self) -> int:
        with self._read() as c:
            version, _ = self._schema_state(c)
        if version is None:
            raise HomeError(f"{self._where()} is not a Job Manager store (no meta table)")
        return version

    def migrate(self) -> tuple[int, int]:
        """Move the store forward to SCHEMA_VERSION, one version per transaction; returns (from, to).

        Concurrent ``init``/``migrate`` runs take turns (SQLite's write lock, PostgreSQL's advisory lock).
        """
        start: int | None = None
        while True:
            with self._tx() as c:
                self._serialise(c, "jobmanager:schema")
                version, tables = self._schema_state(c)
                if version is None and tables:
                    raise HomeError(f"{self._where()} is not a Job Manager store (no meta table)")
                current = version or 0
                if start is None:
                    start = current
                if current > SCHEMA_VERSION:
                    raise HomeError(f"{self._where()} has schema version {current}, newer than this "
                                    f"jobmanager understands ({SCHEMA_VERSION}); upgrade jobmanager")
                if current == SCHEMA_VERSION:
                    return start, current
                for stmt in statements(current + 1, self.dialect):
                    c.execute(stmt)
                c.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(current + 1),),
                )

    # -- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def _event(
        c: Connection,
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

    def _job_row(self, c: Connection, job_id: int, *, lock: bool = False) -> Row:
        row: Row | None = c.execute(
            "SELECT * FROM jobs WHERE id = ?" + (self.dialect.for_update if lock else ""), (job_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return row

    def _task_row(self, c: Connection, task_id: int, *, lock: bool = False) -> Row | None:
        row: Row | None = c.execute(
            "SELECT * FROM tasks WHERE id = ?" + (self.dialect.for_update if lock else ""), (task_id,)
        ).fetchone()
        return row

    def _lock_task_and_job(self, c: Connection, task: Row) -> tuple[Row, Row] | None:
        """Lock a task's job row, then the task (the one lock order: jobs before tasks).

        ``task`` was read without a lock. With row locks it is read again under the lock. Without them
        (SQLite, whose lock is the whole database) it is returned as it was read, and may have changed
        since: only its state and dispatch may be relied on, and only by an UPDATE conditional on both.
        """
        job = self._job_row(c, task["job_id"], lock=True)
        if not self.dialect.row_locks:
            return task, job
        again = self._task_row(c, task["id"], lock=True)
        return (again, job) if again is not None else None

    def _task_state(self, c: Connection, task: Row, new_state: str, *, by: str | None = None, actor: str | None = None,
                    message: str | None = None, require_agent: str | None = None, **fields: Any) -> bool:
        """Move one task from the state it was read in to ``new_state``, conditionally.

        Keeps the job's per-state counters and writes the event. Returns False when
        someone else changed the task first.
        """
        now = time.time()
        sets, values = assignments({"state": new_state, **fields})
        where = "id = ? AND state = ? AND dispatch = ?"
        values += [task["id"], task["state"], task["dispatch"]]
        if require_agent is not None:
            where += " AND agent = ?"
            values.append(require_agent)
        if c.execute(f"UPDATE tasks SET {sets} WHERE {where}", values).rowcount != 1:
            return False
        old, new = _COUNTER.get(task["state"]), _COUNTER.get(new_state)
        if old != new:
            parts = ([f"{old} = {old} - 1"] if old else []) + ([f"{new} = {new} + 1"] if new else [])
            c.execute(f"UPDATE jobs SET {', '.join(parts)}, updated_at = ? WHERE id = ?", (now, task["job_id"]))
        self._event(c, "task", job_id=task["job_id"], task_id=task["id"], seq=task["seq"], from_state=task["state"],
                    to_state=new_state, agent=by, actor=actor, message=message, at=now)
        return True

    def _job_state(self, c: Connection, job: Row, new_state: str, *, by: str | None = None, actor: str | None = None,
                   message: str | None = None, **fields: Any) -> bool:
        """Move a job from the state it was read in to ``new_state``, conditionally; writes the event."""
        now = time.time()
        sets, values = assignments({"state": new_state, "updated_at": now, **fields})
        values += [job["id"], job["state"]]
        if c.execute(f"UPDATE jobs SET {sets} WHERE id = ? AND state = ?", values).rowcount != 1:
            return False
        self._event(c, "job", job_id=job["id"], from_state=job["state"], to_state=new_state,
                    agent=by, actor=actor, message=message, at=now)
        return True

    @staticmethod
    def _final_state(job: Row) -> str:
        if job["tasks_succeeded"] == job["tasks_total"]:
            return JobState.COMPLETED
        if job["tasks_succeeded"] == 0:
            return JobState.FAILED
        return JobState.COMPLETED_WITH_ERRORS

    @staticmethod
    def _failure_summary(c: Connection, job: Row) -> str | None:
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

    def _settle(self, c: Connection, job_id: int, agent: str | None) -> tuple[bool, str | None]:
        """After a task ended: finish the job if nothing is left to run (the job row is locked).

        Returns (this agent must run the finishing step, the job's final state).
        """
        job = self._job_row(c, job_id, lock=True)
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
        self._job_state(c, job, final, by=agent, finished_at=time.time(), error=self._failure_summary(c, job))
        return False, final

    def _bump_runnable(self, c: Connection, job: Row) -> list[Dispatch]:
        """Give every runnable task of a job a new dispatch; older messages become stale."""
        runnable, values = self.dialect.in_("state", RUNNABLE_TASK)
        rows = c.execute(
            f"UPDATE tasks SET dispatch = dispatch + 1 WHERE job_id = ? AND {runnable} RETURNING id, dispatch, seq",
            (job["id"], *values),
        ).fetchall()
        return [Dispatch(r["id"], r["dispatch"], job["priority"], job["queue"], job["id"])
                for r in sorted(rows, key=lambda r: r["seq"])]

    @staticmethod
    def _to_task(r: Row) -> Task:
        return Task(
            id=r["id"], job_id=r["job_id"], seq=r["seq"], name=r["name"], params=json.loads(r["params"]),
            state=r["state"], attempts=r["attempts"], max_attempts=r["max_attempts"], dispatch=r["dispatch"],
            agent=r["agent"], progress_done=r["progress_done"], progress_total=r["progress_total"],
            cancel_requested=bool(r["cancel_requested"]), error=r["error"], traceback=r["traceback"],
            queued_at=r["queued_at"], started_at=r["started_at"], finished_at=r["finished_at"],
            losses=r["losses"], waiting=r["waiting"] if r["state"] in RUNNABLE_TASK else None,
            warning=r["warning"], log_slices=r["log_slices"],
        )

    @staticmethod
    def _to_job(r: Row, running_fraction: float = 0.0) -> Job:
        total = r["tasks_total"] or 1
        done = r["tasks_succeeded"] + r["tasks_failed"] + r["tasks_cancelled"]
        progress = 1.0 if r["state"] in (JobState.COMPLETED,) else min(1.0, (done + running_fraction) / total)
        return Job(
            id=r["id"], type=r["type"], name=r["name"], params=json.loads(r["params"]), owner=r["owner"],
            case=r["case_id"], priority=r["priority"], state=r["state"], retries=r["retries"],
            has_finish=bool(r["has_finish"]), finisher=r["finisher"], tasks_total=r["tasks_total"],
            tasks_succeeded=r["tasks_succeeded"], tasks_failed=r["tasks_failed"],
            tasks_cancelled=r["tasks_cancelled"], error=r["error"], created_at=r["created_at"],
            started_at=r["started_at"], finished_at=r["finished_at"], progress=progress,
            schedule_id=r["schedule_id"], queue=r["queue"], soft_limit=r["soft_limit"], hard_limit=r["hard_limit"],
            max_losses=r["max_losses"], rerun_safe=bool(r["rerun_safe"]), notify=json.loads(r["notify"]),
        )

    # -- jobs ----------------------------------------------------------------------------------------
    def create_jobs(self, jobs: Sequence[NewJob],
                    audit: Sequence[AuditRecord] = ()) -> list[tuple[int, list[Dispatch]]]:
        with self._tx() as c:
            created = [self._insert_job(c, **vars(job)) for job in jobs]
            self.audit.write(c, audit)
            return created

    def _insert_job(
        self, c: Connection, *, type: str, name: str, params: dict[str, Any], owner: str, case: str | None,
        priority: int, retries: int, has_finish: bool, tasks: list[NewTask], actor: str,
        schedule_id: int | None = None, options: JobOptions = JobOptions(),
    ) -> tuple[int, list[Dispatch]]:
        now = time.time()
        row = first_row(c.execute(
            "INSERT INTO jobs (type, name, params, owner, case_id, priority, state, retries, has_finish,"
            " tasks_total, created_at, updated_at, schedule_id, queue, soft_limit, hard_limit, max_losses,"
            " rerun_safe, notify) VALUES (?,?,?,?,?,?,'queued',?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
            (type, name, json.dumps(params), owner, case, priority, retries, int(has_finish),
             len(tasks), now, now, schedule_id, options.queue, options.soft_limit, options.hard_limit,
             options.max_losses, int(options.rerun_safe), json.dumps(list(options.notify))),
        ))
        job_id = int(row["id"])
        c.executemany(
            "INSERT INTO tasks (job_id, seq, name, params, state, max_attempts, queued_at)"
            " VALUES (?,?,?,?,'queued',?,?)",
            [(job_id, i + 1, t.name, json.dumps(t.params), 1 + retries, now) for i, t in enumerate(tasks)],
        )
        message = "submitted" if schedule_id is None else f"fired by schedule {schedule_id}"
        self._event(c, "job", job_id=job_id, to_state=JobState.QUEUED, actor=actor, message=message, at=now)
        rows = c.execute("SELECT id FROM tasks WHERE job_id = ? ORDER BY seq", (job_id,)).fetchall()
        return job_id, [Dispatch(r["id"], 0, priority, options.queue, job_id) for r in rows]

    def _running_fraction(self, c: Connection, job_id: int) -> float:
        row = c.execute(
            f"SELECT COALESCE(SUM({self.dialect.least}(1.0, progress_done / progress_total)), 0) AS part"
            " FROM tasks WHERE job_id = ? AND state = 'running' AND progress_total > 0",
            (job_id,),
        ).fetchone()
        return float(row["part"] or 0.0) if row else 0.0

    def get_job(self, job_id: int, *, with_tasks: bool = False) -> Job:
        with self._read() as c:
            row = self._job_row(c, job_id)
            job = self._to_job(row, self._running_fraction(c, job_id))
            if with_tasks:
                job.tasks = [
                    self._to_task(r)
                    for r in c.execute("SELECT * FROM tasks WHERE job_id = ? ORDER BY seq", (job_id,)).fetchall()
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
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if scope is not None:
            clause, values = scope_sql(scope)
            where.append(clause)
            params += values
        if states:
            clause, values = self.dialect.in_("state", states)
            where.append(clause)
            params += values
        for column, value in (("type", type), ("owner", owner), ("case_id", case)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ? OFFSET ?"
        with self._read() as c:
            rows = c.execute(sql, (*params, int(limit), int(offset))).fetchall()
            return [self._to_job(r, self._running_fraction(c, r["id"]) if r["state"] == JobState.RUNNING else 0.0)
                    for r in rows]

    def running_info(self, job_ids: list[int]) -> dict[int, dict[str, Any]]:
        """Progress (with in-task progress), the agents running each job and why its tasks wait, if they do
        (``waiting``), for one grid page."""
        if not job_ids:
            return {}
        out: dict[int, dict[str, Any]] = {}
        with self._read() as c:
            ids, values = self.dialect.in_("id", [int(j) for j in job_ids])
            jobs = {r["id"]: r for r in c.execute(f"SELECT * FROM jobs WHERE {ids}", values).fetchall()}
            for job_id, r in jobs.items():
                out[job_id] = {"progress": self._to_job(r).progress, "agents": "", "waiting": ""}
            ids, values = self.dialect.in_("job_id", [int(j) for j in job_ids])
            for r in c.execute(
                f"SELECT job_id, {self.dialect.string_agg('agent', distinct=True)} AS agents,"
                f" SUM(CASE WHEN progress_total > 0 THEN {self.dialect.least}(1.0, progress_done / progress_total)"
                f" ELSE 0 END) AS part FROM tasks WHERE {ids} AND state = 'running' GROUP BY job_id",
                values,
            ).fetchall():
                info = out.get(r["job_id"])
                if info is not None:
                    info["agents"] = r["agents"] or ""
                    info["progress"] = self._to_job(jobs[r["job_id"]], float(r["part"] or 0)).progress
            for r in c.execute(  # why runnable tasks do not start (a full concurrency limit), one reason a job
                f"SELECT job_id, MIN(waiting) AS waiting FROM tasks WHERE {ids} AND waiting IS NOT NULL"
                " GROUP BY job_id", values,
            ).fetchall():
                if r["job_id"] in out:
                    out[r["job_id"]]["waiting"] = r["waiting"]
            # a paused job's Elapsed stops: its pauses, from its own events (few jobs on a page were ever paused)
            pauses: dict[int, list[tuple[str, float]]] = {}
            for r in c.execute(
                f"SELECT job_id, to_state, at FROM events WHERE {ids} AND kind = 'job'"
                " AND (to_state = 'paused' OR from_state = 'paused') ORDER BY id", values,
            ).fetchall():
                pauses.setdefault(int(r["job_id"]), []).append((r["to_state"], float(r["at"])))
            for job_id, info in out.items():
                info["paused_s"], info["paused_since"] = _paused(pauses.get(job_id, []), jobs[job_id]["started_at"],
                                                                 jobs[job_id]["state"] == JobState.PAUSED)
        return out

    def warning_counts(self, job_ids: list[int]) -> dict[int, int]:
        if not job_ids:
            return {}
        ids, values = self.dialect.in_("job_id", [int(j) for j in job_ids])
        with self._read() as c:
            rows = c.execute(f"SELECT job_id, COUNT(*) AS n FROM tasks WHERE {ids} AND warning IS NOT NULL"
                             " GROUP BY job_id", values).fetchall()
        return {int(r["job_id"]): int(r["n"]) for r in rows}

    def events(self, job_id: int) -> list[dict[str, Any]]:
        with self._read() as c:
            self._job_row(c, job_id)
            rows = c.execute("SELECT * FROM events WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
        return [dict(r) for r in rows]

    # -- what agents do with tasks ----------------------------------------------------------------------
    def claim_task(self, task_id: int, dispatch: int, agent: str, job_id: int | None = None, *,
                   log_run: str | None = None) -> Claim | None:
        now, mark = time.time(), _log_mark(log_run)
        hinted = False
        if job_id is not None and self.dialect.writes_in_with:
            hinted = True
            # The message names the task's job: PostgreSQL claims in one statement without reading the task
            # first (the statement checks the hint). Anything that does not go through is decided below,
            # from a read.
            claim = self._claim_in_one_statement(job_id, task_id, dispatch, RUNNABLE_TASK, agent, now, mark)
            if claim is not None:
                return claim
        # The write lock is the store's bottleneck (one writer on SQLite): what needs no lock happens
        # before it is taken or after it is released. Most stale messages without a hint are dropped by this
        # read; rows become models after.
        first = self._fetchone(_CLAIM_READ, (task_id,))
        if first is None or first["dispatch"] != dispatch or first["state"] not in RUNNABLE_TASK:
            return None
        if self.dialect.writes_in_with and not (hinted and first["job_id"] == job_id):  # a right hint was tried
            claim = self._claim_in_one_statement(first["job_id"], task_id, dispatch, (first["state"],), agent, now,
                                                 mark)
            if claim is not None:
                return claim
        # Every other claim (SQLite's; on PostgreSQL one a limit counts, one that did not go through above,
        # which this path decides again and explains). A deadlock (PostgreSQL) runs it again, as in every
        # other transition.
        rows = self._retrying(lambda c: self._claim_locked(c, first, dispatch, agent, now, mark))
        return None if rows is None else Claim(self._to_task(rows[0]), self._to_job(rows[1]))

    @property
    def claims_ahead(self) -> bool:
        return self.dialect.claims_ahead

    def claim_tasks(self, wanted: Sequence[Dispatch], agent: str, *, first_starts: bool = True,
                    log_run: str | None = None) -> list[Claim | Later | None]:
        """Several claims in one transaction (an agent's batch, engine/prefetch.py): one read of the tasks
        without a lock, then each claim decided as :meth:`claim_task` decides it, in (job, task) order,
        the one lock order. On SQLite that is one write lock and one commit for the batch instead of one
        each, and a job's tasks are claimed together (:meth:`_claim_of_one_job`); on PostgreSQL each claim
        that can be is one statement (as a hinted claim), all in one transaction (one commit). Only
        ``task_id`` and ``dispatch`` of each are used.

        The first is the task its worker starts at once (unless ``first_starts`` is False: the worker's
        message was another kind). Any other is left (``LATER``: claimed when it starts) if its job is not
        safe to re-run or it has lost an agent before: an agent killed with tasks claimed and not started
        counts each a loss (the store cannot tell them from started ones), which must neither fail a task
        of a job that may not run twice nor let a task that kills its agents fail its innocent neighbours
        batch after batch."""
        if len(wanted) == 1 and first_starts:
            return [self.claim_task(wanted[0].task_id, wanted[0].dispatch, agent, job_id=wanted[0].job_id,
                                    log_run=log_run)]
        if not wanted:
            return []
        now, mark = time.time(), _log_mark(log_run)
        ids, values = self.dialect.in_("t.id", [w.task_id for w in wanted])
        read = {r["id"]: r for r in self._fetchall(
            "SELECT t.id, t.job_id, t.seq, t.state, t.dispatch, t.losses, j.rerun_safe FROM tasks t"
            f" JOIN jobs j ON j.id = t.job_id WHERE {ids}", values)}
        got: list[Claim | Later | None] = [None] * len(wanted)
        todo = []
        for i, w in enumerate(wanted):
            first = read.get(w.task_id)
            if first is None or first["dispatch"] != w.dispatch or first["state"] not in RUNNABLE_TASK:
                continue
            if (i > 0 or not first_starts) and (first["losses"] or not first["rerun_safe"]):
                got[i] = LATER
            else:
                todo.append((first["job_id"], w.task_id, i))
        todo.sort()

        def claim(c: Connection) -> list[Claim | Later | None]:
            got_now = list(got)
            for job_id, group in itertools.groupby(todo, key=lambda t: t[0]):
                items = [(read[task_id], wanted[i].dispatch, i) for _, task_id, i in group]
                if not self.dialect.row_locks and len(items) > 1:
                    together = self._claim_of_one_job(c, job_id, items, agent, now, mark)
                    if together is not None:
                        for i, one in together:
                            got_now[i] = one
                        continue
                for first, dispatch, i in items:
                    got_now[i] = self._claim_one_of_batch(c, job_id, first, dispatch, agent, now, mark)
            return got_now

        return self._retrying(claim) if todo else got

    def _claim_one_of_batch(self, c: Connection, job_id: int, first: Row, dispatch: int, agent: str,
                            now: float, mark: str | None) -> Claim | None:
        """One claim of a batch, in its transaction: PostgreSQL's one statement if it goes through, else
        the general path."""
        if self.dialect.writes_in_with:
            row = self._claim_statement(c, job_id, first["id"], dispatch, (first["state"],), agent, now, mark)
            if row is not None:
                return self._one_statement_claim(row)
        rows = self._claim_locked(c, first, dispatch, agent, now, mark)
        return None if rows is None else Claim(self._to_task(rows[0]), self._to_job(rows[1]))

    def _claim_of_one_job(self, c: Connection, job_id: int, items: list[tuple[Row, int, int]], agent: str,
                          now: float, mark: str | None) -> list[tuple[int, Claim]] | None:
        """Several tasks of one job claimed in a few statements (SQLite, whose write lock is the whole
        database): each task is claimed if its dispatch is still the one read before the lock and it is
        still runnable (the UPDATE's condition: the message is still the task's), their events (from the
        state read) are one INSERT, and a queued job moves to running once. ``items``: (the task as read,
        the message's dispatch, its index in the batch). None when a concurrency limit counts the job: each
        claim changes its count, so they are made one by one."""
        if self.limits.lock(c, "jobs j WHERE j.id = ?", (job_id,)):
            return None
        job = self._job_row(c, job_id)
        if job["state"] not in (JobState.QUEUED, JobState.RUNNING):
            return []
        ids, values = self.dialect.in_("id", [first["id"] for first, _, _ in items])
        states, state_values = self.dialect.in_(self.dialect.no_index("state"), RUNNABLE_TASK)  # the id index
        when = " ".join("WHEN ? THEN ?" for _ in items)
        claimed = c.execute(
            f"UPDATE tasks SET {_CLAIM_SET} WHERE {ids} AND {states} AND dispatch = CASE id {when} END RETURNING *",
            (*_claim_params(agent, now, mark), *values, *state_values,
             *[v for first, dispatch, _ in items for v in (first["id"], dispatch)]),
        ).fetchall()
        if not claimed:
            return []
        read = {first["id"]: (first, i) for first, _, i in items}
        claimed.sort(key=lambda r: r["id"])
        c.execute(
            "INSERT INTO events (at, job_id, task_id, seq, kind, from_state, to_state, agent, message) VALUES "
            + ",".join(["(?,?,?,?,?,?,?,?,?)"] * len(claimed)),
            [v for r in claimed for v in (now, job_id, r["id"], r["seq"], "task", read[r["id"]][0]["state"],
                                          TaskState.RUNNING, agent, _attempt(r["attempts"]))])
        if job["state"] == JobState.QUEUED:
            self._job_state(c, job, JobState.RUNNING, by=agent, started_at=job["started_at"] or now)
            job = self._job_row(c, job_id)
        as_job = self._to_job(job)
        return [(read[r["id"]][1], Claim(self._to_task(r), as_job)) for r in claimed]

    def _claim_locked(self, c: Connection, first: Row, dispatch: int, agent: str,
                      now: float, mark: str | None) -> tuple[Row, Row] | None:
        """A claim's general path in transaction ``c``: the claimed task row and its job's row, or None."""
        # The task is not read again under the lock: with row locks it is (_lock_task_and_job); without
        # them (SQLite) the UPDATE below is conditional on the state and dispatch read before, so a task
        # changed in between is not claimed. Each statement less is a GIL hand-off less between
        # the workers, which costs more than the statement (issue 18).
        task_id = first["id"]
        limits = self.limits.lock(c, "jobs j WHERE j.id = ?", (first["job_id"],))
        locked = self._lock_task_and_job(c, first)
        if locked is None:
            return None
        task, job = locked
        if task["dispatch"] != dispatch or task["state"] not in RUNNABLE_TASK:
            return None
        if job["state"] not in (JobState.QUEUED, JobState.RUNNING):
            return None
        full = self.limits.full(c, limits, job)
        if full is not None:  # stays queued, no attempt spent; woken when a slot frees (_wake)
            c.execute("UPDATE tasks SET waiting = ? WHERE id = ? AND state = ? AND dispatch = ?",
                      (full, task_id, task["state"], dispatch))
            return None
        claimed = first_row(c.execute(
            f"UPDATE tasks SET {_CLAIM_SET} WHERE id = ? AND state = ? AND dispatch = ? RETURNING *",
            (*_claim_params(agent, now, mark), task_id, task["state"], task["dispatch"]),
        ))
        if claimed is None:
            return None
        self._event(
            c, "task", job_id=task["job_id"], task_id=task_id, seq=task["seq"], from_state=task["state"],
            to_state=TaskState.RUNNING, agent=agent, message=_attempt(claimed["attempts"]), at=now,
        )
        if job["state"] == JobState.QUEUED:
            self._job_state(c, job, JobState.RUNNING, by=agent, started_at=job["started_at"] or now)
            job = self._job_row(c, job["id"])
        return claimed, job

    def _claim_in_one_statement(self, job_id: int, task_id: int, dispatch: int, states: tuple[str, ...],
                                agent: str, now: float, mark: str | None) -> Claim | None:
        """A claim in one statement, its own transaction (PostgreSQL; :meth:`_claim_statement`). None when it did
        not go through (including a deadlock): the general path then decides."""
        try:
            with self._storage_errors():
                row = self._claim_statement(self._conn(), job_id, task_id, dispatch, states, agent, now, mark)
        except self.retryable:
            return None
        return None if row is None else self._one_statement_claim(row)

    def _one_statement_claim(self, row: Row) -> Claim:
        job = row["job_row"]  # psycopg decodes json
        return Claim(self._to_task(row), self._to_job(json.loads(job) if isinstance(job, str) else job))

    def _claim_statement(self, c: Connection, job_id: int, task_id: int, dispatch: int, states: tuple[str, ...],
                         agent: str, now: float, mark: str | None) -> Row | None:
        """A claim in one statement (PostgreSQL): task ``task_id`` of job ``job_id`` in one of ``states`` with
        ``dispatch``, the job queued or running and counted by no concurrency limit, the common case. None
        when it did not go through (the task or the job is not as said, a limit counts it): the general
        path then decides.

        The same writes as the general path in one round trip instead of seven to ten (each is 150-250 µs
        here): the job row locked first (the one lock order: jobs, then tasks; a task that is not as said
        takes no lock, so a stale message never waits for one), the task locked and moved, a queued job
        moved to running (conditionally: a claim of another of its tasks may have done it meanwhile), the
        task's event and then the job's written, and the claimed task and its job as it now is returned.
        """
        marks = ", ".join("?" * len(states))
        task_is = f"t.id = ? AND t.job_id = j.id AND t.dispatch = ? AND t.state IN ({marks})"
        row: Row | None = c.execute(
            "WITH job AS (SELECT j.* FROM jobs j WHERE j.id = ? AND j.state IN ('queued', 'running')"
            f" AND NOT EXISTS (SELECT 1 FROM limits l WHERE {COUNTS_JOB})"
            f" AND EXISTS (SELECT 1 FROM tasks t WHERE {task_is})" + self.dialect.for_update + "),"
            f" prior AS (SELECT t.id, t.state FROM tasks t, job j WHERE {task_is} FOR UPDATE OF t),"
            f" claimed AS (UPDATE tasks SET {_CLAIM_SET} FROM prior WHERE tasks.id = prior.id"
            " RETURNING tasks.*, prior.state AS from_state),"
            " started AS (UPDATE jobs SET state = 'running', updated_at = ?,"
            " started_at = COALESCE(jobs.started_at, ?) FROM claimed"
            " WHERE jobs.id = claimed.job_id AND jobs.state = 'queued' RETURNING jobs.*),"
            # one INSERT, so the task's event is written before the job's (as the general path does)
            " logged AS (INSERT INTO events"
            " (at, job_id, task_id, seq, kind, from_state, to_state, agent, message)"
            " SELECT ?, job_id, id, seq, 'task', from_state, ?, ?, ? || attempts FROM claimed"
            " UNION ALL SELECT ?, id, NULL, NULL, 'job', 'queued', 'running', ?, NULL FROM started)"
            " SELECT claimed.*, COALESCE((SELECT row_to_json(s) FROM started s), row_to_json(job)) AS job_row"
            " FROM claimed, job",
            (job_id, task_id, dispatch, *states, task_id, dispatch, *states, *_claim_params(agent, now, mark),
             now, now, now, TaskState.RUNNING, agent, _attempt(""), now, agent),
        ).fetchone()
        return row

    def release_tasks(self, agent: str, claims: Sequence[tuple[int, int]], reason: str) -> Recovery:
        """Give back tasks ``agent`` claimed and did not start, as (task id, dispatch) of their claims (a
        batch's tasks that waited too long, its graceful stop, or one whose job was cancelled or paused
        after the claim): each goes back to the queue as if it had not been claimed (no attempt spent, no
        loss, the same dispatch: the message the agent holds stays valid), cancelled if a cancel was asked,
        queued without a message if its job is paused. A task no longer running for ``agent`` with that
        dispatch (taken back meanwhile, and maybe claimed again) is left alone."""
        if not claims:
            return Recovery()
        dispatch_of = dict(claims)

        def release(c: Connection) -> Recovery:
            recovery = Recovery()
            ids, values = self.dialect.in_("t.id", list(dispatch_of))
            limits = self.limits.lock(c, f"tasks t JOIN jobs j ON j.id = t.job_id WHERE {ids}", values)
            held = c.execute(f"SELECT t.id, t.job_id FROM tasks t WHERE {ids} ORDER BY t.job_id, t.id",
                             values).fetchall()
            for job_id in sorted({r["job_id"] for r in held}):
                self._job_row(c, job_id, lock=True)
            for ref in held:
                task = self._task_row(c, ref["id"], lock=True)
                if (task is None or task["state"] != TaskState.RUNNING or task["agent"] != agent
                        or task["dispatch"] != dispatch_of[task["id"]]):
                    continue
                self._hand_back(c, task, agent, recovery, reason=reason, lost=False, unstarted=True)
            recovery.dispatches += self.limits.wake(c, limits)
            return recovery

        return self._retrying(release)

    def unstarted_change(self, task_id: int, agent: str, dispatch: int) -> str | None:
        """Why a task ``agent`` claimed and has not started yet must not start now (None: it may): "gone"
        when it is no longer running for ``agent`` with this dispatch (taken back meanwhile), "cancel" when a
        cancel was asked, else the job's state when the job is no longer running (paused, cancelled)."""
        row = self._fetchone(
            "SELECT t.state, t.agent, t.dispatch, t.cancel_requested, j.state AS job_state FROM tasks t"
            " JOIN jobs j ON j.id = t.job_id WHERE t.id = ?", (task_id,))
        if row is None or row["state"] != TaskState.RUNNING or row["agent"] != agent or row["dispatch"] != dispatch:
            return "gone"
        if row["cancel_requested"]:
            return "cancel"
        return None if row["job_state"] == JobState.RUNNING else str(row["job_state"])

    def report_progress(self, task_id: int, agent: str, done: float, total: float | None) -> bool:
        with self._tx() as c:
            c.execute(
                "UPDATE tasks SET progress_done = ?, progress_total = ? WHERE id = ? AND state = 'running'"
                " AND agent = ?",
                (float(done), None if total is None else float(total), task_id, agent),
            )
            row = c.execute("SELECT cancel_requested, state, agent FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return bool(row is None or row["cancel_requested"] or row["state"] != TaskState.RUNNING
                    or row["agent"] != agent)

    def warn_task(self, task_id: int, agent: str, warning: str | None) -> None:
        with self._tx() as c:
            c.execute("UPDATE tasks SET warning = ? WHERE id = ? AND state = 'running' AND agent = ?",
                      (warning, task_id, agent))

    def cancel_requested(self, task_id: int) -> bool:
        row = self._fetchone("SELECT cancel_requested, state FROM tasks WHERE id = ?", (task_id,))
        return bool(row is None or row["cancel_requested"] or row["state"] != TaskState.RUNNING)

    @_again_after_deadlock
    def finish_task(
        self,
        task_id: int,
        agent: str,
        state: str,
        *,
        error: str | None = None,
        traceback: str | None = None,
        log_part: str | None = None,
    ) -> Outcome:
        if state not in DONE_TASK:
            raise ValueError(f"finish_task: {state!r} is not a final task state")
        now = time.time()
        with self._tx() as c:
            first = self._task_row(c, task_id)
            limits = [] if first is None else self.limits.lock(c, "jobs j WHERE j.id = ?", (first["job_id"],))
            locked = None if first is None else self._lock_task_and_job(c, first)
            if locked is None:
                return Outcome(recorded=False)
            task, job = locked
            self._append_log_parts(c, [(task_id, log_part)])  # the attempt's own bytes, even if taken back
            if task["state"] != TaskState.RUNNING or task["agent"] != agent:
                return Outcome(recorded=False)
            if (state == TaskState.FAILED and task["attempts"] < task["max_attempts"]
                    and job["state"] not in FINISHED and not task["cancel_requested"]):
                self._task_state(
                    c, task, TaskState.RETRYING, by=agent, message=error, require_agent=agent,
                    dispatch=task["dispatch"] + 1, error=error, traceback=traceback, finished_at=now,
                )
                return Outcome(retry=Dispatch(task_id, task["dispatch"] + 1, job["priority"], job["queue"], job["id"]),
                               wake=self.limits.wake(c, limits, job["case_id"]))
            self._task_state(
                c, task, state, by=agent, message=error, require_agent=agent,
                error=error, traceback=traceback, finished_at=now,
            )
            finalize, final = self._settle(c, task["job_id"], agent)
            wake = self.limits.wake(c, limits, job["case_id"])
        return Outcome(finalize=finalize, job_state=final, wake=wake)

    def finish_tasks(self, agent: str, finishes: Sequence[Finish]) -> Completed:
        done = Completed()
        if not finishes:
            return done
        for f in finishes:
            if f.state not in DONE_TASK:
                raise ValueError(f"finish_tasks: {f.state!r} is not a final task state")
        by_id = {f.task_id: f for f in finishes}

        def write(c: Connection) -> Completed:
            done = Completed()
            ids, id_values = self.dialect.in_("t.id", list(by_id))
            # The lock order of every transition: limits (by name), then jobs (by id), then tasks.
            limits = self.limits.lock(c, f"tasks t JOIN jobs j ON j.id = t.job_id WHERE {ids}", id_values)
            # Few rows and few statements: each row fetched and each statement run is a GIL hand-off
            # between the agent's busy workers (issue 18).
            job_ids = sorted(r["job_id"] for r in c.execute(f"SELECT DISTINCT t.job_id FROM tasks t WHERE {ids}",
                                                            id_values).fetchall())
            if not job_ids:
                return done
            jids, jid_values = self.dialect.in_("id", job_ids)
            jobs = {r["id"]: r for r in c.execute(
                f"SELECT id, state, priority, queue, case_id, has_finish FROM jobs WHERE {jids} ORDER BY id"
                + self.dialect.for_update, jid_values).fetchall()}
            tasks = c.execute(
                "SELECT t.id, t.job_id, t.seq, t.state, t.agent, t.attempts, t.max_attempts, t.dispatch,"
                f" t.cancel_requested FROM tasks t WHERE {ids} ORDER BY t.id" + self.dialect.for_update,
                id_values,
            ).fetchall()
            now = time.time()
            events: list[tuple[Any, ...]] = []
            counts: dict[int, dict[str, int]] = {}
            succeeded: list[int] = []
            skipped: set[int] = set()  # jobs with a finishing step of tasks not written here
            for task in tasks:
                f, job = by_id[task["id"]], jobs[task["job_id"]]
                if (task["state"] != TaskState.RUNNING or task["agent"] != agent  # taken back, or written already
                        or (f.dispatch is not None and task["dispatch"] != f.dispatch)):  # of an older claim
                    if job["has_finish"]:
                        skipped.add(task["job_id"])
                    continue
                at = f.at or now
                state = f.state
                if (state == TaskState.FAILED and task["attempts"] < task["max_attempts"]
                        and job["state"] not in FINISHED and not task["cancel_requested"]):
                    state = TaskState.RETRYING
                    c.execute(
                        "UPDATE tasks SET state = ?, dispatch = ?, error = ?, traceback = ?, finished_at = ?"
                        " WHERE id = ? AND state = 'running' AND agent = ?",
                        (state, task["dispatch"] + 1, f.error, f.traceback, at, task["id"], agent),
                    )
                    done.dispatches.append(Dispatch(task["id"], task["dispatch"] + 1, job["priority"], job["queue"],
                                                    task["job_id"]))
                elif state == TaskState.SUCCEEDED and f.error is None and f.traceback is None:
                    succeeded.append(task["id"])  # the common case: one UPDATE for all of them, below
                else:
                    c.execute(
                        "UPDATE tasks SET state = ?, error = ?, traceback = ?, finished_at = ?"
                        " WHERE id = ? AND state = 'running' AND agent = ?",
                        (state, f.error, f.traceback, at, task["id"], agent),
                    )
                column = _COUNTER.get(state)
                if column is not None:
                    per_job = counts.setdefault(task["job_id"], {})
                    per_job[column] = per_job.get(column, 0) + 1
                events.append((at, task["job_id"], task["id"], task["seq"], "task", TaskState.RUNNING, state, agent,
                               None, f.error))
                done.recorded.append(task["id"])
            if succeeded:
                # One statement for all of them; each keeps its own finished_at. The ids pick the rows: ``|| ''``
                # keeps SQLite's planner from the held-tasks index (it would scan all the agent's running tasks).
                sids, sid_values = self.dialect.in_("id", succeeded)
                when = " ".join("WHEN ? THEN ?" for _ in succeeded)
                times = [v for i in succeeded for v in (i, by_id[i].at or now)]
                written = c.execute(
                    "UPDATE tasks SET state = 'succeeded', error = NULL, traceback = NULL,"
                    f" finished_at = CASE id {when} END WHERE {sids} AND state || '' = 'running' AND agent || '' = ?",
                    (*times, *sid_values, agent),
                ).rowcount
                assert written == len(succeeded), "tasks changed under the batch's locks"
            if events:  # one statement (completer_batch is at most 1000: 10,000 parameters)
                c.execute(
                    "INSERT INTO events (at, job_id, task_id, seq, kind, from_state, to_state, agent, actor, message)"
                    " VALUES " + ",".join(["(?,?,?,?,?,?,?,?,?,?)"] * len(events)), [v for e in events for v in e])
            for job_id, per_job in counts.items():  # the job counters once per job
                parts = ", ".join(f"{col} = {col} + ?" for col in per_job)
                c.execute(f"UPDATE jobs SET {parts}, updated_at = ? WHERE id = ?", (*per_job.values(), now, job_id))
            for job_id in sorted(counts):  # settled once per job; a due finishing step is sent, not taken here
                _, final = self._settle(c, job_id, None if jobs[job_id]["has_finish"] else agent)
                if final is not None:
                    done.job_states[job_id] = final
                else:
                    self._finalize_if_ready(c, job_id, done.finalize)
            for job_id in sorted(skipped - counts.keys()):
                # Its step may be due from an earlier write whose caller never sent it: PostgreSQL's plain
                # successes are written first in a transaction of their own, and if the rest of that batch then
                # fails, the completer writes each outcome again, one at a time, and lands here. Sending the step
                # twice is harmless (begin_finalize takes it once).
                self._finalize_if_ready(c, job_id, done.finalize)
            if limits and done.recorded:
                cases = {jobs[j]["case_id"] for j in {r["job_id"] for r in tasks}}
                done.dispatches += self.limits.wake(c, limits, next(iter(cases)) if len(cases) == 1 else ALL_CASES)
            # every attempt's part, recorded or not (taken back meanwhile): its own bytes either way
            self._append_log_parts(c, [(t["id"], by_id[t["id"]].log_part) for t in tasks])
            started = [(i, by_id[i].started_at) for i in done.recorded if by_id[i].started_at is not None]
            if started:  # tasks claimed with a batch began after their claim (engine/prefetch.py)
                sids, sid_values = self.dialect.in_("id", [i for i, _ in started])
                c.execute(f"UPDATE tasks SET started_at = CASE id {' '.join('WHEN ? THEN ?' for _ in started)} END"
                          f" WHERE {sids}", (*[v for pair in started for v in pair], *sid_values))
            return done

        plain = [f for f in finishes if f.state == TaskState.SUCCEEDED and f.error is None and f.traceback is None]
        if plain and self.dialect.writes_in_with:
            # PostgreSQL: the common case first, in one statement (see _finish_succeeded_at_once); what it did
            # not record (a task a limit counts, one taken back, a failure) is decided by the general path.
            fast = self._retrying(lambda c: self._finish_succeeded_at_once(c, agent, plain))
            if len(fast.recorded) == len(by_id):
                return fast
            for task_id in fast.recorded:
                del by_id[task_id]
            rest = self._retrying(write)
            fast.recorded += rest.recorded
            fast.dispatches += rest.dispatches
            fast.finalize += [j for j in rest.finalize if j not in fast.finalize]
            fast.job_states.update(rest.job_states)
            return fast
        return self._retrying(write)

    def _append_log_parts(self, c: Connection, parts: list[tuple[int, str | None]]) -> None:
        """Append each task's ended attempt's log part to its ``log_slices`` (one statement)."""
        parts = [(task_id, part) for task_id, part in parts if part]
        if not parts:
            return
        ids, id_values = self.dialect.in_("id", [task_id for task_id, _ in parts])
        c.execute(f"UPDATE tasks SET log_slices = COALESCE(log_slices || ' ', '') ||"
                  f" CASE id {' '.join('WHEN ? THEN ?' for _ in parts)} END WHERE {ids}",
                  (*[v for pair in parts for v in pair], *id_values))

    def _finish_succeeded_at_once(self, c: Connection, agent: str, finishes: Sequence[Finish]) -> Completed:
        """Tasks that succeeded without an error, in one statement (PostgreSQL): what the general path of
        :meth:`finish_tasks` writes for them, for those still running under ``agent`` with the dispatch they
        were claimed with, of jobs no concurrency limit counts (a limit's row must be locked before the job's,
        and a freed slot wakes a waiting task: the general path does both). Their jobs are settled after it,
        in the same transaction, only if nothing is left to run in them.

        Why one statement: claims of a job wait for its row's lock, and the general path holds it from its
        read of the jobs to COMMIT, seven round trips and more. Here it is held from this statement to COMMIT.
        The job rows are locked first, in id order (the one lock order: jobs, then tasks): the task UPDATE
        takes the locked jobs' ids as one array, a subquery PostgreSQL runs once before the UPDATE's first row
        (as a join, the jobs could be locked one by one between task rows).
        """
        done = Completed()
        now = time.time()
        row = c.execute(
            "WITH fin AS (SELECT * FROM unnest(?::bigint[], ?::float8[], ?::bigint[], ?::float8[], ?::text[])"
            " AS f(id, at, dispatch, started, part)),"
            " locked AS (SELECT j.id FROM jobs j WHERE j.id IN (SELECT t.job_id FROM tasks t JOIN fin ON t.id = fin.id)"
            f" AND NOT EXISTS (SELECT 1 FROM limits l WHERE {COUNTS_JOB}) ORDER BY j.id FOR NO KEY UPDATE),"
            " written AS (UPDATE tasks SET state = 'succeeded', error = NULL, traceback = NULL, finished_at = fin.at,"
            " started_at = COALESCE(fin.started, tasks.started_at),"
            " log_slices = CASE WHEN fin.part IS NULL THEN tasks.log_slices"
            " ELSE COALESCE(tasks.log_slices || ' ', '') || fin.part END"
            " FROM fin WHERE tasks.id = fin.id AND tasks.state = 'running' AND tasks.agent = ?"
            " AND (fin.dispatch IS NULL OR tasks.dispatch = fin.dispatch)"
            " AND tasks.job_id = ANY(ARRAY(SELECT id FROM locked))"
            " RETURNING tasks.id, tasks.job_id, tasks.seq, fin.at),"
            " logged AS (INSERT INTO events (at, job_id, task_id, seq, kind, from_state, to_state, agent)"
            " SELECT at, job_id, id, seq, 'task', 'running', 'succeeded', ? FROM written ORDER BY id),"
            " counted AS (UPDATE jobs SET tasks_succeeded = jobs.tasks_succeeded + w.n, updated_at = ?"
            " FROM (SELECT job_id, count(*) AS n FROM written GROUP BY job_id) w WHERE jobs.id = w.job_id"
            " RETURNING jobs.id, jobs.has_finish,"
            " jobs.tasks_total - jobs.tasks_succeeded - jobs.tasks_failed - jobs.tasks_cancelled AS left_to_run)"
            " SELECT (SELECT array_agg(id ORDER BY id) FROM written) AS recorded,"
            " (SELECT array_agg(id ORDER BY id) FROM counted WHERE left_to_run = 0) AS ended,"
            " (SELECT array_agg(id ORDER BY id) FROM counted WHERE left_to_run = 0 AND has_finish = 1) AS finishing",
            ([f.task_id for f in finishes], [f.at or now for f in finishes], [f.dispatch for f in finishes],
             [f.started_at for f in finishes], [f.log_part for f in finishes], agent, agent, now),
        ).fetchone()
        done.recorded = list(row["recorded"] or [])
        finishing = set(row["finishing"] or [])
        for job_id in row["ended"] or []:  # settled as the general path does (there, every job it counted)
            _, final = self._settle(c, job_id, None if job_id in finishing else agent)
            if final is not None:
                done.job_states[job_id] = final
            else:
                self._finalize_if_ready(c, job_id, done.finalize)
        return done

    def _finalize_if_ready(self, c: Connection, job_id: int, finals: list[int]) -> None:
        """Add ``job_id`` to ``finals`` if its finishing step is due and nobody runs it."""
        row = c.execute(
            "SELECT state, has_finish, finisher, tasks_total, tasks_succeeded, tasks_failed, tasks_cancelled"
            " FROM jobs WHERE id = ?", (job_id,)).fetchone()
        left = row["tasks_total"] - row["tasks_succeeded"] - row["tasks_failed"] - row["tasks_cancelled"]
        if (row["has_finish"] and row["state"] in IN_PROGRESS and left == 0 and row["tasks_succeeded"] > 0
                and row["finisher"] is None and job_id not in finals):
            finals.append(job_id)

    @_again_after_deadlock
    def begin_finalize(self, job_id: int, agent: str) -> Job | None:
        in_progress, values = self.dialect.in_("state", IN_PROGRESS)
        with self._tx() as c:
            row = first_row(c.execute(
                f"UPDATE jobs SET finisher = ? WHERE id = ? AND finisher IS NULL AND has_finish = 1 AND {in_progress}"
                " AND tasks_succeeded + tasks_failed + tasks_cancelled = tasks_total RETURNING *",
                (agent, job_id, *values),
            ))
            if row is None:
                return None
            self._event(c, "finish", job_id=job_id, agent=agent, message="finishing step started")
            return self._to_job(row)

    @_again_after_deadlock
    def end_finalize(self, job_id: int, agent: str, error: str | None) -> str | None:
        with self._tx() as c:
            job = self._job_row(c, job_id, lock=True)
            if job["finisher"] != agent or job["state"] not in IN_PROGRESS:
                return None
            summary: str | None
            final: str
            if error:
                final, summary = JobState.FAILED, f"finishing step failed: {error}"
            else:
                final, summary = self._final_state(job), self._failure_summary(c, job)
            self._job_state(c, job, final, by=agent, message=error, finished_at=time.time(),
                            finisher=None, error=summary)
            return final

    def queue_targets(self, queued_before: float | None = None) -> tuple[list[Dispatch], list[int]]:
        runnable, runnable_values = self.dialect.in_("t.state", RUNNABLE_TASK)
        in_progress, in_progress_values = self.dialect.in_("state", IN_PROGRESS)
        with self._read() as c:
            rows = c.execute(
                "SELECT t.id, t.dispatch, j.priority, j.queue, t.job_id FROM tasks t JOIN jobs j ON j.id = t.job_id"
                f" WHERE {runnable} AND j.state IN ('queued', 'running') AND t.waiting IS NULL"
                " AND COALESCE(t.queued_at, 0) < ? ORDER BY t.id",
                (*runnable_values, time.time() if queued_before is None else queued_before),
            ).fetchall()
            finals = c.execute(
                f"SELECT id FROM jobs WHERE {in_progress} AND has_finish = 1 AND finisher IS NULL"
                " AND tasks_succeeded > 0 AND tasks_succeeded + tasks_failed + tasks_cancelled = tasks_total"
                " ORDER BY id",
                in_progress_values,
            ).fetchall()
        return ([Dispatch(r["id"], r["dispatch"], r["priority"], r["queue"], r["job_id"]) for r in rows],
                [r["id"] for r in finals])

    def queue_summary(self) -> list[dict[str, Any]]:
        runnable, values = self.dialect.in_("t.state", RUNNABLE_TASK)
        rows = self._fetchall(
            f"SELECT j.queue AS queue, SUM(CASE WHEN {runnable} AND j.state IN ('queued', 'running') THEN 1 ELSE 0"
            f" END) AS depth, SUM(CASE WHEN t.state = 'running' THEN 1 ELSE 0 END) AS running,"
            f" SUM(CASE WHEN {runnable} AND t.waiting IS NOT NULL THEN 1 ELSE 0 END) AS waiting"
            " FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.state IN ('queued', 'retrying', 'running')"
            " GROUP BY j.queue ORDER BY j.queue",
            (*values, *values),
        )
        return [{"queue": r["queue"], "depth": int(r["depth"] or 0), "running": int(r["running"] or 0),
                 "waiting": int(r["waiting"] or 0)} for r in rows]

    # -- user actions --------------------------------------------------------------------------------
    @_again_after_deadlock
    def pause_job(self, job_id: int, actor: str) -> None:
        with self._tx() as c:
            job = self._job_row(c, job_id, lock=True)
            if job["state"] not in (JobState.QUEUED, JobState.RUNNING):
                raise InvalidState(f"job {job_id} is {job['state']}; only a queued or running job can be paused")
            self._job_state(c, job, JobState.PAUSED, actor=actor, message=JobState.PAUSED)

    @_again_after_deadlock
    def resume_job(self, job_id: int, actor: str) -> list[Dispatch]:
        with self._tx() as c:
            job = self._job_row(c, job_id, lock=True)
            if job["state"] != JobState.PAUSED:
                raise InvalidState(f"job {job_id} is {job['state']}; only a paused job can be resumed")
            back = JobState.RUNNING if job["started_at"] else JobState.QUEUED
            self._job_state(c, job, back, actor=actor, message="resumed")
            return self._bump_runnable(c, job)

    @_again_after_deadlock
    def cancel_job(self, job_id: int, actor: str) -> None:
        now = time.time()
        runnable, values = self.dialect.in_("state", RUNNABLE_TASK)
        with self._tx() as c:
            job = self._job_row(c, job_id, lock=True)
            if job["state"] not in IN_PROGRESS:
                raise InvalidState(f"job {job_id} is {job['state']}; only a job in progress can be cancelled")
            for task in c.execute(
                f"SELECT * FROM tasks WHERE job_id = ? AND {runnable} ORDER BY id{self.dialect.for_update}",
                (job_id, *values),
            ).fetchall():
                self._task_state(c, task, TaskState.CANCELLED, actor=actor, finished_at=now, message="job cancelled")
            c.execute("UPDATE tasks SET cancel_requested = 1 WHERE job_id = ? AND state = 'running'", (job_id,))
            self._job_state(c, job, JobState.CANCELLED, actor=actor, message=JobState.CANCELLED, finished_at=now,
                            finisher=None, error="cancelled by " + actor)

    @_again_after_deadlock
    def retry_job(self, job_id: int, actor: str, seq: int | None = None) -> tuple[list[Dispatch], bool]:
        lock = self.dialect.for_update
        with self._tx() as c:
            job = self._job_row(c, job_id, lock=True)
            if seq is None:
                if job["state"] not in FINISHED:
                    raise InvalidState(
                        f"job {job_id} is {job['state']}; retry applies to a finished job (or one failed task)"
                    )
                again = (TaskState.FAILED, TaskState.CANCELLED) if job["state"] == JobState.CANCELLED \
                    else (TaskState.FAILED,)
                retryable, values = self.dialect.in_("state", again)
                tasks = c.execute(
                    f"SELECT * FROM tasks WHERE job_id = ? AND {retryable} ORDER BY seq{lock}", (job_id, *values)
                ).fetchall()
            else:
                task = c.execute(f"SELECT * FROM tasks WHERE job_id = ? AND seq = ?{lock}", (job_id, seq)).fetchone()
                if task is None:
                    raise NotFound(f"job {job_id} has no task {seq}")
                if task["state"] not in (TaskState.FAILED, TaskState.CANCELLED):
                    raise InvalidState(
                        f"task {seq} of job {job_id} is {task['state']}; only a failed task can be retried"
                    )
                tasks = [task]
            refinish = bool(not tasks and job["state"] == JobState.FAILED and job["has_finish"]
                            and job["tasks_succeeded"] == job["tasks_total"])
            if not tasks and not refinish:
                raise InvalidState(f"job {job_id} is {job['state']} and has no failed tasks to retry")
            now = time.time()
            for task in tasks:
                self._task_state(
                    c, task, TaskState.QUEUED, actor=actor, message="retry requested", dispatch=task["dispatch"] + 1,
                    max_attempts=task["attempts"] + 1 + job["retries"], error=None, traceback=None,
                    agent=None, queued_at=now, finished_at=None, cancel_requested=0,
                    losses=0,  # a user's retry gives a poison task its max_losses again, as it gives attempts
                )
            if job["state"] in FINISHED:
                self._job_state(
                    c, job, JobState.RUNNING if refinish else JobState.QUEUED, actor=actor, message="retry requested",
                    finished_at=None, error=None, finisher=None,
                )
            job = self._job_row(c, job_id)
            dispatches = [Dispatch(t["id"], t["dispatch"] + 1, job["priority"], job["queue"], job["id"]) for t in tasks]
            if job["state"] == JobState.PAUSED:
                dispatches = []
            return dispatches, refinish

    @_again_after_deadlock
    def set_priority(self, job_id: int, priority: int, actor: str) -> list[Dispatch]:
        with self._tx() as c:
            job = self._job_row(c, job_id, lock=True)
            if job["state"] not in IN_PROGRESS:
                raise InvalidState(f"job {job_id} is {job['state']}; priority applies to jobs in progress")
            c.execute("UPDATE jobs SET priority = ?, updated_at = ? WHERE id = ?", (priority, time.time(), job_id))
            self._event(c, "priority", job_id=job_id, actor=actor, message=f"priority {job['priority']} -> {priority}")
            job = self._job_row(c, job_id)
            dispatches = self._bump_runnable(c, job)
            return [] if job["state"] == JobState.PAUSED else dispatches

    # -- synthetic history ----------------------------------------------------------------------------------
    def insert_history(self, batches: Callable[[int, int], Iterable[HistoryBatch]]) -> dict[str, int]:
        sql = {}
        for table, cols in HISTORY_COLUMNS.items():  # every column quoted: "interval" is a type in PostgreSQL
            quoted = ", ".join(f'"{col}"' for col in cols)
            keep = " ON CONFLICT (name) DO NOTHING" if table == "agents" else ""
            sql[table] = f"INSERT INTO {table} ({quoted}) VALUES ({','.join('?' * len(cols))}){keep}"
        unchecked = self.dialect.unchecked
        if unchecked:
            self._conn().execute(unchecked[0])
        try:
            return self._insert_history(batches, sql)
        finally:
            if unchecked:
                self._conn().execute(unchecked[1])

    def _insert_history(self, batches: Callable[[int, int], Iterable[HistoryBatch]],
                        sql: dict[str, str]) -> dict[str, int]:
        counts = dict.fromkeys(HISTORY_COLUMNS, 0)
        with self._tx() as c:
            lock = self.dialect.lock_writers_out(("jobs", "tasks"))  # explicit ids follow MAX(id)
            if lock:
                c.execute(lock)
            job_base = first_row(c.execute("SELECT COALESCE(MAX(id), 0) AS n FROM jobs"))["n"]
            task_base = first_row(c.execute("SELECT COALESCE(MAX(id), 0) AS n FROM tasks"))["n"]
            for batch in batches(int(job_base), int(task_base)):
                for table in HISTORY_COLUMNS:
                    rows = batch.get(table)
                    if rows:
                        c.executemany(sql[table], rows)
                        counts[table] += len(rows)
            for table in ("jobs", "tasks"):
                move = self.dialect.move_sequence(table)
                if move:
                    c.execute(move)
        return counts

    # -- agents: registration, heartbeats, the recovery of lost agents ----------------------------------
    def register_agent(self, info: dict[str, Any]) -> Recovery:
        def register(c: Connection) -> Recovery:
            now = time.time()
            recovery = Recovery()
            self._serialise(c, "jobmanager.engine.agent:" + info["name"])  # even when there is no row to lock yet
            old = c.execute(
                f"SELECT * FROM agents WHERE name = ?{self.dialect.for_update}", (info["name"],)
            ).fetchone()
            if old is not None and old["state"] == AgentState.ONLINE:
                fresh = old["heartbeat_at"] >= now - LOST_AFTER_INTERVALS * old["interval"]
                same_host = old["host"] == info["host"]
                if fresh and not (same_host and not psutil.pid_exists(old["pid"])):
                    raise InvalidState(
                        f"agent {info['name']} is already running (host {old['host']}, pid {old['pid']})"
                    )
            if old is not None and old["state"] in (AgentState.ONLINE, AgentState.LOST):
                self._recover_agent(c, old["name"], info["name"], recovery, message=f"agent {old['name']} restarted")
            c.execute("DELETE FROM agents WHERE name = ?", (info["name"],))
            c.execute(
                'INSERT INTO agents (name, host, pid, workers, worker_type, version, queues, state, "interval",'
                " started_at, heartbeat_at, log_path) VALUES (?,?,?,?,?,?,?,'online',?,?,?,?)",
                (info["name"], info["host"], info["pid"], info["workers"], info["worker_type"], info["version"],
                 json.dumps(info.get("queues", ["default"])), info["interval"], now, now, info.get("log_path")),
            )
            self._event(c, "agent", agent=info["name"], to_state=AgentState.ONLINE,
                        message=f"started on {info['host']} pid {info['pid']}", at=now)
            return recovery

        return self._retrying(register)

    def heartbeat(self, name: str, pid: int, stats: dict[str, Any]) -> str | None:
        with self._tx() as c:
            row = c.execute(
                f"SELECT state, pid, command FROM agents WHERE name = ?{self.dialect.for_update}", (name,)
            ).fetchone()
            now = time.time()  # after the lock: a long wait for it must not age the heartbeat
            if row is None or row["pid"] != pid:
                return "stop"  # another incarnation owns the name now
            c.execute(
                "UPDATE agents SET heartbeat_at = ?, state = 'online', current_tasks = ?, done = ?, failed = ?,"
                " cpu_percent = ?, rss_bytes = ? WHERE name = ? AND pid = ?",
                (now, json.dumps(stats.get("current", [])), stats.get("done", 0), stats.get("failed", 0),
                 stats.get("cpu_percent"), stats.get("rss_bytes"), name, pid),
            )
            if row["state"] != AgentState.ONLINE:
                self._event(c, "agent", agent=name, from_state=row["state"], to_state=AgentState.ONLINE,
                            message="heartbeat resumed", at=now)
            command: str | None = row["command"]
            return command

    def agent_stopped(self, name: str, pid: int) -> Recovery:
        def stopped(c: Connection) -> Recovery:
            recovery = Recovery()
            row = c.execute(
                f"SELECT * FROM agents WHERE name = ? AND pid = ?{self.dialect.for_update}", (name, pid)
            ).fetchone()
            if row is None:
                return recovery
            self._recover_agent(c, name, name, recovery, message="agent stopped", lost=False)
            c.execute("UPDATE agents SET state = 'offline', stopped_at = ?, current_tasks = '[]', command = NULL"
                      " WHERE name = ? AND pid = ?", (time.time(), name, pid))
            self._event(c, "agent", agent=name, from_state=row["state"], to_state=AgentState.OFFLINE, message="stopped")
            return recovery

        return self._retrying(stopped)

    def recover_lost(self, by_agent: str, now: float | None = None) -> Recovery:
        def recover(c: Connection) -> Recovery:
            at = now or time.time()  # after BEGIN (SQLite: the lock): a busy store must not make agents look lost
            recovery = Recovery()
            # Rows another agent is recovering right now are skipped, not waited for.
            stale = c.execute(
                'SELECT name, heartbeat_at FROM agents WHERE state = \'online\' AND heartbeat_at < ? - ? * "interval"'
                f" AND name <> ? ORDER BY name{self.dialect.skip_locked}",  # never itself: it is evidently alive
                (at, LOST_AFTER_INTERVALS, by_agent),
            ).fetchall()
            for row in stale:
                cur = c.execute(
                    "UPDATE agents SET state = 'lost', stopped_at = ?, current_tasks = '[]'"
                    " WHERE name = ? AND state = 'online' AND heartbeat_at = ?",
                    (at, row["name"], row["heartbeat_at"]),
                )
                if cur.rowcount != 1:
                    continue
                recovery.lost.append(row["name"])
                self._event(c, "agent", agent=row["name"], from_state=AgentState.ONLINE, to_state=AgentState.LOST,
                            actor=by_agent, message=f"no heartbeat for {at - row['heartbeat_at']:.1f} s")
                self._recover_agent(c, row["name"], by_agent, recovery, message=f"agent {row['name']} lost")
            return recovery

        return self._retrying(recover)

    def reconcile_agent(self, name: str, pid: int, reported: Iterable[int], snapshot_at: float) -> Recovery:
        """Hand back the tasks the store says ``name`` is running but its heartbeat did not report.

        ``reported`` are the ids of the tasks the agent was running at ``snapshot_at``, a time before
        which every claim the agent made is either reported or already finished in the store (the
        runner keeps a task in its report from the claim until its outcome is written). A task that
        started before ``snapshot_at - RECONCILE_MARGIN_S`` and is missing is one whose agent forgot
        it (e.g. its finish write failed): it is recovered like a lost agent's task, a loss counted.

        Costs one indexed SELECT per heartbeat; a write transaction only when a task is missing.
        """
        cutoff = snapshot_at - RECONCILE_MARGIN_S
        known = set(reported)
        rows = self._fetchall(
            "SELECT id, job_id FROM tasks WHERE state = 'running' AND agent = ? AND started_at < ?", (name, cutoff)
        )
        missing = sorted((r["job_id"], r["id"]) for r in rows if r["id"] not in known)
        if not missing:
            return Recovery()

        def reconcile(c: Connection) -> Recovery:
            recovery = Recovery()
            agent = c.execute(
                f"SELECT state FROM agents WHERE name = ? AND pid = ?{self.dialect.for_update}", (name, pid)
            ).fetchone()
            if agent is None or agent["state"] != AgentState.ONLINE:
                return recovery  # stopped or lost meanwhile: that path hands its tasks back
            ids, values = self.dialect.in_("t.id", [task_id for _, task_id in missing])
            limits = self.limits.lock(c, f"tasks t JOIN jobs j ON j.id = t.job_id WHERE {ids}", values)
            for job_id in sorted({job for job, _ in missing}):
                self._job_row(c, job_id, lock=True)
            for _, task_id in missing:
                task = self._task_row(c, task_id, lock=True)
                if (task is None or task["state"] != TaskState.RUNNING or task["agent"] != name
                        or task["started_at"] >= cutoff):
                    continue
                self._hand_back(c, task, name, recovery, lost=True,
                                reason=f"agent {name} no longer reports the task in its heartbeat")
            recovery.dispatches += self.limits.wake(c, limits)
            return recovery

        return self._retrying(reconcile)

    def _recover_agent(
        self, c: Connection, name: str, by: str, recovery: Recovery, *, message: str, lost: bool = True,
    ) -> None:
        """Hand back the work an agent held: its running tasks and finishing steps (jobs locked in id order).

        ``lost``: the agent died (killed, crashed, restarted without stopping), and each of its running
        tasks counts a loss (:meth:`_hand_back`); False: a graceful stop, whose tasks go back to the
        queue as if they had not started (no attempt spent, no loss counted).
        """
        held = c.execute(
            "SELECT id, job_id FROM tasks WHERE state = 'running' AND agent = ? ORDER BY job_id, id", (name,)
        ).fetchall()
        limits = self.limits.lock(c, "tasks t JOIN jobs j ON j.id = t.job_id WHERE t.state = 'running'"
                                      " AND t.agent = ?", (name,)) if held else []
        if self.dialect.row_locks:
            finishing = c.execute("SELECT id FROM jobs WHERE finisher = ?", (name,)).fetchall()
            for job_id in sorted({r["job_id"] for r in held} | {r["id"] for r in finishing}):
                self._job_row(c, job_id, lock=True)
        for ref in held:
            task = self._task_row(c, ref["id"], lock=True)
            if task is None or task["state"] != TaskState.RUNNING or task["agent"] != name:
                continue
            self._hand_back(c, task, by, recovery, reason=message, lost=lost)
        recovery.dispatches += self.limits.wake(c, limits)
        for job in c.execute("UPDATE jobs SET finisher = NULL WHERE finisher = ? RETURNING id", (name,)).fetchall():
            self._event(c, "finish", job_id=job["id"], agent=by, message=f"{message}; finishing step resent")
            recovery.finalize.append(job["id"])

    def _hand_back(self, c: Connection, task: Row, by: str, recovery: Recovery, *, reason: str, lost: bool,
                   unstarted: bool = False) -> None:
        """Take a running task from an agent that will not finish it; the task's job row is locked.

        The one path for a lost agent's tasks, a gracefully stopped agent's, and a task its live agent's
        heartbeat no longer reports (:meth:`reconcile_agent`). The agent's end is not the task's fault,
        so the attempt its claim counted is given back. A loss (``lost``) is counted in ``tasks.losses``
        and written on the job's timeline ("loss k of N"); the task runs again, unless its job type is
        not safe to re-run (``jobs.rerun_safe = 0``: it fails at once) or this was loss
        ``jobs.max_losses`` (a poison task that kills every agent it lands on: it fails "killed its agent
        N times").

        Attempts and losses are two separate budgets, neither spends the other: a task with retries=2
        that failed once (attempts 1 of 3) and then lost its agent twice still has attempts 2 and 3
        left (it shows attempts 1, losses 2); a third loss fails it as a poison task whatever attempts
        are left, and failures end it when its attempts are spent whatever losses are left. Only a
        user's retry (:meth:`retry_job`) starts both budgets again.

        ``unstarted``: a task its agent claimed and gives back without having started it
        (:meth:`release_tasks`): no attempt counted even if it is cancelled, and the same dispatch, so
        the message its agent holds and puts back stays valid.
        """
        now = time.time()
        job = self._job_row(c, task["job_id"])
        attempts = max(0, task["attempts"] - 1)  # the claim counted this attempt; the task did not end it
        if job["state"] in FINISHED or task["cancel_requested"]:
            self._task_state(c, task, TaskState.CANCELLED, by=by, message=reason, finished_at=now,
                             **({"attempts": attempts} if unstarted else {}))
        elif not lost:
            self._requeue(c, task, job, by, recovery, message=reason, attempts=attempts, keep_dispatch=unstarted)
            return
        else:
            losses, most = task["losses"] + 1, job["max_losses"]
            counted = f"{reason} (loss {losses} of {most})"
            if job["rerun_safe"] and losses < most:
                self._requeue(c, task, job, by, recovery, attempts=attempts, losses=losses,
                              message=f"{counted}; queued again, no attempt spent")
                return
            if not job["rerun_safe"]:
                error = (f"{reason} while running the task; job type {job['type']} is not safe to re-run "
                         "(rerun_safe = False), so it was not run again")
            else:
                error = f"killed its agent {losses} times (the last: {reason}); max_losses is {most}"
            self._task_state(c, task, TaskState.FAILED, by=by, message=f"{counted}; {error}", finished_at=now,
                             attempts=attempts, losses=losses, error=error)
        self._settle(c, task["job_id"], None)
        if job["has_finish"]:
            self._queue_finalize_if_ready(c, task["job_id"], recovery)

    def _requeue(self, c: Connection, task: Row, job: Row, by: str, recovery: Recovery, *, message: str,
                 keep_dispatch: bool = False, **fields: Any) -> None:
        """A running task back to queued with a new dispatch (sent unless its job is paused); with
        ``keep_dispatch``, the one it had: its message, held by whoever gives the task back, stays valid."""
        dispatch = task["dispatch"] + (0 if keep_dispatch else 1)
        self._task_state(c, task, TaskState.QUEUED, by=by, message=message, dispatch=dispatch,
                         queued_at=time.time(), **fields)
        if job["state"] != JobState.PAUSED:
            recovery.dispatches.append(Dispatch(task["id"], dispatch, job["priority"], job["queue"], job["id"]))

    def _queue_finalize_if_ready(self, c: Connection, job_id: int, recovery: Recovery) -> None:
        job = self._job_row(c, job_id)
        left = job["tasks_total"] - job["tasks_succeeded"] - job["tasks_failed"] - job["tasks_cancelled"]
        if job["state"] in IN_PROGRESS and left == 0 and job["finisher"] is None and job_id not in recovery.finalize:
            recovery.finalize.append(job_id)

    def agent_throughput(self, since: float, width: float, buckets: int) -> dict[str, list[int]]:
        rows = self._fetchall(
            f"SELECT agent, {self.dialect.bucket('(at - ?) / ?')} AS b, count(*) AS n FROM events"
            " WHERE kind = 'task' AND at >= ? AND to_state IN ('succeeded', 'failed') AND agent IS NOT NULL"
            " GROUP BY agent, b",
            (since, width, since),
        )
        out: dict[str, list[int]] = {}
        for r in rows:
            if 0 <= r["b"] < buckets:
                out.setdefault(r["agent"], [0] * buckets)[r["b"]] = int(r["n"])
        return out

    # -- metrics: reads through the primary key and the tasks_state index, whatever the history ------
    def last_event_id(self) -> int:
        return int(self._fetchone("SELECT COALESCE(MAX(id), 0) AS n FROM events")["n"])

    def events_after(self, after_id: int, limit: int) -> list[dict[str, Any]]:
        # Three lookups by primary key rather than one join: PostgreSQL's estimate of ``id > ?`` on a
        # freshly filled table can be far off, and a join then plans parallel scans of jobs and tasks.
        with self._read() as c:
            events = [dict(r) for r in c.execute(
                "SELECT id, at, kind, from_state, to_state, agent, job_id, task_id FROM events WHERE id > ?"
                " ORDER BY id LIMIT ?", (int(after_id), int(limit))).fetchall()]
            ids, values = self.dialect.in_("id", sorted({e["job_id"] for e in events if e["job_id"] is not None}))
            jobs = {r["id"]: r for r in c.execute(f"SELECT id, type, queue FROM jobs WHERE {ids}", values).fetchall()}
            ids, values = self.dialect.in_("id", sorted({e["task_id"] for e in events if e["task_id"] is not None}))
            started = {r["id"]: r["started_at"]
                       for r in c.execute(f"SELECT id, started_at FROM tasks WHERE {ids}", values).fetchall()}
        for e in events:
            job = jobs.get(e["job_id"])
            e["type"], e["queue"] = (job["type"], job["queue"]) if job is not None else (None, None)
            e["started_at"] = started.get(e["task_id"])
        return events

    def metrics_gauges(self) -> dict[str, list[dict[str, Any]]]:
        runnable, values = self.dialect.in_("t.state", RUNNABLE_TASK)
        with self._read() as c:
            depth = c.execute(
                "SELECT j.queue, j.type, count(*) AS n, MIN(CASE WHEN t.state = 'retrying'"
                " THEN COALESCE(t.finished_at, t.queued_at) ELSE t.queued_at END) AS oldest"
                f" FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE {runnable} AND j.state IN ('queued', 'running')"
                " GROUP BY j.queue, j.type",
                values,
            ).fetchall()
            running = c.execute(
                "SELECT agent, count(*) AS n FROM tasks WHERE state = 'running' GROUP BY agent"
            ).fetchall()
            agents = c.execute('SELECT name, state, heartbeat_at, "interval" FROM agents').fetchall()
        return {"depth": [dict(r) for r in depth], "running": [dict(r) for r in running],
                "agents": [dict(r) for r in agents]}

    def request_agent(self, name: str, command: str | None, actor: str) -> None:
        with self._tx() as c:
            cur = c.execute("UPDATE agents SET command = ? WHERE name = ? AND state = 'online'", (command, name))
            if cur.rowcount != 1:
                raise NotFound(f"no online agent {name!r}")
            self._event(c, "agent", agent=name, actor=actor, message=f"{command} requested")

    def list_agents(self) -> list[dict[str, Any]]:
        out = []
        for r in self._fetchall("SELECT * FROM agents ORDER BY name"):
            d = dict(r)
            d["current_tasks"] = json.loads(d["current_tasks"] or "[]")
            d["queues"] = json.loads(d["queues"] or "[]")
            out.append(d)
        return out

    # -- artifacts -----------------------------------------------------------------------------------
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
        return [dict(r) for r in self._fetchall("SELECT * FROM artifacts WHERE job_id = ? ORDER BY name", (job_id,))]



def _paused(moves: list[tuple[str, float]], started_at: float | None, paused: bool) -> tuple[float, float | None]:
    """From a job's moves into and out of ``paused`` (in order): the seconds paused after it started, in
    pauses that are over, and when the current pause began (None unless it is paused now)."""
    total, since = 0.0, None
    for to_state, at in moves:
        if to_state == JobState.PAUSED:
            since = at
        elif since is not None:
            if started_at is not None:
                total += max(0.0, at - max(since, started_at))
            since = None
    if not paused or since is None:
        return total, None
    return total, since if started_at is None else max(since, started_at)


def scope_sql(scope: dict[str, Any], owner: str = "owner", case: str = "case_id") -> tuple[str, list[Any]]:
    """The visibility rule of :meth:`Actor.scope` as a WHERE clause with bound ``?`` parameters."""
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

