"""Running one task inside an agent: claim it, run it with a context, record how it ended.

The runner is what the queue's ``jm.run`` and ``jm.finalize`` messages do in an
agent process. It never trusts a message: the store's conditional claim decides
whether this agent runs the task at all (a stale, cancelled or already-done task
is dropped).
"""

from __future__ import annotations

import logging
import threading
import traceback as tb
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobmanager import jobtypes
from jobmanager.engine.context import Cancelled, TaskContext
from jobmanager.engine.engine import Engine
from jobmanager.engine.logcapture import router
from jobmanager.engine.states import TaskState
from jobmanager.home import Home
from jobmanager.store import JobStore

log = logging.getLogger("jobmanager.engine.agent")


@dataclass
class Counters:
    """What the heartbeat reports: tasks running now, done and failed so far."""

    done: int = 0
    failed: int = 0
    current: dict[int, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"done": self.done, "failed": self.failed, "current": list(self.current.values())}


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

    # -- jm.run ----------------------------------------------------------------------------
    def run(self, task_id: int, dispatch: int) -> None:
        claim = self.store.claim_task(task_id, dispatch, self.agent)
        if claim is None:
            log.debug("dropped stale message for task %s (dispatch %s)", task_id, dispatch)
            return
        task, job = claim.task, claim.job
        if task.warning:  # an earlier attempt's warning
            self.store.warn_task(task.id, self.agent, None)
        with self.counters.lock:
            self.counters.current[task.id] = {"job": job.id, "task": task.seq, "name": task.name}
        task_log = logging.getLogger(f"jobmanager.job.{job.type}")
        ctx = TaskContext(
            home=self.home, store=self.store, agent=self.agent, job_id=job.id, task_id=task.id,
            seq=task.seq, attempt=task.attempts, job_params=job.params, log=task_log, owner=job.owner,
            case=job.case,
        )
        state, error, trace = TaskState.SUCCEEDED, None, None
        header = f"job {job.id} task {task.seq} ({task.name}) attempt {task.attempts} on {self.agent}"
        try:
            with router().capture(self.home.task_log(job.id, task.seq), header):
                try:
                    jt = jobtypes.get(job.type)
                    params = jobtypes.validate(jt, job.params)
                    jt.run(ctx, params, task.params)
                    ctx.flush_progress()
                    if ctx.cancelled():
                        state, error = TaskState.CANCELLED, "cancelled while running"
                    else:
                        ctx.record_outputs()
                except Cancelled:
                    state, error = TaskState.CANCELLED, "cancelled while running"
                except Exception as exc:  # the task's own failure: record it, never crash the agent
                    state, error, trace = TaskState.FAILED, _one_line(exc), tb.format_exc()
                    task_log.error("task failed: %s\n%s", error, trace)
        finally:
            with self.counters.lock:
                self.counters.current.pop(task.id, None)
                if state == TaskState.SUCCEEDED:
                    self.counters.done += 1
                else:
                    self.counters.failed += 1
        outcome = self.engine.finish_task(task.id, self.agent, state, error=error, traceback=trace,
                                          stored=self.until_stored)
        if outcome.finalize:
            self._run_finish(job.id)

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


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
