"""Running one task inside an agent: claim it, run it with a context, record how it ended.

The runner is what the queue's ``jm.run`` and ``jm.finalize`` messages do in an
agent process. It never trusts a message: the store's conditional claim decides
whether this agent runs the task at all (a stale, cancelled or already-done task
is dropped).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback as tb
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobmanager import jobtypes
from jobmanager.engine.child import ChildTasks
from jobmanager.engine.completer import Completer
from jobmanager.engine.context import Cancelled, TaskContext, TimeLimitExceeded
from jobmanager.engine.engine import Engine
from jobmanager.engine.logcapture import SliceFiles, router
from jobmanager.engine.states import TaskState
from jobmanager.home import Home
from jobmanager.models import LATER, Claim, Dispatch, Finish, Job, Task
from jobmanager.store import JobStore

log = logging.getLogger("jobmanager.engine.agent")


@dataclass
class Counters:
    """What the heartbeat reports: tasks running now, done and failed so far.

    ``current`` holds a task from its claim until its outcome is written (or the write gave up), so
    the store can reconcile: a task it says runs here that a snapshot does not report is forgotten
    (:meth:`JobStore.reconcile_agent`). ``snapshot_at`` makes that exact for claims racing a snapshot:
    it is the snapshot's time, or the start of the oldest claim still in flight, whichever is earlier.
    """

    done: int = 0
    failed: int = 0
    current: dict[int, dict[str, Any]] = field(default_factory=dict)
    claims: dict[object, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"done": self.done, "failed": self.failed, "current": list(self.current.values()),
                    "snapshot_at": min(self.claims.values(), default=time.time())}

    def claim_started(self) -> object:
        """Before a claim: a snapshot taken until :meth:`claim_ended` vouches only for earlier claims."""
        token = object()
        with self.lock:
            self.claims[token] = time.time()
        return token

    def claim_ended(self, token: object, *claims: Claim | None) -> None:
        """After a claim (or a batch): its tasks (those claimed) are reported from now on, in the same step."""
        with self.lock:
            del self.claims[token]
            for claim in claims:
                if claim is not None:
                    task = claim.task
                    self.current[task.id] = {"id": task.id, "job": claim.job.id, "task": task.seq,
                                             "name": task.name, "dispatch": task.dispatch}

    def forget(self, task_ids: Iterable[int]) -> None:
        """These tasks are no longer this agent's (written, or their run ended without an outcome)."""
        with self.lock:
            for task_id in task_ids:
                self.current.pop(task_id, None)

    def forget_claims(self, claims: Iterable[tuple[int, int]]) -> None:
        """These claims ((task id, dispatch)) are no longer this agent's (given back, or taken back by the
        store); a later claim of the same task, with another dispatch, stays reported."""
        with self.lock:
            for task_id, dispatch in claims:
                if self.current.get(task_id, {}).get("dispatch") == dispatch:
                    del self.current[task_id]


