"""The job store contract.

The store is the only code that writes job, task, agent, event and artifact rows.
Every state transition is one short transaction whose conditional UPDATE
(``... WHERE state = 'running' AND agent = ?``) decides who wins, so two processes
racing can never both succeed. One SQL implementation (:class:`~jobmanager.store.sql.SqlStore`)
fills in these methods for SQLite and PostgreSQL; ``tests/test_store_contract.py`` runs the same
suite on each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from jobmanager.models import (
    Claim,
    Completed,
    Dispatch,
    Finish,
    Job,
    Later,
    NewJob,
    Outcome,
    Recovery,
    Task,
)

if TYPE_CHECKING:
    from jobmanager.store.accounts import Accounts
    from jobmanager.store.audit import AuditRecord, AuditTrail
    from jobmanager.store.limits import Limits
    from jobmanager.store.outbox import Outbox
    from jobmanager.store.schedules import Schedules

SCHEMA_VERSION = 4

#: the columns :meth:`JobStore.insert_history` takes, per table, in the order of each row's values
HISTORY_COLUMNS: dict[str, tuple[str, ...]] = {
    "jobs": ("id", "type", "name", "params", "owner", "case_id", "priority", "state", "retries", "has_finish",
             "finisher", "tasks_total", "tasks_succeeded", "tasks_failed", "tasks_cancelled", "error",
             "created_at", "started_at", "finished_at", "updated_at"),
    "tasks": ("id", "job_id", "seq", "name", "params", "state", "attempts", "max_attempts", "dispatch", "agent",
              "progress_done", "progress_total", "cancel_requested", "error", "traceback", "queued_at",
              "started_at", "finished_at"),
    "events": ("at", "job_id", "task_id", "seq", "kind", "from_state", "to_state", "agent", "actor", "message"),
    "artifacts": ("job_id", "task_id", "name", "path", "media_type", "size", "created_at"),
    "agents": ("name", "host", "pid", "workers", "worker_type", "version", "queues", "state", "interval",
               "started_at", "heartbeat_at", "stopped_at", "current_tasks", "done", "failed", "cpu_percent",
               "rss_bytes", "log_path"),
}
#: one batch of :meth:`JobStore.insert_history`: rows (tuples in :data:`HISTORY_COLUMNS` order) per table
HistoryBatch = dict[str, list[tuple[Any, ...]]]


class JobStore:
    """Base class: every method documents the contract and raises NotImplementedError."""

    # -- the concept stores: tables of their own, written in this store's transactions ----------------------
    @property
    def accounts(self) -> Accounts:
        """Users, groups and what groups grant (:mod:`.accounts`)."""
        raise NotImplementedError

    @property
    def audit(self) -> AuditTrail:
        """Every action asked for, allowed or refused (:mod:`.audit`)."""
        raise NotImplementedError

    @property
    def schedules(self) -> Schedules:
        """Schedules and the runs they fired (:mod:`.schedules`)."""
        raise NotImplementedError

    @property
    def outbox(self) -> Outbox:
        """Notifications waiting to be sent, and how each delivery went (:mod:`.outbox`)."""
        raise NotImplementedError

    @property
    def limits(self) -> Limits:
        """Concurrency limits, and the rule claims, finishes and recoveries apply (:mod:`.limits`)."""
        raise NotImplementedError

    # -- schema ------------------------------------------------------------------------
    def initialize(self) -> None:
        """Create the schema if missing; refuse a foreign or newer database (HomeError)."""
        raise NotImplementedError

    def schema_version(self) -> int:
        raise NotImplementedError

    def migrate(self) -> tuple[int, int]:
        """Move the store to the current schema (``jobmanager migrate``); returns (from, to) versions."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- jobs --------------------------------------------------------------------------
    def create_jobs(self, jobs: Sequence[NewJob],
                    audit: Sequence[AuditRecord] = ()) -> list[tuple[int, list[Dispatch]]]:
        """Insert queued jobs and their queued tasks (with their options) in one transaction: all or none.
        ``audit``: the submit's own audit rows, written in the same transaction (:meth:`AuditTrail.write`).

        Returns each job's id and the queue messages to send once they are committed, in order.
        """
        raise NotImplementedError

    def create_job(self, **job: Any) -> tuple[int, list[Dispatch]]:
        """One job, :class:`NewJob`'s fields by name: :meth:`create_jobs` of one."""
        return self.create_jobs([NewJob(**job)])[0]

    def get_job(self, job_id: int, *, with_tasks: bool = False) -> Job:
        """One job (NotFound if missing); ``progress`` includes in-task progress."""
        raise NotImplementedError

    def get_tasks(self, job_id: int) -> list[Task]:
        raise NotImplementedError

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
        """Newest first; every filter is a bound parameter; ``scope`` is :meth:`Actor.scope`."""
        raise NotImplementedError

    def running_info(self, job_ids: list[int]) -> dict[int, dict[str, Any]]:
        """For each job id: ``progress`` (0..1, with in-task progress), the ``agents`` running it, why its tasks
        wait (``waiting``), and for its Elapsed: ``paused_s``, the seconds it spent paused since it started
        (pauses that are over), and ``paused_since``, when its current pause began (None unless paused)."""
        raise NotImplementedError

    def warning_counts(self, job_ids: list[int]) -> dict[int, int]:
        """For each job id with any: how many of its tasks ended with a warning (``ctx.warn``), for a grid page."""
        raise NotImplementedError

    def events(self, job_id: int) -> list[dict[str, Any]]:
        """A job's transitions in order (``at``, ``kind``, ``from_state``, ``to_state``...)."""
        raise NotImplementedError

    # -- what agents do with tasks -------------------------------------------------------
    def claim_task(self, task_id: int, dispatch: int, agent: str, job_id: int | None = None, *,
                   log_run: str | None = None) -> Claim | None:
        """Move a queued task to running for ``agent``, counting an attempt.

        ``job_id``: the job the message says the task is of, a hint the claim checks (a wrong one claims
        nothing through it). ``log_run``: the claiming agent process's log run (12 hex digits), appended to
        the task's ``log_slices`` as ``@<run>``: until the attempt's outcome stores its exact part, a reader
        finds it in that process's thread indexes (jobmanager/engine/tasklogs.py).

        Returns None (and changes nothing) when the message is stale: the task is
        not runnable any more, its dispatch counter moved on, or its job is paused
        or cancelled. Moves a queued job to running. Returns None too when a concurrency
        limit matching the job is full: the task stays queued with ``waiting`` set to the
        reason, spends no attempt, and is woken (:meth:`finish_task`'s ``Outcome.wake``)
        when a slot frees.
        """
        raise NotImplementedError

    @property
    def claims_ahead(self) -> bool:
        """Whether agents claim a prefetched batch's tasks together (:meth:`claim_tasks`); the backend's
        measured choice (``Dialect.claims_ahead``)."""
        return False

    def claim_tasks(self, wanted: Sequence[Dispatch], agent: str, *, first_starts: bool = True,
                    log_run: str | None = None) -> list[Claim | Later | None]:
        """Claim several tasks in one transaction, each decided as :meth:`claim_task` decides it; the
        result is aligned with ``wanted`` (None: not claimed, as claim_task's None). The first is the task
        its worker starts at once (if ``first_starts``); any other whose job is not safe to re-run, or that
        has lost an agent before, is left alone (``LATER``: to be claimed when it starts)."""
        raise NotImplementedError

    def release_tasks(self, agent: str, claims: Sequence[tuple[int, int]], reason: str) -> Recovery:
        """Give back tasks ``agent`` claimed and never started, by (task id, dispatch) of the claim, as if
        unclaimed (no attempt spent, no loss, the same dispatch; cancelled if a cancel was asked; queued
        without a message while the job is paused). The dispatches to send are returned: the given-back
        tasks' (the messages the agent holds are valid for them) and those of tasks a freed concurrency
        slot wakes."""
        raise NotImplementedError

    def unstarted_change(self, task_id: int, agent: str, dispatch: int) -> str | None:
        """Why a task ``agent`` claimed ahead must not start now, or None: "gone" (no longer its),
        "cancel" (a cancel was asked), or the job's state when the job is not running."""
        raise NotImplementedError

    def report_progress(self, task_id: int, agent: str, done: float, total: float | None) -> bool:
        """Record in-task progress; returns True when the task was asked to stop."""
        raise NotImplementedError

    def cancel_requested(self, task_id: int) -> bool:
        raise NotImplementedError

    def warn_task(self, task_id: int, agent: str, warning: str | None) -> None:
        """Set (None: clear) the running task's warning: it succeeded, but its reader should know this."""
        raise NotImplementedError

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
        """End a running task (succeeded, failed or cancelled) held by ``agent``; ``log_part`` (the attempt's
        part of its thread's log file) is appended to the task's ``log_slices``.

        A failure with attempts left becomes ``retrying`` with a new dispatch to
        send. When it was the job's last unfinished task, the job is settled in the
        same transaction: given its final state, or, for a job type with a
        finishing step, handed to this agent (``Outcome.finalize``). When the task
        matches concurrency limits, ``Outcome.wake`` holds the messages of the best
        waiting tasks (priority, then age) that fit in the slots now free.
        """
        raise NotImplementedError

    def finish_tasks(self, agent: str, finishes: Sequence[Finish]) -> Completed:
        """End many running tasks held by ``agent`` in one transaction (the batched completer's write).

        Each task ends as :meth:`finish_task` would end it (retries, the job settled once per job,
        limit slots freed, the events written), with one difference: a job whose finishing step is
        due is returned in ``Completed.finalize`` (to be sent as a finalize message) instead of being
        handed to this agent, so the completer never runs a finishing step itself. A task no longer
        running for ``agent`` (taken back by recovery) is skipped.
        """
        raise NotImplementedError

    def begin_finalize(self, job_id: int, agent: str) -> Job | None:
        """Claim a job's finishing step (for a resent finalize message)."""
        raise NotImplementedError

    def end_finalize(self, job_id: int, agent: str, error: str | None) -> str | None:
        """Give the job its final state after its finishing step; returns that state."""
        raise NotImplementedError

    def queue_targets(self, queued_before: float | None = None) -> tuple[list[Dispatch], list[int]]:
        """What should be in the queue now (for the agents' sweep).

        The run messages of runnable tasks queued before ``queued_before`` (not those
        waiting for a concurrency limit: see ``limits.wake_waiting``), and the ids of jobs
        whose finishing step is due but held by no agent.
        """
        raise NotImplementedError

    # -- queues -------------------------------------------------------------------------
    def queue_summary(self) -> list[dict[str, Any]]:
        """Per job queue with work: ``depth`` (runnable tasks), ``running`` and ``waiting`` tasks."""
        raise NotImplementedError

    # -- user actions ---------------------------------------------------------------------
    def pause_job(self, job_id: int, actor: str) -> None:
        raise NotImplementedError

    def resume_job(self, job_id: int, actor: str) -> list[Dispatch]:
        raise NotImplementedError

    def cancel_job(self, job_id: int, actor: str) -> None:
        """Cancel queued tasks at once and ask running ones to stop."""
        raise NotImplementedError

    def retry_job(self, job_id: int, actor: str, seq: int | None = None) -> tuple[list[Dispatch], bool]:
        """Re-queue the failed tasks of a finished job (or task ``seq``).

        Returns the messages to send, and whether the finishing step must be resent
        (a job whose tasks all succeeded but whose finishing step failed).
        """
        raise NotImplementedError

    def set_priority(self, job_id: int, priority: int, actor: str) -> list[Dispatch]:
        raise NotImplementedError

    def insert_history(self, batches: Callable[[int, int], Iterable[HistoryBatch]]) -> dict[str, int]:
        """Append a synthetic history (demo data, benchmarks) in bulk, in one transaction; rows per table.

        ``batches(job_base, task_base)`` is called once inside the transaction with the largest job and
        task ids, and yields batches of rows in :data:`HISTORY_COLUMNS` order; job and task rows carry
        explicit ids above those bases, inserted as given (no transition is checked: the caller answers
        for valid state combinations, counters that match the tasks, and their events). Each batch's
        tables are written in the order jobs, tasks, events, artifacts, agents. No other writer adds
        jobs or tasks meanwhile (SQLite: the write lock; PostgreSQL: the two tables are locked against
        writers, readers go on), and the id sequences move past the new ids. An agent whose name is
        already there keeps its row. Returns how many rows were inserted per table.
        """
        raise NotImplementedError

    # -- agents ----------------------------------------------------------------------------
    def register_agent(self, info: dict[str, Any]) -> Recovery:
        """Register (or re-register) an agent as online.

        Refuses (InvalidState) a name held by a live agent; a previous incarnation
        that died is recovered first, and its messages are returned.
        """
        raise NotImplementedError

    def heartbeat(self, name: str, pid: int, stats: dict[str, Any]) -> str | None:
        """Record a heartbeat; returns a command the agent must obey ('stop'), if any."""
        raise NotImplementedError

    def agent_stopped(self, name: str, pid: int) -> Recovery:
        """Mark an agent offline and hand its unfinished work back to the queue."""
        raise NotImplementedError

    def recover_lost(self, by_agent: str, now: float | None = None) -> Recovery:
        """Mark agents silent for 3 intervals lost and requeue or fail their tasks.

        Exactly one caller wins each lost agent, whoever else looks at once.
        """
        raise NotImplementedError

    def reconcile_agent(self, name: str, pid: int, reported: Iterable[int], snapshot_at: float) -> Recovery:
        """Recover, like a lost agent's (a loss counted, no attempt spent), the tasks the store says the
        live agent ``name`` runs that its heartbeat's ``reported`` task ids (complete for claims made
        before ``snapshot_at``) do not include."""
        raise NotImplementedError

    def agent_throughput(self, since: float, width: float, buckets: int) -> dict[str, list[int]]:
        """Tasks finished per agent in ``buckets`` windows of ``width`` seconds from ``since``."""
        raise NotImplementedError

    # -- metrics (jobmanager/metrics.py): reads whose cost does not grow with the history ----------
    def last_event_id(self) -> int:
        """The largest event id (0 without events): where a tail of the events starts "now"."""
        raise NotImplementedError

    def events_after(self, after_id: int, limit: int) -> list[dict[str, Any]]:
        """At most ``limit`` events with ``id > after_id``, in id order (the primary key; no scan).

        Each carries ``id``, ``at``, ``kind``, ``from_state``, ``to_state``, ``agent``, ``task_id``, and
        its job's ``type`` and ``queue`` and its task's ``started_at`` (None where there is none).
        """
        raise NotImplementedError

    def metrics_gauges(self) -> dict[str, list[dict[str, Any]]]:
        """One snapshot of the work in progress, read through indexes (rows in runnable or running states):

        ``depth``: per ``queue`` and ``type`` the runnable tasks of queued or running jobs (``n``) and
        when the longest-waiting one became ready (``oldest``: queued, or its failed attempt ended);
        ``running``: running tasks per ``agent`` (``n``); ``agents``: every agent's ``name``, ``state``,
        ``heartbeat_at`` and ``interval``.
        """
        raise NotImplementedError

    def request_agent(self, name: str, command: str | None, actor: str) -> None:
        raise NotImplementedError

    def list_agents(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    # -- artifacts --------------------------------------------------------------------------
    def add_artifact(
        self, job_id: int, task_id: int | None, name: str, path: str, media_type: str, size: int
    ) -> None:
        raise NotImplementedError

    def artifacts(self, job_id: int) -> list[dict[str, Any]]:
        raise NotImplementedError
