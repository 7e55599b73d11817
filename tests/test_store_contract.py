"""The JobStore contract, run against every backend (SQLite today).

These tests drive the store directly, as agents and the service do, so each
state transition and each race is checked without a queue in the way.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobmanager.errors import HomeError, InvalidState, NotFound
from jobmanager.models import LATER, Claim, Dispatch, Finish, JobOptions, NewJob, NewTask
from jobmanager.store import JobStore
from jobmanager.store.base import SCHEMA_VERSION
from jobmanager.store.sql import _CLAIM_READ
from jobmanager.store.sqlite import SQLiteStore


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> JobStore:
    if request.param == "postgres":  # skipped unless JOBMANAGER_TEST_PG_URL is set; a fresh schema each
        from jobmanager.store.postgres import PostgresStore

        from .backends import new_pg_schema

        pg_store = PostgresStore(new_pg_schema(request), create=True)
        request.addfinalizer(pg_store.close)
        return pg_store
    return SQLiteStore(tmp_path / "store.db", create=True)


def make_job(store: JobStore, n: int = 2, *, retries: int = 0, has_finish: bool = False, priority: int = 0):
    job_id, dispatches = store.create_job(
        type="sleep", name="j", params={"tasks": n}, owner="ana", case="C1", priority=priority,
        retries=retries, has_finish=has_finish, tasks=[NewTask(f"t{i}", {"n": i}) for i in range(n)],
        actor="ana",
    )
    return job_id, dispatches


def agent_info(name: str, interval: float = 1.0, pid: int = 4242) -> dict:
    return {"name": name, "host": "h", "pid": pid, "workers": 2, "worker_type": "thread", "version": "t",
            "interval": interval}


def run_all(store: JobStore, dispatches, agent: str = "a1", state: str = "succeeded"):
    outcomes = []
    for d in dispatches:
        assert store.claim_task(d.task_id, d.dispatch, agent) is not None
        outcomes.append(store.finish_task(d.task_id, agent, state, error=None if state == "succeeded" else "boom"))
    return outcomes


def new_job(n: int, name: str = "j", params: dict[str, Any] | None = None) -> NewJob:
    return NewJob(type="sleep", name=name, params={"tasks": n} if params is None else params, owner="ana",
                  case=None, priority=0, retries=0, has_finish=False,
                  tasks=[NewTask(f"t{i}", {"n": i}) for i in range(n)], actor="ana")


def test_create_jobs_stores_all_in_order_with_their_messages(store: JobStore) -> None:
    created = store.create_jobs([new_job(2, "a"), new_job(1, "b"), new_job(3, "c")])
    assert [len(d) for _, d in created] == [2, 1, 3]
    ids = [job_id for job_id, _ in created]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert [store.get_job(j).name for j in ids] == ["a", "b", "c"]
    for job_id, dispatches in created:  # each job's messages name its own tasks, in order
        assert [d.task_id for d in dispatches] == [t.id for t in store.get_tasks(job_id)]
    run_all(store, [d for _, ds in created for d in ds])
    assert {store.get_job(j).state for j in ids} == {"completed"}


def test_create_jobs_is_all_or_none(store: JobStore) -> None:
    """A job the store cannot write (here: parameters that are not JSON) undoes the jobs before it."""
    before = store.list_jobs(limit=100)
    with pytest.raises(TypeError):
        store.create_jobs([new_job(2, "a"), new_job(1, "b", params={"x": object()})])
    assert store.list_jobs(limit=100) == before
    (job_id, _), = store.create_jobs([new_job(1, "c")])  # the store is still usable
    assert store.get_job(job_id).name == "c"


# -- schema ---------------------------------------------------------------------------------------
def test_schema_version_recorded(store: JobStore) -> None:
    assert store.schema_version() == SCHEMA_VERSION


def test_foreign_database_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE people (name TEXT)").connection.commit()
    with pytest.raises(HomeError, match="not a Job Manager store"):
        SQLiteStore(path)


def test_garbage_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(HomeError, match="not a Job Manager store"):
        SQLiteStore(path)


def test_newer_schema_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    SQLiteStore(path, create=True).close()
    with sqlite3.connect(path) as c:
        c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(HomeError, match="newer"):
        SQLiteStore(path)


@pytest.mark.sqlite_only
def test_wal_mode(store: SQLiteStore) -> None:
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- submit and run ---------------------------------------------------------------------------------
def test_create_job_is_queued_with_tasks(store: JobStore) -> None:
    job_id, dispatches = make_job(store, 3, priority=5)
    job = store.get_job(job_id, with_tasks=True)
    assert job.state == "queued" and job.tasks_total == 3 and job.priority == 5
    assert [t.state for t in job.tasks] == ["queued"] * 3
    assert [d.priority for d in dispatches] == [5, 5, 5]
    assert [e["to_state"] for e in store.events(job_id)] == ["queued"]


def test_claim_wins_once_and_moves_job_to_running(store: JobStore) -> None:
    job_id, (d, _) = make_job(store)
    claim = store.claim_task(d.task_id, d.dispatch, "a1")
    assert claim is not None and claim.task.state == "running" and claim.task.attempts == 1
    assert claim.job.state == "running"
    assert store.claim_task(d.task_id, d.dispatch, "a2") is None  # same message twice: dropped
    assert store.get_job(job_id).started_at is not None


def test_stale_dispatch_is_dropped(store: JobStore) -> None:
    job_id, (d, _) = make_job(store)
    assert store.claim_task(d.task_id, d.dispatch + 7, "a1") is None
    assert store.get_job(job_id, with_tasks=True).tasks[0].state == "queued"


@pytest.mark.parametrize("hint", [False, True], ids=["plain", "job-hint"])
def test_a_stale_message_is_dropped_without_waiting_for_the_write_lock(store: JobStore, hint: bool) -> None:
    """The write lock is the store's bottleneck: a stale message (a duplicate, an old dispatch, a done task)
    is dropped by a plain read, never queued behind the writers. Another connection holds the lock
    (SQLite: the database's write lock; PostgreSQL: the task's and the job's rows) while stale messages
    arrive; each is dropped at once, and the task stays as it was."""
    job_id, (d, _) = make_job(store)
    assert store.claim_task(d.task_id, d.dispatch, "a1") is not None
    other: Any
    if isinstance(store, SQLiteStore):
        other = sqlite3.connect(store.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
    else:
        import psycopg

        other = psycopg.connect(store.url)
        other.execute("SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
        other.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (d.task_id,))
    try:
        started = time.monotonic()
        job = job_id if hint else None
        assert store.claim_task(d.task_id, d.dispatch, "a2", job_id=job) is None  # the same message again
        assert store.claim_task(d.task_id, d.dispatch + 3, "a2", job_id=job) is None  # a dispatch that never was
        assert time.monotonic() - started < 5  # the busy timeout / lock wait would be 30 s
    finally:
        other.rollback()
        other.close()
    task = store.get_tasks(job_id)[0]
    assert (task.state, task.agent, task.attempts) == ("running", "a1", 1)


def between_read_and_write(store: JobStore, monkeypatch: pytest.MonkeyPatch, what: Callable[[], None]) -> None:
    """Run ``what`` once, right after a claim's first read of its task (before its lock and write): the
    window in which another agent, a cancel or a pause can get in first."""
    read = store._fetchone  # type: ignore[attr-defined]
    pending = [what]

    def after_read(sql: str, params: Any = ()) -> Any:
        row = read(sql, params)
        if sql == _CLAIM_READ and pending:
            pending.pop()()
        return row

    monkeypatch.setattr(store, "_fetchone", after_read)


def test_a_task_claimed_between_the_claims_read_and_its_lock_stays_with_the_first_claimer(
        store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim reads the task without the lock, then takes the lock and updates the task only if its state
    and dispatch are still what it read (SQLite reads nothing again under its lock). Another agent that
    claimed the task in between, from a duplicate message, keeps it; this claim gets nothing, and the task
    has one attempt and one start event."""
    job_id, (d, _) = make_job(store)

    def in_between() -> None:
        assert store.claim_task(d.task_id, d.dispatch, "a2") is not None

    between_read_and_write(store, monkeypatch, in_between)
    assert store.claim_task(d.task_id, d.dispatch, "a1") is None
    task = store.get_tasks(job_id)[0]
    assert (task.state, task.agent, task.attempts) == ("running", "a2", 1)
    starts = [e for e in store.events(job_id) if e["kind"] == "task" and e["to_state"] == "running"]
    assert [(e["agent"], e["message"]) for e in starts] == [("a2", "attempt 1")]


def test_every_claim_path_marks_the_claiming_process_in_log_slices(store: JobStore) -> None:
    """A claim appends ``@<run>`` (the agent process whose thread files will hold the attempt's log) on every
    path: one claim (PostgreSQL's one statement, the general path), a batch of one job's tasks (SQLite's
    one UPDATE), a batch across jobs; anything but 12 hex digits is refused before the store is touched."""
    job_id, ds = make_job(store, 4, retries=1)
    other, (o,) = make_job(store, 1)
    claim = store.claim_task(ds[0].task_id, ds[0].dispatch, "a1", job_id=job_id, log_run="a" * 12)
    assert claim is not None and claim.task.log_slices == "@" + "a" * 12
    store.finish_task(ds[0].task_id, "a1", "failed", error="x", log_part="p1")  # retrying, dispatch 1
    assert store.claim_task(ds[0].task_id, 1, "a2", log_run="b" * 12) is not None  # no hint: the general path
    assert store.get_tasks(job_id)[0].log_slices == f"@{'a' * 12} p1 @{'b' * 12}"
    got = store.claim_tasks([ds[1], ds[2], o, Dispatch(ds[3].task_id, ds[3].dispatch, 0, "default", job_id)],
                            "a3", log_run="c" * 12)
    assert all(g is not None and g is not LATER for g in got), got
    assert [t.log_slices for t in store.get_tasks(job_id)[1:]] == ["@" + "c" * 12] * 3
    assert store.get_tasks(other)[0].log_slices == "@" + "c" * 12
    for bad in ("../x", "A" * 12, "a" * 13, ""):
        with pytest.raises(ValueError):
            store.claim_task(ds[1].task_id, ds[1].dispatch, "a4", log_run=bad)


def test_a_queued_jobs_first_claim_writes_the_task_event_then_the_jobs(store: JobStore) -> None:
    """The first claim moves the job to running (PostgreSQL: in the same one statement as the task)."""
    job_id, (d, d2) = make_job(store)
    before = time.time()
    claim = store.claim_task(d.task_id, d.dispatch, "a1")
    assert claim is not None and claim.job == store.get_job(job_id)
    assert (claim.job.state, claim.task.log_slices) == ("running", None)
    assert claim.job.started_at is not None and claim.job.started_at >= before - 1
    events = [(e["kind"], e["task_id"], e["from_state"], e["to_state"], e["agent"]) for e in store.events(job_id)]
    assert events == [("job", None, None, "queued", None), ("task", d.task_id, "queued", "running", "a1"),
                      ("job", None, "queued", "running", "a1")]
    started = claim.job.started_at
    assert store.claim_task(d2.task_id, d2.dispatch, "a2") is not None  # the job is running: no second job event
    assert [e["to_state"] for e in store.events(job_id) if e["kind"] == "job"] == ["queued", "running"]
    assert store.get_job(job_id).started_at == started


@pytest.mark.parametrize("between", ["another task claimed", "cancelled", "paused"])
def test_a_queued_jobs_claim_after_the_job_changed_between_its_read_and_its_write(
        store: JobStore, between: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first claim whose job was started by another claim in between still claims its task (the job moves
    to running once); one whose job was cancelled or paused in between claims nothing."""
    job_id, (d, d2) = make_job(store)

    def in_between() -> None:
        if between == "another task claimed":
            assert store.claim_task(d2.task_id, d2.dispatch, "a2") is not None
        elif between == "cancelled":
            store.cancel_job(job_id, "ana")
        else:
            store.pause_job(job_id, "ana")

    between_read_and_write(store, monkeypatch, in_between)
    claim = store.claim_task(d.task_id, d.dispatch, "a1")
    job = store.get_job(job_id)
    runs = [e["agent"] for e in store.events(job_id) if e["kind"] == "job" and e["to_state"] == "running"]
    if between == "another task claimed":
        assert claim is not None and claim.job.state == job.state == "running" and runs == ["a2"]
    else:
        assert claim is None and runs == [] and job.state == {"cancelled": "cancelled", "paused": "paused"}[between]
        assert store.get_tasks(job_id)[0].attempts == 0


def test_a_claim_with_the_messages_job_hint(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A message names its task's job: the claim writes what every claim writes (the event's from-state is the
    task's own: queued, then retrying). On PostgreSQL it reads nothing first."""
    job_id, (d, d2) = make_job(store, retries=1)
    if not isinstance(store, SQLiteStore):
        monkeypatch.setattr(store, "_fetchone", lambda *a: pytest.fail("a hinted claim read the task first"))
    claim = store.claim_task(d.task_id, d.dispatch, "a1", job_id=job_id)
    assert claim is not None and claim.job.state == "running" and claim.task.id == d.task_id
    store.finish_task(d.task_id, "a1", "failed", error="boom")
    again = store.claim_task(d.task_id, d.dispatch + 1, "a1", job_id=job_id)
    assert again is not None and again.task.attempts == 2
    monkeypatch.undo()
    starts = [(e["from_state"], e["message"]) for e in store.events(job_id)
              if e["kind"] == "task" and e["to_state"] == "running"]
    assert starts == [("queued", "attempt 1"), ("retrying", "attempt 2")]
    assert [e["to_state"] for e in store.events(job_id) if e["kind"] == "job"] == ["queued", "running"]


def test_a_claim_the_database_aborts_to_break_a_deadlock_is_run_again(store: JobStore,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL aborts one transaction of a deadlock (one was seen between a claim of a job a limit counts
    and the recovery of several lost agents at once, in a review's stress run): the claim's general path runs
    again, as every other transition does, instead of dropping its message."""
    if not store.retryable:
        pytest.skip("SQLite has one writer at a time: no deadlocks")
    store.limits.save("two", type="sleep", queue=None, per_case=False, max_running=2, actor="ana")  # general path
    job_id, (d, _) = make_job(store)
    real, aborted = store.limits.lock, []

    def deadlocked_once(*args: Any) -> Any:
        if not aborted:
            aborted.append(1)
            raise store.retryable[0]("deadlock detected")
        return real(*args)

    monkeypatch.setattr(store.limits, "lock", deadlocked_once)
    claim = store.claim_task(d.task_id, d.dispatch, "a1", job_id=job_id)
    assert aborted and claim is not None and claim.task.attempts == 1 and claim.job.state == "running"
    assert [e["to_state"] for e in store.events(job_id) if e["kind"] == "task"].count("running") == 1


@pytest.mark.parametrize("action", ["pause", "cancel", "finish_task"])
def test_a_transition_the_database_aborts_to_break_a_deadlock_is_run_again(
        store: JobStore, monkeypatch: pytest.MonkeyPatch, action: str) -> None:
    """A user's pause or cancel and an agent's single outcome, aborted once by PostgreSQL to break a deadlock
    (the review's stress run saw this for single outcomes), run again: no error reaches the user or the agent."""
    if not store.retryable:
        pytest.skip("SQLite has one writer at a time: no deadlocks")
    job_id, (d, _) = make_job(store)
    assert store.claim_task(d.task_id, d.dispatch, "a1") is not None
    real, aborted = store._job_row, []

    def deadlocked_once(*args: Any, **kwargs: Any) -> Any:
        if not aborted:
            aborted.append(1)
            raise store.retryable[0]("deadlock detected")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "_job_row", deadlocked_once)
    if action == "pause":
        store.pause_job(job_id, "ana")
    elif action == "cancel":
        store.cancel_job(job_id, "ana")
    else:
        assert store.finish_task(d.task_id, "a1", "succeeded").recorded
    monkeypatch.undo()
    expected = {"pause": "paused", "cancel": "cancelled", "finish_task": "running"}[action]
    assert aborted and store.get_job(job_id).state == expected
    if action == "finish_task":
        assert store.get_job(job_id).tasks_succeeded == 1


def test_a_wrong_job_hint_claims_the_task_of_its_own_job(store: JobStore) -> None:
    """The hint is checked: a message naming another job (or none that exists) claims nothing through it, and
    the claim then reads the task as without a hint; the other job is untouched."""
    job_id, (d, _) = make_job(store)
    other, _ = make_job(store)
    for n, wrong in enumerate((other, 10**12)):
        claim = store.claim_task(d.task_id, d.dispatch, "a1", job_id=wrong)
        if n == 0:
            assert claim is not None and claim.job.id == job_id and claim.task.id == d.task_id
        else:
            assert claim is None  # claimed already: a stale message
    assert store.get_job(other).state == "queued" and store.get_job(job_id).state == "running"


def running_job(store: JobStore, n: int = 3, **kwargs: Any):
    """A job whose first task is claimed (the job is running): its other tasks' claims are the common case,
    which PostgreSQL makes in one statement."""
    job_id, dispatches = make_job(store, n, **kwargs)
    assert store.claim_task(dispatches[0].task_id, dispatches[0].dispatch, "a0") is not None
    assert store.get_job(job_id).state == "running"
    return job_id, dispatches[1:]


def test_a_claim_in_a_running_job_writes_what_every_claim_writes(store: JobStore) -> None:
    job_id, (d, d2) = running_job(store, retries=1)
    claim = store.claim_task(d.task_id, d.dispatch, "a1")
    assert claim is not None
    task = store.get_tasks(job_id)[1]
    assert claim.task == task
    assert (task.state, task.agent, task.attempts, task.error) == ("running", "a1", 1, None)
    assert task.started_at is not None and task.finished_at is None
    job = claim.job
    assert (job.id, job.state, job.params, job.owner) == (job_id, "running", {"tasks": 3}, "ana")
    store.finish_task(d.task_id, "a1", "failed", error="boom")  # one retry left: retrying, dispatch + 1
    again = store.claim_task(d.task_id, d.dispatch + 1, "a1")
    assert again is not None and again.task.attempts == 2
    starts = [(e["from_state"], e["to_state"], e["agent"], e["message"]) for e in store.events(job_id)
              if e["kind"] == "task" and e["task_id"] == d.task_id and e["to_state"] == "running"]
    assert starts == [("queued", "running", "a1", "attempt 1"), ("retrying", "running", "a1", "attempt 2")]


@pytest.mark.parametrize("between", ["claimed elsewhere", "cancelled", "paused"])
def test_a_running_jobs_task_changed_between_the_claims_read_and_its_write_is_not_claimed(
        store: JobStore, between: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race of the test above, in a running job (PostgreSQL's one-statement claim): what happened in
    between wins, and the task has at most the one start event of whoever did claim it."""
    job_id, (d, _) = running_job(store)

    def in_between() -> None:
        if between == "claimed elsewhere":
            assert store.claim_task(d.task_id, d.dispatch, "a2") is not None
        elif between == "cancelled":
            store.cancel_job(job_id, "ana")
        else:
            store.pause_job(job_id, "ana")

    between_read_and_write(store, monkeypatch, in_between)
    assert store.claim_task(d.task_id, d.dispatch, "a1") is None
    task = store.get_tasks(job_id)[1]
    expected = {"claimed elsewhere": ("running", "a2", 1), "cancelled": ("cancelled", None, 0),
                "paused": ("queued", None, 0)}[between]
    assert (task.state, task.agent, task.attempts) == expected
    starts = [e["agent"] for e in store.events(job_id) if e["kind"] == "task" and e["task_id"] == d.task_id
              and e["to_state"] == "running"]
    assert starts == (["a2"] if between == "claimed elsewhere" else [])


def test_a_running_jobs_task_a_full_limit_counts_waits_for_a_slot(store: JobStore) -> None:
    job_id, (d, _) = running_job(store)
    store.limits.save("one", type="sleep", queue=None, per_case=False, max_running=1, actor="ana")
    assert store.claim_task(d.task_id, d.dispatch, "a1") is None  # a0's task fills the limit
    task = store.get_tasks(job_id)[1]
    assert (task.state, task.attempts) == ("queued", 0) and "(limit one)" in (task.waiting or "")


def test_a_claim_that_finds_its_limit_full_leaves_the_task_another_agent_took_in_between_alone(
        store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same race with a concurrency limit of 1: when the lock is taken, the other agent's claim fills the
    limit, so this claim would mark the task as waiting for a slot; the task is running, and stays unmarked
    (a running task marked waiting would be taken for a waiting one once handed back)."""
    store.limits.save("one", type="sleep", queue=None, per_case=False, max_running=1, actor="ana")
    job_id, (d, _) = make_job(store)

    def in_between() -> None:
        assert store.claim_task(d.task_id, d.dispatch, "a2") is not None

    between_read_and_write(store, monkeypatch, in_between)
    assert store.claim_task(d.task_id, d.dispatch, "a1") is None
    monkeypatch.undo()
    row = store._fetchone("SELECT state, agent, attempts, waiting FROM tasks WHERE id = ?", (d.task_id,))
    assert (row["state"], row["agent"], row["attempts"], row["waiting"]) == ("running", "a2", 1, None)


# -- batched claims (an agent's prefetched batch, engine/prefetch.py) --------------------------------------------
def test_a_batch_claims_what_each_claim_would_in_one_go(store: JobStore) -> None:
    """Tasks of two jobs and a stale message in one batch: each task is claimed as claim_task would claim it
    (an attempt, a start event, the job moved to running once), the stale one is not, and the answers are in
    the batch's order."""
    job_a, da = make_job(store, 3)
    job_b, db = make_job(store, 2)
    stale = Dispatch(da[2].task_id, da[2].dispatch + 1, job_id=job_a)
    wanted = [db[1], da[0], stale, da[1], db[0]]
    got = store.claim_tasks(wanted, "a1")
    assert [None if g is None else g.task.id for g in got] == [  # type: ignore[union-attr]
        db[1].task_id, da[0].task_id, None, da[1].task_id, db[0].task_id]
    for g in got:
        if isinstance(g, Claim):
            assert (g.task.state, g.task.agent, g.task.attempts, g.job.state) == ("running", "a1", 1, "running")
    for job_id, n in ((job_a, 2), (job_b, 2)):
        events = store.events(job_id)
        assert [e["agent"] for e in events if e["kind"] == "task" and e["to_state"] == "running"] == ["a1"] * n
        assert [e["to_state"] for e in events if e["kind"] == "job"] == ["queued", "running"]
    assert store.get_tasks(job_a)[2].state == "queued"
    assert store.claim_tasks(wanted, "a2") == [None] * 5  # all taken (or stale): nothing claimed twice


def test_a_batch_leaves_tasks_a_crash_would_harm_for_when_they_start(store: JobStore) -> None:
    """Beyond the first (its worker starts it at once), a batch does not claim a task of a job not safe to
    re-run, nor one that lost an agent before: a killed agent's unstarted claims count losses."""
    unsafe, du = store.create_job(type="sleep", name="u", params={}, owner="ana", case=None, priority=0,
                                  retries=0, has_finish=False, tasks=[NewTask(f"t{i}", {}) for i in range(3)],
                                  actor="ana", options=JobOptions(rerun_safe=False))
    got = store.claim_tasks(du, "a1")
    assert isinstance(got[0], Claim) and got[1:] == [LATER, LATER]
    assert [t.state for t in store.get_tasks(unsafe)] == ["running", "queued", "queued"]
    job_id, (d0, d1, d2) = make_job(store, 3)
    store.register_agent(agent_info("gone", interval=0.1))
    assert store.claim_task(d1.task_id, d1.dispatch, "gone") is not None
    assert store.recover_lost("a1", now=time.time() + 1).lost == ["gone"]
    lost = store.get_tasks(job_id)[1]
    assert (lost.state, lost.losses) == ("queued", 1)
    got = store.claim_tasks([d0, Dispatch(d1.task_id, lost.dispatch), d2], "a1")
    assert isinstance(got[0], Claim) and got[1] is LATER and isinstance(got[2], Claim)
    # a batch whose worker starts no run now (its first message was a finishing step): the first is left too
    _, (u0, u1) = store.create_job(type="sleep", name="u2", params={}, owner="ana", case=None, priority=0, retries=0,
                                   has_finish=False, tasks=[NewTask(f"t{i}", {}) for i in range(2)], actor="ana",
                                   options=JobOptions(rerun_safe=False))
    assert store.claim_tasks([u0], "a1", first_starts=False) == [LATER]
    assert store.claim_tasks([u0, u1], "a1", first_starts=False) == [LATER, LATER]


def test_a_batch_of_a_job_a_full_limit_counts_claims_up_to_the_limit(store: JobStore) -> None:
    store.limits.save("two", type="sleep", queue=None, per_case=False, max_running=2, actor="ana")
    job_id, dispatches = make_job(store, 4)
    got = store.claim_tasks(dispatches, "a1")
    assert [isinstance(g, Claim) for g in got] == [True, True, False, False]
    tasks = store.get_tasks(job_id)
    assert [t.state for t in tasks] == ["running", "running", "queued", "queued"]
    assert all("(limit two)" in (t.waiting or "") for t in tasks[2:])


def test_released_tasks_go_back_as_if_never_claimed(store: JobStore) -> None:
    """A batch's claimed tasks given back unstarted: queued with the same dispatch (the message the agent holds
    stays valid), no attempt spent, no loss; a task no longer the agent's is left alone."""
    job_id, dispatches = make_job(store, 3)
    got = store.claim_tasks(dispatches, "a1")
    assert all(isinstance(g, Claim) for g in got)
    assert store.unstarted_change(dispatches[1].task_id, "a1", dispatches[1].dispatch) is None
    assert store.unstarted_change(dispatches[1].task_id, "a2", dispatches[1].dispatch) == "gone"
    back = store.release_tasks("a1", [(d.task_id, d.dispatch) for d in dispatches[1:]], "not started")
    assert sorted((d.task_id, d.dispatch) for d in back.dispatches) == sorted(
        (d.task_id, d.dispatch) for d in dispatches[1:])
    tasks = store.get_tasks(job_id)
    assert [(t.state, t.attempts, t.losses, t.dispatch) for t in tasks] == [
        ("running", 1, 0, 0), ("queued", 0, 0, 0), ("queued", 0, 0, 0)]
    assert store.claim_task(dispatches[1].task_id, dispatches[1].dispatch, "a2") is not None  # the held message
    assert store.release_tasks("a1", [(dispatches[1].task_id, 0)], "not mine").dispatches == []
    assert store.get_tasks(job_id)[1].agent == "a2"
    # an old claim given back late: the task was taken back meanwhile and this agent claimed it again (a new
    # dispatch); the old claim's give-back leaves the new one alone
    store.register_agent(agent_info("a1", interval=0.1))
    assert store.recover_lost("a3", now=time.time() + 1).lost == ["a1"]
    task = store.get_tasks(job_id)[0]
    assert task.state == "queued" and task.dispatch == 1
    store.register_agent(agent_info("a1", interval=0.1, pid=4343))
    assert store.claim_task(task.id, 1, "a1") is not None
    assert store.release_tasks("a1", [(task.id, 0)], "late").dispatches == []
    assert (store.get_tasks(job_id)[0].state, store.get_tasks(job_id)[0].attempts) == ("running", 1)



@pytest.mark.parametrize("action", ["pause", "cancel"])
def test_a_claimed_task_of_a_job_paused_or_cancelled_since_goes_back_unspent(store: JobStore, action: str) -> None:
    """What the agent reads before starting a claimed task, and what giving it back then does: a paused job's
    task is queued without a message (the resume sends one), a cancelled job's ends cancelled, no attempt."""
    job_id, dispatches = make_job(store, 2)
    store.claim_tasks(dispatches, "a1")
    (store.pause_job if action == "pause" else store.cancel_job)(job_id, "ana")
    d = dispatches[1]
    assert store.unstarted_change(d.task_id, "a1", d.dispatch) == {"pause": "paused", "cancel": "cancel"}[action]
    assert store.release_tasks("a1", [(d.task_id, d.dispatch)], "not started").dispatches == []
    task = store.get_tasks(job_id)[1]
    assert (task.state, task.attempts) == ({"pause": "queued", "cancel": "cancelled"}[action], 0)


def test_the_start_of_a_task_claimed_ahead_is_written_with_its_outcome(store: JobStore) -> None:
    """A task claimed with a batch may start after its claim: the completer writes when it began."""
    job_id, (d0, d1) = make_job(store, 2)
    store.claim_tasks([d0, d1], "a1")
    claimed_at = store.get_tasks(job_id)[1].started_at
    began = claimed_at + 0.04
    store.finish_tasks("a1", [Finish(d0.task_id, "succeeded", at=began), Finish(d1.task_id, "failed", error="x",
                                                                                at=began + 1, started_at=began)])
    first, second = store.get_tasks(job_id)
    assert first.started_at == claimed_at and second.started_at == pytest.approx(began)


def test_success_completes_job_and_records_events(store: JobStore) -> None:
    job_id, dispatches = make_job(store, 2)
    outcomes = run_all(store, dispatches)
    assert outcomes[-1].job_state == "completed" and outcomes[0].job_state is None
    job = store.get_job(job_id)
    assert (job.state, job.tasks_succeeded, job.progress, job.finished_at is not None) == ("completed", 2, 1.0, True)
    kinds = [(e["kind"], e["from_state"], e["to_state"]) for e in store.events(job_id)]
    assert ("task", "queued", "running") in kinds and ("task", "running", "succeeded") in kinds
    assert kinds[-1] == ("job", "running", "completed")


def test_all_failed_is_failed_some_failed_is_completed_with_errors(store: JobStore) -> None:
    job_a, da = make_job(store, 2)
    run_all(store, da, state="failed")
    assert store.get_job(job_a).state == "failed"
    job_b, db = make_job(store, 2)
    store.claim_task(db[0].task_id, 0, "a1")
    store.finish_task(db[0].task_id, "a1", "failed", error="bad input")
    store.claim_task(db[1].task_id, 0, "a1")
    store.finish_task(db[1].task_id, "a1", "succeeded")
    job = store.get_job(job_b)
    assert job.state == "completed_with_errors"
    assert "1 of 2 tasks failed" in job.error and "bad input" in job.error


def test_failure_with_retries_left_becomes_retrying(store: JobStore) -> None:
    job_id, (d,) = make_job(store, 1, retries=1)
    store.claim_task(d.task_id, 0, "a1")
    outcome = store.finish_task(d.task_id, "a1", "failed", error="flaky")
    assert outcome.retry is not None and outcome.retry.dispatch == 1
    assert store.get_tasks(job_id)[0].state == "retrying"
    assert store.claim_task(d.task_id, 0, "a1") is None  # the old message is stale
    store.claim_task(d.task_id, 1, "a1")
    assert store.finish_task(d.task_id, "a1", "failed", error="flaky").retry is None
    assert store.get_job(job_id).state == "failed"
    assert store.get_tasks(job_id)[0].attempts == 2


def test_finish_by_wrong_agent_is_not_recorded(store: JobStore) -> None:
    job_id, (d,) = make_job(store, 1)
    store.claim_task(d.task_id, 0, "a1")
    assert store.finish_task(d.task_id, "a2", "succeeded", log_part="a2's").recorded is False
    assert store.get_tasks(job_id)[0].state == "running"
    assert store.finish_task(d.task_id, "a1", "succeeded", log_part="a1's").recorded is not False
    assert store.get_tasks(job_id)[0].log_slices == "a2's a1's"  # each attempt's log part, recorded or not


def test_progress_is_recorded_and_reports_cancel(store: JobStore) -> None:
    job_id, (d, _) = make_job(store, 2)
    store.claim_task(d.task_id, 0, "a1")
    assert store.report_progress(d.task_id, "a1", 5, 10) is False
    assert store.get_job(job_id).progress == pytest.approx(0.25)
    store.cancel_job(job_id, "ana")
    assert store.report_progress(d.task_id, "a1", 6, 10) is True
    assert store.cancel_requested(d.task_id) is True


def test_warning_is_set_by_the_running_tasks_agent_only_and_a_new_attempt_starts_clean(store: JobStore) -> None:
    job_id, (d,) = make_job(store, 1, retries=1)
    store.warn_task(d.task_id, "a1", "too early")  # queued: nothing to warn about yet
    assert store.get_tasks(job_id)[0].warning is None
    store.claim_task(d.task_id, 0, "a1")
    store.warn_task(d.task_id, "a2", "not my task")  # another agent's word is not recorded
    assert store.get_tasks(job_id)[0].warning is None
    store.warn_task(d.task_id, "a1", "a.txt: 3 character(s) no installed font can draw")
    store.warn_task(d.task_id, "a1", "a.txt: 3 character(s); b.png refused")  # the latest replaces it
    assert store.get_tasks(job_id)[0].warning == "a.txt: 3 character(s); b.png refused"
    outcome = store.finish_task(d.task_id, "a1", "failed", error="boom")  # retrying: a new attempt
    store.warn_task(d.task_id, "a1", "after the attempt ended")
    assert store.get_tasks(job_id)[0].warning == "a.txt: 3 character(s); b.png refused"
    assert outcome.retry is not None
    assert store.claim_task(d.task_id, outcome.retry.dispatch, "a1") is not None
    assert store.get_tasks(job_id)[0].warning is None  # the failed attempt's warning does not stick
    store.warn_task(d.task_id, "a1", "kept")
    store.finish_task(d.task_id, "a1", "succeeded")
    task = store.get_tasks(job_id)[0]
    assert (task.state, task.warning) == ("succeeded", "kept")
    store.warn_task(d.task_id, "a1", None)  # a finished task's warning is not changed
    assert store.get_tasks(job_id)[0].warning == "kept"


# -- finishing step ------------------------------------------------------------------------------
def test_finishing_step_handed_to_exactly_one_agent(store: JobStore) -> None:
    job_id, dispatches = make_job(store, 2, has_finish=True)
    outcomes = run_all(store, dispatches)
    assert [o.finalize for o in outcomes] == [False, True]
    assert store.get_job(job_id).state == "running"  # not final until the step ran
    assert store.begin_finalize(job_id, "a2") is None  # already held by a1
    assert store.end_finalize(job_id, "a2", None) is None
    assert store.end_finalize(job_id, "a1", None) == "completed"
    assert store.get_job(job_id).finisher is None


def test_failing_finishing_step_fails_job_and_retry_resends_it(store: JobStore) -> None:
    job_id, dispatches = make_job(store, 1, has_finish=True)
    run_all(store, dispatches)
    assert store.end_finalize(job_id, "a1", "merge broke") == "failed"
    assert "finishing step failed: merge broke" in store.get_job(job_id).error
    dispatches, refinish = store.retry_job(job_id, "ana")
    assert dispatches == [] and refinish is True
    assert store.begin_finalize(job_id, "a1") is not None


def test_job_with_all_tasks_failed_skips_finishing_step(store: JobStore) -> None:
    job_id, dispatches = make_job(store, 2, has_finish=True)
    outcomes = run_all(store, dispatches, state="failed")
    assert not any(o.finalize for o in outcomes)
    assert store.get_job(job_id).state == "failed"


# -- user actions --------------------------------------------------------------------------------
def test_pause_blocks_claims_and_resume_resends(store: JobStore) -> None:
    job_id, dispatches = make_job(store, 2)
    store.pause_job(job_id, "ana")
    assert store.get_job(job_id).state == "paused"
    assert store.claim_task(dispatches[0].task_id, 0, "a1") is None
    resent = store.resume_job(job_id, "ana")
    assert [d.dispatch for d in resent] == [1, 1]
    assert store.get_job(job_id).state == "queued"
    assert store.claim_task(dispatches[0].task_id, 0, "a1") is None  # pre-pause message is stale
    assert store.claim_task(resent[0].task_id, 1, "a1") is not None


def test_paused_running_job_resumes_as_running(store: JobStore) -> None:
    job_id, dispatches = make_job(store, 2)
    store.claim_task(dispatches[0].task_id, 0, "a1")
    store.pause_job(job_id, "ana")
    store.finish_task(dispatches[0].task_id, "a1", "succeeded")  # running tasks finish while paused
    assert store.get_job(job_id).state == "paused"
    store.resume_job(job_id, "ana")
    assert store.get_job(job_id).state == "running"


@pytest.mark.parametrize("state_maker,action,message", [
    ("completed", "pause", "only a queued or running job can be paused"),
    ("queued", "resume", "only a paused job can be resumed"),
    ("completed", "cancel", "only a job in progress can be cancelled"),
    ("queued", "retry", "retry applies to a finished job"),
    ("completed", "retry", "has no failed tasks"),
    ("completed", "priority", "priority applies to jobs in progress"),
])
def test_actions_that_do_not_fit_the_state_are_refused(store: JobStore, state_maker, action, message) -> None:
    job_id, dispatches = make_job(store, 1)
    if state_maker == "completed":
        run_all(store, dispatches)
    before = store.get_job(job_id, with_tasks=True)
    call = {"pause": lambda: store.pause_job(job_id, "ana"), "resume": lambda: store.resume_job(job_id, "ana"),
            "cancel": lambda: store.cancel_job(job_id, "ana"), "retry": lambda: store.retry_job(job_id, "ana"),
            "priority": lambda: store.set_priority(job_id, 3, "ana")}[action]
    with pytest.raises(InvalidState, match=message):
        call()
    assert store.get_job(job_id, with_tasks=True) == before  # nothing changed


def test_unknown_job_is_not_found(store: JobStore) -> None:
    with pytest.raises(NotFound, match="no job 999"):
        store.get_job(999)
    with pytest.raises(NotFound):
        store.pause_job(999, "ana")


def test_cancel_stops_queued_and_flags_running(store: JobStore) -> None:
    job_id, dispatches = make_job(store, 3)
    store.claim_task(dispatches[0].task_id, 0, "a1")
    store.cancel_job(job_id, "ana")
    job = store.get_job(job_id, with_tasks=True)
    assert job.state == "cancelled"
    assert [t.state for t in job.tasks] == ["running", "cancelled", "cancelled"]
    assert job.tasks[0].cancel_requested
    assert store.claim_task(dispatches[1].task_id, 0, "a1") is None
    store.finish_task(dispatches[0].task_id, "a1", "cancelled")
    assert store.get_job(job_id).state == "cancelled"


def test_retry_requeues_only_failed_tasks(store: JobStore) -> None:
    job_id, dispatches = make_job(store, 3)
    for i, d in enumerate(dispatches):
        store.claim_task(d.task_id, 0, "a1")
        store.finish_task(d.task_id, "a1", "failed" if i == 1 else "succeeded", error="x")
    assert store.get_job(job_id).state == "completed_with_errors"
    resent, refinish = store.retry_job(job_id, "ana")
    assert [d.task_id for d in resent] == [dispatches[1].task_id] and not refinish
    job = store.get_job(job_id, with_tasks=True)
    assert job.state == "queued" and job.finished_at is None and job.tasks_failed == 0
    assert [t.state for t in job.tasks] == ["succeeded", "queued", "succeeded"]
    store.claim_task(resent[0].task_id, resent[0].dispatch, "a1")
    assert store.finish_task(resent[0].task_id, "a1", "succeeded").job_state == "completed"


def test_retry_one_task(store: JobStore) -> None:
    job_id, dispatches = make_job(store, 2)
    run_all(store, dispatches, state="failed")
    resent, _ = store.retry_job(job_id, "ana", seq=2)
    assert [d.task_id for d in resent] == [dispatches[1].task_id]
    assert [t.state for t in store.get_tasks(job_id)] == ["failed", "queued"]
    with pytest.raises(InvalidState, match="only a failed task"):
        store.retry_job(job_id, "ana", seq=2)
    with pytest.raises(NotFound, match="no task 9"):
        store.retry_job(job_id, "ana", seq=9)


def test_priority_change_makes_old_messages_stale(store: JobStore) -> None:
    job_id, dispatches = make_job(store, 2, priority=1)
    resent = store.set_priority(job_id, 9, "ana")
    assert {(d.dispatch, d.priority) for d in resent} == {(1, 9)}
    assert store.claim_task(dispatches[0].task_id, 0, "a1") is None
    assert store.get_job(job_id).priority == 9


def test_queue_targets_lists_runnable_tasks(store: JobStore) -> None:
    job_a, da = make_job(store, 2)
    job_b, _ = make_job(store, 1)
    store.pause_job(job_b, "ana")
    store.claim_task(da[0].task_id, 0, "a1")
    targets, finals = store.queue_targets()
    assert [d.task_id for d in targets] == [da[1].task_id] and finals == []
    assert store.queue_targets(queued_before=0)[0] == []


# -- agents and recovery ---------------------------------------------------------------------------
def test_register_refuses_a_live_name(store: JobStore) -> None:
    store.register_agent(agent_info("a1", pid=1))  # pid 1 is alive
    with pytest.raises(InvalidState, match="already running"):
        store.register_agent(agent_info("a1", pid=2))


def test_lost_agent_tasks_are_requeued_without_spending_an_attempt(store: JobStore) -> None:
    store.register_agent(agent_info("a1", interval=0.1))
    job_a, da = make_job(store, 1, retries=1)
    job_b, db = make_job(store, 1, retries=0)
    store.claim_task(da[0].task_id, 0, "a1")
    store.claim_task(db[0].task_id, 0, "a1")
    recovery = store.recover_lost("a2", now=time.time() + 1)
    assert recovery.lost == ["a1"]
    assert [d.task_id for d in recovery.dispatches] == [da[0].task_id, db[0].task_id]
    for job_id in (job_a, job_b):
        task = store.get_tasks(job_id)[0]
        assert (task.state, task.attempts, task.losses) == ("queued", 0, 1)
        assert [e["message"] for e in store.events(job_id) if e["to_state"] == "queued" and e["kind"] == "task"] == [
            "agent a1 lost (loss 1 of 3); queued again, no attempt spent"]
    assert store.list_agents()[0]["state"] == "lost"
    assert store.recover_lost("a3", now=time.time() + 2).lost == []  # only once


def _lose(store: JobStore, job_id: int, n: int = 1) -> None:
    """``n`` times: agent a1 claims the job's task and is lost while running it."""
    for _ in range(n):
        store.register_agent(agent_info("a1", interval=0.1))
        task = store.get_tasks(job_id)[0]
        assert store.claim_task(task.id, task.dispatch, "a1") is not None
        assert store.recover_lost("a2", now=time.time() + 1).lost == ["a1"]


def test_a_task_fails_after_max_losses_and_a_retry_gives_it_its_losses_again(store: JobStore) -> None:
    job_id, _ = store.create_job(type="sleep", name="j", params={}, owner="ana", case=None, priority=0, retries=5,
                                 has_finish=False, tasks=[NewTask("t")], actor="ana",
                                 options=JobOptions(max_losses=2))
    _lose(store, job_id)
    assert store.get_tasks(job_id)[0].state == "queued"
    _lose(store, job_id)
    task = store.get_tasks(job_id)[0]
    assert (task.state, task.losses, task.attempts) == ("failed", 2, 0)
    assert task.error == "killed its agent 2 times (the last: agent a1 lost); max_losses is 2"
    assert store.get_job(job_id).state == "failed"
    store.retry_job(job_id, "ana")
    assert store.get_tasks(job_id)[0].losses == 0
    _lose(store, job_id)
    assert store.get_tasks(job_id)[0].state == "queued"


def test_a_task_not_safe_to_rerun_fails_at_its_first_loss(store: JobStore) -> None:
    job_id, _ = store.create_job(type="pdf", name="j", params={}, owner="ana", case=None, priority=0, retries=5,
                                 has_finish=False, tasks=[NewTask("t")], actor="ana",
                                 options=JobOptions(rerun_safe=False))
    _lose(store, job_id)
    task = store.get_tasks(job_id)[0]
    assert (task.state, task.losses) == ("failed", 1)
    assert task.error == ("agent a1 lost while running the task; job type pdf is not safe to re-run"
                          " (rerun_safe = False), so it was not run again")


def test_graceful_stop_and_cancelled_jobs_count_no_loss(store: JobStore) -> None:
    store.register_agent(agent_info("a1"))
    job_id, (d,) = make_job(store, 1)
    cancelled, (e,) = make_job(store, 1)
    store.claim_task(d.task_id, 0, "a1")
    store.claim_task(e.task_id, 0, "a1")
    store.cancel_job(cancelled, "ana")
    store.agent_stopped("a1", 4242)
    assert [(t.state, t.losses) for t in store.get_tasks(job_id)] == [("queued", 0)]
    assert [(t.state, t.losses) for t in store.get_tasks(cancelled)] == [("cancelled", 0)]


def test_reconcile_hands_back_only_unreported_tasks_older_than_the_snapshot(store: JobStore) -> None:
    store.register_agent(agent_info("a1"))
    job_id, ds = make_job(store, 3)
    for d in ds:
        store.claim_task(d.task_id, 0, "a1")
    reported, forgotten, racing = (d.task_id for d in ds)
    snapshot_at = time.time() + 5  # all three claims started long before this snapshot ...
    assert store.reconcile_agent("a1", 9999, [reported], snapshot_at).dispatches == []  # not this incarnation
    assert store.reconcile_agent("a1", 4242, [reported], time.time()).dispatches == []  # ... but not before now
    recovery = store.reconcile_agent("a1", 4242, [reported, racing], snapshot_at)
    assert [d.task_id for d in recovery.dispatches] == [forgotten]
    tasks = {t.id: t for t in store.get_tasks(job_id)}
    assert (tasks[forgotten].state, tasks[forgotten].attempts, tasks[forgotten].losses) == ("queued", 0, 1)
    assert [tasks[t].state for t in (reported, racing)] == ["running", "running"]
    assert "agent a1 no longer reports the task in its heartbeat (loss 1 of 3); queued again, no attempt spent" in [
        e["message"] for e in store.events(job_id)]


def test_lost_finisher_hands_the_step_back(store: JobStore) -> None:
    store.register_agent(agent_info("a1", interval=0.1))
    job_id, dispatches = make_job(store, 1, has_finish=True)
    run_all(store, dispatches, agent="a1")
    recovery = store.recover_lost("a2", now=time.time() + 1)
    assert recovery.finalize == [job_id]
    assert store.begin_finalize(job_id, "a2") is not None


def test_heartbeat_keeps_agent_and_returns_command(store: JobStore) -> None:
    store.register_agent(agent_info("a1", interval=0.1))
    assert store.heartbeat("a1", 4242, {"done": 3, "failed": 1, "current": []}) is None
    store.request_agent("a1", "stop", "ana")
    assert store.heartbeat("a1", 4242, {}) == "stop"
    assert store.heartbeat("a1", 9999, {}) == "stop"  # another incarnation owns the name


def test_agent_stopped_hands_back_running_tasks_without_counting_an_attempt(store: JobStore) -> None:
    store.register_agent(agent_info("a1"))
    job_id, (d,) = make_job(store, 1)
    store.claim_task(d.task_id, 0, "a1")
    recovery = store.agent_stopped("a1", 4242)
    assert [x.task_id for x in recovery.dispatches] == [d.task_id]
    task = store.get_tasks(job_id)[0]
    assert (task.state, task.attempts) == ("queued", 0)
    assert store.list_agents()[0]["state"] == "offline"


def _race_recover(path: str, name: str, now: float, out: multiprocessing.Queue) -> None:
    store = SQLiteStore(path)
    out.put(store.recover_lost(name, now=now).lost)


def test_exactly_one_agent_recovers_when_several_notice_at_once(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SQLiteStore(path, create=True)
    store.register_agent(agent_info("victim", interval=0.1))
    for _ in range(3):
        _, (d,) = make_job(store, 1, retries=3)
        store.claim_task(d.task_id, 0, "victim")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    now = time.time() + 5
    procs = [ctx.Process(target=_race_recover, args=(str(path), f"r{i}", now, out)) for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
    assert sorted(len(r) for r in results) == [0, 0, 0, 1]
    tasks = [t for j in store.list_jobs() for t in store.get_tasks(j.id)]
    assert [t.state for t in tasks] == ["queued"] * 3 and all(t.dispatch == 1 for t in tasks)


# -- the engine's transition table --------------------------------------------------------------------
def _job_in(store: JobStore, state: str) -> int:
    """A job in ``state``, made through the store's own transitions."""
    job_id, dispatches = make_job(store, 2)
    if state == "running":
        store.claim_task(dispatches[0].task_id, dispatches[0].dispatch, "a1")
    elif state == "paused":
        store.pause_job(job_id, "ana")
    elif state == "completed":
        run_all(store, dispatches)
    elif state == "completed_with_errors":
        run_all(store, dispatches[:1])
        run_all(store, dispatches[1:], state="failed")
    elif state == "failed":
        run_all(store, dispatches, state="failed")
    elif state == "cancelled":
        store.cancel_job(job_id, "ana")
    assert store.get_job(job_id).state == state
    return job_id


def test_the_store_moves_jobs_only_as_the_engine_table_allows(store: JobStore) -> None:
    """Every user action, tried from every job state: the store's conditional UPDATEs accept it exactly
    from the states :data:`jobmanager.engine.engine.JOB_MOVES` names, and end in one it allows; and every job
    and task event any of it wrote is a move of the table."""
    from jobmanager.engine.engine import JOB_MOVES, job_move_allowed, task_move_allowed
    from jobmanager.engine.states import JobState

    calls = {"pause": lambda j: store.pause_job(j, "ana"), "resume": lambda j: store.resume_job(j, "ana"),
             "cancel": lambda j: store.cancel_job(j, "ana"), "retry": lambda j: store.retry_job(j, "ana")}
    jobs = []
    for action, call in calls.items():
        sources, targets = JOB_MOVES[action]
        for state in JobState:
            job_id = _job_in(store, state)
            jobs.append(job_id)
            try:
                call(job_id)
            except InvalidState:
                assert state not in sources, f"{action} refused from {state}, which the table allows"
            else:
                assert state in sources, f"{action} accepted from {state}, which the table does not allow"
                assert store.get_job(job_id).state in targets, f"{action} from {state}"
    for job_id in jobs:
        for e in store.events(job_id):
            if e["kind"] == "job":
                assert job_move_allowed(e["from_state"], e["to_state"]), e
            elif e["kind"] == "task":
                assert task_move_allowed(e["from_state"], e["to_state"]), e


def test_insert_history_appends_rows_after_the_largest_ids(store: JobStore) -> None:
    from jobmanager.store.base import HISTORY_COLUMNS

    job_id, _ = make_job(store, 1)
    seen = []

    def batches(job_base: int, task_base: int):
        seen.append((job_base, task_base))
        job = dict.fromkeys(HISTORY_COLUMNS["jobs"])
        job.update(id=job_base + 1, type="sleep", name="old", params="{}", owner="bo", priority=0,
                   state="completed", retries=0, has_finish=0, tasks_total=1, tasks_succeeded=1, tasks_failed=0,
                   tasks_cancelled=0, created_at=1.0, updated_at=2.0, finished_at=2.0, started_at=1.5)
        task = dict.fromkeys(HISTORY_COLUMNS["tasks"])
        task.update(id=task_base + 1, job_id=job_base + 1, seq=1, name="t", params="{}", state="succeeded",
                    attempts=1, max_attempts=1, dispatch=0, agent="a9", cancel_requested=0, queued_at=1.0)
        yield {"jobs": [tuple(job.values())], "tasks": [tuple(task.values())]}

    counts = store.insert_history(batches)
    assert seen == [(job_id, 1)] and counts["jobs"] == 1 and counts["tasks"] == 1
    assert store.get_job(job_id + 1, with_tasks=True).tasks[0].state == "succeeded"
    new_id, _ = make_job(store, 1)  # the id sequence moved past the explicit ids
    assert new_id == job_id + 2


# -- the batched completer's write (issue 18) ------------------------------------------------------
def test_finish_tasks_writes_a_batch_as_single_finishes_would(store: JobStore) -> None:
    from jobmanager.models import Finish

    plain, plain_d = make_job(store, 3, retries=1)
    fin, fin_d = make_job(store, 2, has_finish=True)
    other, (other_d,) = make_job(store, 1)
    for d in [*plain_d, *fin_d]:
        assert store.claim_task(d.task_id, d.dispatch, "a1") is not None
    assert store.claim_task(other_d.task_id, other_d.dispatch, "a2") is not None
    t0 = time.time()
    batch = [Finish(plain_d[0].task_id, "succeeded", at=t0 - 2, log_part="p0"),
             Finish(plain_d[1].task_id, "succeeded", at=t0 - 1),
             Finish(plain_d[2].task_id, "failed", "flaky", "trace", at=t0, log_part="p2a"),
             *[Finish(d.task_id, "succeeded", at=t0) for d in fin_d],
             Finish(other_d.task_id, "succeeded", at=t0)]  # held by a2: skipped
    done = store.finish_tasks("a1", batch)
    assert sorted(done.recorded) == sorted(d.task_id for d in [*plain_d, *fin_d])
    assert [(d.task_id, d.dispatch) for d in done.dispatches] == [(plain_d[2].task_id, 1)]  # the retry
    assert done.finalize == [fin] and done.job_states == {}
    tasks = store.get_tasks(plain)
    assert [t.state for t in tasks] == ["succeeded", "succeeded", "retrying"]
    assert [t.finished_at for t in tasks[:2]] == pytest.approx([t0 - 2, t0 - 1])  # each its own time
    assert tasks[2].error == "flaky" and tasks[2].traceback == "trace"
    assert [t.log_slices for t in tasks] == ["p0", None, "p2a"]  # each attempt's log part, appended
    job = store.get_job(plain)
    assert (job.state, job.tasks_succeeded, job.tasks_failed) == ("running", 2, 0)
    assert store.get_tasks(other)[0].state == "running"
    assert store.get_job(fin).state == "running" and store.get_job(fin).finisher is None
    assert store.begin_finalize(fin, "a3") is not None  # the finishing step, sent as a message, is free
    # the retried task ends the job in a second batch; events: one per finished task, once
    assert store.claim_task(plain_d[2].task_id, 1, "a1") is not None
    again = store.finish_tasks("a1", [Finish(plain_d[2].task_id, "succeeded", at=time.time(), log_part="p2b")])
    assert again.job_states == {plain: "completed"}
    assert store.finish_tasks("a1", [Finish(plain_d[2].task_id, "succeeded", log_part="x")]).recorded == []  # no-op
    assert store.get_tasks(plain)[2].log_slices == "p2a p2b x"  # but for its attempt's log part
    events = store.events(plain)
    ends = [e["task_id"] for e in events if e["kind"] == "task" and e["to_state"] == "succeeded"]
    assert sorted(ends) == sorted(d.task_id for d in plain_d)
    assert [e["to_state"] for e in events if e["kind"] == "job"][-1] == "completed"
    assert store.get_job(plain).tasks_succeeded == 3


def test_a_batch_of_plain_successes(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Successes without an error, across jobs: one that ends, one whose finishing step becomes due, one that
    goes on. On PostgreSQL the batch is one statement (the general path, which locks limits first, is not
    taken); the rows, counters, events and the decisions are the same on both backends."""
    from jobmanager.models import Finish

    ends, ends_d = make_job(store, 2)
    fin, fin_d = make_job(store, 1, has_finish=True)
    goes_on, goes_on_d = make_job(store, 3)
    for d in [*ends_d, *fin_d, goes_on_d[0]]:
        assert store.claim_task(d.task_id, d.dispatch, "a1") is not None
    if not isinstance(store, SQLiteStore):
        monkeypatch.setattr(store.limits, "lock", lambda *a: pytest.fail("the general path was taken"))
    t0 = time.time()
    batch = [Finish(d.task_id, "succeeded", at=t0 - i, log_part=f"part{i}" if i else None)
             for i, d in enumerate([*ends_d, *fin_d, goes_on_d[0]])]
    done = store.finish_tasks("a1", batch)
    monkeypatch.undo()
    assert sorted(done.recorded) == sorted(f.task_id for f in batch)
    assert done.job_states == {ends: "completed"} and done.finalize == [fin] and done.dispatches == []
    assert [t.finished_at for t in store.get_tasks(ends)] == pytest.approx([t0, t0 - 1])
    assert [t.log_slices for t in store.get_tasks(ends)] == [None, "part1"]
    assert store.get_tasks(goes_on)[0].log_slices == "part3"
    assert [t.state for t in store.get_tasks(goes_on)] == ["succeeded", "queued", "queued"]
    assert [(j.state, j.tasks_succeeded) for j in map(store.get_job, (ends, fin, goes_on))] == [
        ("completed", 2), ("running", 1), ("running", 1)]
    for job_id, tasks in ((ends, ends_d), (fin, fin_d), (goes_on, goes_on_d[:1])):
        events = store.events(job_id)
        assert [e["task_id"] for e in events if e["to_state"] == "succeeded"] == [d.task_id for d in tasks]
        assert all(e["agent"] == "a1" and e["from_state"] == "running" for e in events if e["to_state"] == "succeeded")
    assert [e["to_state"] for e in store.events(ends) if e["kind"] == "job"] == ["queued", "running", "completed"]
    assert store.begin_finalize(fin, "a2") is not None


def test_an_outcome_written_again_still_hands_over_a_due_finishing_step(store: JobStore) -> None:
    """A batch whose failure's text the database refuses (PostgreSQL: a NUL byte) fails after its plain
    successes were written in a transaction of their own; the completer then writes each outcome again, one at
    a time. The success that made a job's finishing step due is no longer running: writing it again records
    nothing, and still hands the due step over (a review finding: it was sent by no one until the sweep)."""
    from jobmanager.models import Finish

    fin, (d,) = make_job(store, 1, has_finish=True)
    other, (o,) = make_job(store, 1, retries=0)
    for x in (d, o):
        assert store.claim_task(x.task_id, x.dispatch, "a1") is not None
    ok, bad = Finish(d.task_id, "succeeded", at=time.time()), Finish(o.task_id, "failed", "bad\x00text", at=time.time())
    try:
        store.finish_tasks("a1", [ok, bad])
    except Exception:  # noqa: BLE001 - PostgreSQL refuses the NUL byte; SQLite stores it
        assert not isinstance(store, SQLiteStore)
    assert store.get_tasks(fin)[0].state == "succeeded"
    again = store.finish_tasks("a1", [ok])
    assert again.recorded == [] and again.finalize == [fin]
    assert store.begin_finalize(fin, "a1") is not None
    assert store.finish_tasks("a1", [ok]).finalize == []  # taken: not handed over again


def test_a_batched_success_a_limit_counts_frees_its_slot(store: JobStore) -> None:
    """A success of a job a concurrency limit counts wakes the task waiting for its slot; in the same batch a
    success of a job the limit does not count is written as usual."""
    from jobmanager.models import Finish

    store.limits.save("one-at-a-time", type=None, queue="q1", per_case=False, max_running=1, actor="ana")
    limited, (l1, l2) = store.create_job(
        type="sleep", name="j", params={"tasks": 2}, owner="ana", case=None, priority=0, retries=0,
        has_finish=False, tasks=[NewTask("t0", {}), NewTask("t1", {})], actor="ana", options=JobOptions(queue="q1"))
    free, (f1,) = make_job(store, 1)
    assert store.claim_task(l1.task_id, l1.dispatch, "a1") is not None
    assert store.claim_task(l2.task_id, l2.dispatch, "a1") is None  # waits for the slot
    assert store.get_tasks(limited)[1].waiting is not None
    assert store.claim_task(f1.task_id, f1.dispatch, "a1") is not None
    done = store.finish_tasks("a1", [Finish(l1.task_id, "succeeded", at=time.time()),
                                     Finish(f1.task_id, "succeeded", at=time.time())])
    assert sorted(done.recorded) == sorted([l1.task_id, f1.task_id]) and done.job_states == {free: "completed"}
    assert [d.task_id for d in done.dispatches] == [l2.task_id]  # woken
    woken = done.dispatches[0]
    assert store.claim_task(woken.task_id, woken.dispatch, "a1") is not None


def test_a_held_outcome_of_an_older_claim_is_not_written_over_a_newer_one(store: JobStore) -> None:
    """An agent holds an outcome while the store is away, is declared lost meanwhile, comes back under the
    same name and claims the same task again: the old outcome must not end the new claim."""
    from jobmanager.models import Finish

    store.register_agent(agent_info("a1", interval=0.1))
    job_id, (d,) = make_job(store, 1, retries=2)
    first = store.claim_task(d.task_id, d.dispatch, "a1")
    assert first is not None
    held = Finish(d.task_id, "failed", "from the first claim", at=time.time(), dispatch=first.task.dispatch)
    assert store.recover_lost("a2", now=time.time() + 1).lost == ["a1"]
    store.register_agent(agent_info("a1", interval=0.1, pid=2))
    task = store.get_tasks(job_id)[0]
    second = store.claim_task(task.id, task.dispatch, "a1")
    assert second is not None and second.task.attempts == first.task.attempts  # a loss spends no attempt
    assert store.finish_tasks("a1", [held]).recorded == []
    assert store.get_tasks(job_id)[0].state == "running"
    done = store.finish_tasks("a1", [Finish(d.task_id, "succeeded", at=time.time(), dispatch=second.task.dispatch)])
    assert done.recorded == [d.task_id] and done.job_states == {job_id: "completed"}

    # the same for a retried attempt: the failed first attempt's outcome arrives again late
    job2, (d2,) = make_job(store, 1, retries=2)
    c1 = store.claim_task(d2.task_id, d2.dispatch, "a1")
    assert c1 is not None
    late = Finish(d2.task_id, "failed", "attempt 1", at=time.time(), dispatch=c1.task.dispatch)
    assert store.finish_tasks("a1", [late]).recorded == [d2.task_id]
    retry = store.get_tasks(job2)[0]
    c2 = store.claim_task(retry.id, retry.dispatch, "a1")
    assert c2 is not None and c2.task.attempts == 2
    assert store.finish_tasks("a1", [late]).recorded == []
    assert (store.get_tasks(job2)[0].state, store.get_tasks(job2)[0].attempts) == ("running", 2)