class Runner:
    def __init__(self, home: Home, store: JobStore, engine: Engine, agent: str) -> None:
        self.home = home
        self.store = store
        self.engine = engine
        self.agent = agent
        self.counters = Counters()
        #: how a task's outcome is written; the agent retries it with back-off while the store cannot
        #: be written (a full disk), so an outcome is never dropped and the task never stays "running"
        self.until_stored: Callable[[Callable[[], Any]], Any] = lambda write: write()
        #: each worker thread's one log file; a task's start records where its part begins
        self.logs = SliceFiles(home)
        #: tasks of jobs with a hard time limit run in child processes it starts and may kill
        self.children = ChildTasks(home, agent, type(store).__module__, self.logs)
        #: the batched completer outcomes go to (engine/completer.py); None: each written at once
        self.completer: Completer | None = None
        #: tasks claimed in a batch whose messages wait in the prefetch buffer, by (task id, dispatch), with
        #: whether they must be checked again before they start (claim_ahead)
        self._ahead: dict[tuple[int, int], tuple[Claim, bool]] = {}
        self._ahead_lock = threading.Lock()

    # -- jm.run ----------------------------------------------------------------------------
    def run(self, task_id: int, dispatch: int, job_id: int | None = None) -> None:
        with self._ahead_lock:
            ahead = self._ahead.pop((task_id, dispatch), None)
        began = None
        if ahead is not None:
            claim: Claim | None = ahead[0] if not ahead[1] or self._may_start(ahead[0]) else None
            began = time.time() if ahead[1] else None  # it waited after its claim: its start is now
        else:
            token, claim = self.counters.claim_started(), None
            try:
                claim = self.store.claim_task(task_id, dispatch, self.agent, job_id=job_id, log_run=self.logs.run())
            finally:
                self.counters.claim_ended(token, claim)
        if claim is None:
            log.debug("dropped stale message for task %s (dispatch %s)", task_id, dispatch)
            return
        task, job = claim.task, claim.job
        handed = False
        try:
            handed = self._run(task, job, began)
        finally:  # reported until the outcome is written: else the store would take the task back
            if not handed:  # the completer stops reporting it once its batch is written (written())
                self.counters.forget([task.id])

    def written(self, task_ids: list[int]) -> None:
        """The completer wrote these tasks' outcomes: the heartbeat stops reporting them."""
        self.counters.forget(task_ids)

    # -- claims ahead (engine/prefetch.py) ---------------------------------------------------
    def claim_ahead(self, wanted: list[Dispatch | None]) -> list[bool | None]:
        """Claim the tasks of a batch of messages one worker took, in one transaction; the first is the one
        that worker runs now, the others wait in the agent's buffer for any worker. For each message: True
        (claimed: its run uses this claim), False (not claimed: a stale message, or its task waits for a
        concurrency limit's slot; drop it), None (not a task's message, a task the store leaves to be
        claimed when it starts, or the claim failed: it stays a message, claimed when it runs)."""
        asked = [w for w in wanted if w is not None]
        first = None if wanted[0] is None else _key(wanted[0])  # a finishing step first: no run starts now
        token, answers = self.counters.claim_started(), []
        try:
            answers = self.store.claim_tasks(asked, self.agent, first_starts=first is not None,
                                             log_run=self.logs.run())
        except Exception as exc:  # the store's trouble: each message is claimed on its own when it runs
            log.debug("a batch of %d claims failed (%s); claimed one by one", len(asked), exc)
            return [None] * len(wanted)
        finally:
            self.counters.claim_ended(token, *(a for a in answers if isinstance(a, Claim)))
        got = {(c.task.id, c.task.dispatch): c for c in answers if isinstance(c, Claim)}
        later = {_key(w) for w, a in zip(asked, answers, strict=True) if a is LATER}
        with self._ahead_lock:
            for key, claim in got.items():
                # the first starts now, in the thread that claimed it; the others are checked again first
                self._ahead[key] = (claim, key != first)
        return [None if w is None or _key(w) in later else _key(w) in got for w in wanted]

    def release_ahead(self, keys: list[tuple[int, int]], reason: str) -> list[tuple[int, int]]:
        """Give back claimed tasks whose messages will not run here (they waited longer than the buffer
        holds a message, or the agent stops): queued again without an attempt spent. Returns the (task id,
        dispatch) of the messages to put back in the queue (in their places). If the store cannot be
        written, they stay claimed; the heartbeat no longer reports them, so the store takes them back."""
        with self._ahead_lock:
            taken = [k for k in keys if self._ahead.pop(k, None) is not None]
        return self._give_back(taken, reason, keys)

    def _give_back(self, claims: list[tuple[int, int]], reason: str,
                   held: list[tuple[int, int]]) -> list[tuple[int, int]]:
        if not claims:
            return []
        try:
            return self.engine.release(self.agent, claims, reason, held)
        except Exception as exc:  # noqa: BLE001 - a stop must go on
            log.warning("%d claimed tasks could not be given back (%s); the store takes them back", len(claims),
                        exc)
            return []
        finally:
            self.counters.forget_claims(claims)

    def _may_start(self, claim: Claim) -> bool:
        """Whether a task claimed ahead may start now: a cancel or a pause that came after its claim reaches
        it here, before it starts (it is then given back: cancelled, or queued while its job is paused).
        While the store cannot be read (a storage problem) the read is tried again, as an outcome's write."""
        task = claim.task
        key = (task.id, task.dispatch)
        try:
            change = self.until_stored(lambda: self.store.unstarted_change(task.id, self.agent, task.dispatch))
        except Exception:  # not reported any more: the store takes it back (a loss counted)
            self.counters.forget_claims([key])
            raise
        if change is None:
            return True
        if change == "gone":  # taken back meanwhile (its agent was thought lost): not ours to run
            self.counters.forget_claims([key])
        else:
            self._give_back([key], "cancelled before it started" if change == "cancel"
                            else f"not started: its job is {change}", [])
        return False

    def _run(self, task: Task, job: Job, began: float | None = None) -> bool:
        """Run a claimed task; True when its outcome went to the batched completer (written later). ``began``:
        when a task claimed some time before starts (its soft limit counts from then, and the completer
        writes it as the task's ``started_at``)."""
        state: str = TaskState.SUCCEEDED
        try:
            begun = self.logs.begin(job.id, task.id)
            if job.hard_limit is not None:
                state, error, trace = self.children.run(job, task)
            else:
                state, error, trace = run_task(self.home, self.store, self.agent, job, task, began,
                                               log_to=begun.target)
        finally:
            with self.counters.lock:
                if state == TaskState.SUCCEEDED:
                    self.counters.done += 1
                else:
                    self.counters.failed += 1
        # a task's own text may hold NUL characters, which PostgreSQL's text columns refuse
        error, trace = _no_nul(error), _no_nul(trace)
        part = self.logs.end(begun)
        if self.completer is not None:
            self.completer.finish(Finish(task.id, state, error, trace, time.time(), dispatch=task.dispatch,
                                         started_at=began, log_part=part))
            return True
        outcome = self.engine.finish_task(task.id, self.agent, state, error=error, traceback=trace,
                                          log_part=part, stored=self.until_stored)
        if outcome.finalize:
            with self.counters.lock:
                self.counters.current.pop(task.id, None)
            self._run_finish(job.id)
        return False

    # -- jm.finalize -------------------------------------------------------------------------
    def finalize(self, job_id: int) -> None:
        if self.store.begin_finalize(job_id, self.agent) is not None:
            self._run_finish(job_id)

    def _run_finish(self, job_id: int) -> None:
        job = self.store.get_job(job_id)
        task_log = logging.getLogger(f"jobmanager.job.{job.type}")
        ctx = TaskContext(
            home=self.home, store=self.store, agent=self.agent, job_id=job.id, task_id=None, seq=None,
            attempt=1, job_params=job.params, log=task_log, owner=job.owner,
            case=job.case,
        )
        error = None
        with router().capture(self.home.task_log(job.id, None), f"job {job.id} finishing step on {self.agent}"):
            try:
                jt = jobtypes.get(job.type)
                jt.finish(ctx, jobtypes.validate(jt, job.params))
                ctx.record_outputs()
                task_log.info("finishing step done")
            except Exception as exc:
                error = _one_line(exc)
                task_log.error("finishing step failed: %s\n%s", error, tb.format_exc())
        self.until_stored(lambda: self.store.end_finalize(job.id, self.agent, error))


def _key(d: Dispatch) -> tuple[int, int]:
    return d.task_id, d.dispatch


def task_header(job: Job, task: Task, agent: str) -> str:
    """The line that opens an attempt's part of its thread's log file."""
    return f"job {job.id} task {task.seq} ({task.name}) attempt {task.attempts} on {agent}"


def run_task(home: Home, store: JobStore, agent: str, job: Job, task: Task,
             started_at: float | None = None, *, log_to: Path | int) -> tuple[str, str | None, str | None]:
    """Run one claimed task with its context and log capture; returns (state, error, traceback) for
    :meth:`Engine.finish_task`. The one way a task runs, in an agent's worker thread or in a task's
    child process (engine/child.py); a task's own failure is returned, never raised. The soft limit
    counts from ``started_at`` (default: the claim's). Its records are appended to ``log_to``, the
    worker thread's file (a descriptor in the thread, the path in a child process)."""
    task_log = logging.getLogger(f"jobmanager.job.{job.type}")
    ctx = TaskContext(
        home=home, store=store, agent=agent, job_id=job.id, task_id=task.id,
        seq=task.seq, attempt=task.attempts, job_params=job.params, log=task_log, owner=job.owner,
        case=job.case, soft_limit=job.soft_limit, started_at=started_at or task.started_at,
    )
    state: str = TaskState.SUCCEEDED
    error: str | None = None
    trace: str | None = None
    with router().capture(log_to, task_header(job, task, agent)):
        try:
            jt = jobtypes.get(job.type)
            params = _validated(jt, job, str(home.path))
            jt.run(ctx, params, task.params)
            ctx.flush_progress()
            if ctx.stopped_for_time:  # it returned because ctx.cancelled() said its time was over
                state, error = TaskState.FAILED, str(TimeLimitExceeded(job.soft_limit or 0))
                task_log.error("task stopped: %s (soft limit)", error)
            elif ctx.cancel_requested():
                state, error = TaskState.CANCELLED, "cancelled while running"
            else:
                ctx.record_outputs()
        except Cancelled:
            state, error = TaskState.CANCELLED, "cancelled while running"
        except TimeLimitExceeded as exc:
            state, error, trace = TaskState.FAILED, str(exc), tb.format_exc()
            task_log.error("task stopped: %s (soft limit)\n%s", error, trace)
        except Exception as exc:  # the task's own failure: record it, never crash the agent
            state, error, trace = TaskState.FAILED, _one_line(exc), tb.format_exc()
            task_log.error("task failed: %s\n%s", error, trace)
    return state, error, trace


#: a job's validated parameters, by (store, job id, type): a job's parameters never change once stored,
#: so they are validated once per job in an agent, not once per task (small: a few hundred recent jobs).
#: The store is part of the key because one process (a notebook, the tests) may run jobs of several homes.
_PARAMS: dict[tuple[str, int, str], Any] = {}


def _validated(jt: Any, job: Job, where: str) -> Any:
    key = (where, job.id, jt.name)
    params = _PARAMS.get(key)
    if params is None:
        params = jobtypes.validate(jt, job.params)
        if len(_PARAMS) >= 256:
            _PARAMS.clear()
        _PARAMS[key] = params
    return params


def _no_nul(text: str | None) -> str | None:
    return text.replace("\x00", "\\x00") if text else text


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
