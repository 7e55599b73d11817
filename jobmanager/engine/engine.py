"""The engine: the transition table, and "commit, then send".

Every action that changes a job is one store transition (a short transaction whose conditional
UPDATE decides who wins) followed by the queue messages the store returned. :class:`Engine` is
the one place that pairs the two: the service, the runner, the agent and the scheduler call its
methods and never touch the queue themselves. A queue message is only ever a hint (the store
holds the truth; an agent's sweep re-sends what the queue lost), so the rule when the queue cannot
be written after the commit depends on who asked: a user's action gets a
:class:`~jobmanager.errors.QueueNotReached` warning ("job N is stored; agents will pick it up"),
never an error that would invite a duplicate; an agent's loop gets the exception, so its trouble
log says the queue is down.

:data:`JOB_MOVES` and :data:`TASK_MOVES` are the transition table as data: from which states
each store transition may move a job or a task, and to which. ``tests/test_engine.py`` checks that
the store's conditional UPDATEs agree with them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from jobmanager import validate
from jobmanager.engine.queue import Queue
from jobmanager.engine.states import JobState as J
from jobmanager.engine.states import TaskState as T
from jobmanager.errors import NotFound, QueueNotReached
from jobmanager.models import Completed, Dispatch, Finish, JobOptions, NewJob, NewTask, Outcome, Recovery
from jobmanager.store.audit import AuditRecord
from jobmanager.store.base import JobStore

#: job transitions: action -> (states it may start from, states it may end in)
JOB_MOVES: dict[str, tuple[frozenset[J], frozenset[J]]] = {
    "submit": (frozenset(), frozenset({J.QUEUED})),
    "start": (frozenset({J.QUEUED}), frozenset({J.RUNNING})),
    "pause": (frozenset({J.QUEUED, J.RUNNING}), frozenset({J.PAUSED})),
    "resume": (frozenset({J.PAUSED}), frozenset({J.QUEUED, J.RUNNING})),
    "cancel": (frozenset({J.QUEUED, J.RUNNING, J.PAUSED}), frozenset({J.CANCELLED, J.RUNNING, J.PAUSED})),
    "finish": (frozenset({J.RUNNING, J.PAUSED}),
               frozenset({J.COMPLETED, J.COMPLETED_WITH_ERRORS, J.FAILED, J.CANCELLED})),
    "retry": (frozenset({J.COMPLETED_WITH_ERRORS, J.FAILED, J.CANCELLED}), frozenset({J.QUEUED, J.RUNNING})),
}
#: task transitions: action -> (states it may start from, states it may end in)
TASK_MOVES: dict[str, tuple[frozenset[T], frozenset[T]]] = {
    "claim": (frozenset({T.QUEUED, T.RETRYING}), frozenset({T.RUNNING})),
    "finish": (frozenset({T.RUNNING}), frozenset({T.SUCCEEDED, T.FAILED, T.CANCELLED, T.RETRYING})),
    "cancel": (frozenset({T.QUEUED, T.RETRYING}), frozenset({T.CANCELLED})),
    "recover": (frozenset({T.RUNNING}), frozenset({T.RETRYING, T.FAILED, T.QUEUED})),
    "retry": (frozenset({T.FAILED, T.CANCELLED}), frozenset({T.QUEUED})),
}


def job_move_allowed(before: str | None, after: str) -> bool:
    """Whether some action of :data:`JOB_MOVES` moves a job from ``before`` (None: new) to ``after``."""
    return any((before in src if before is not None else not src) and after in dst
               for src, dst in JOB_MOVES.values())


def task_move_allowed(before: str, after: str) -> bool:
    return any(before in src and after in dst for src, dst in TASK_MOVES.values())


class Engine:
    """The store and the queue of a home; one method per action: the store transition, then the send.

    ``queue`` returns the home's queue when a message is to be sent (so a process that only reads
    never opens it, and a queue that cannot even be opened counts as one that cannot be written).
    """

    def __init__(self, store: JobStore, queue: Callable[[], Queue]) -> None:
        self.store = store
        self._queue = queue

    @property
    def queue(self) -> Queue:
        return self._queue()

    # -- sending ------------------------------------------------------------------------------------
    def _send(self, dispatches: Iterable[Dispatch] = (), finals: Iterable[int] = ()) -> None:
        dispatches, finals = list(dispatches), list(finals)
        if dispatches:
            self.queue.send(dispatches)
        if finals:  # rare (recovery, the sweep, a retry that only re-finishes): the job's queue is looked up
            self.queue.send_finalize([(job_id, self._queue_of(job_id)) for job_id in finals])

    def _queue_of(self, job_id: int) -> str:
        try:
            return self.store.get_job(job_id).queue
        except NotFound:
            return "default"

    def _send_for_user(self, job_ids: int | Sequence[int], dispatches: Iterable[Dispatch] = (),
                       finals: Iterable[int] = ()) -> None:
        """After the commit: a queue that cannot be written is a warning, not an error (the job is stored,
        an agent's sweep re-sends its messages, and an error would invite a duplicate)."""
        try:
            self._send(dispatches, finals)
        except Exception as exc:  # the queue's own errors (sqlite3, redis, OS): the store already holds the truth
            reason = validate.printable(f"{type(exc).__name__}: {exc}")[:300]
            ids = [job_ids] if isinstance(job_ids, int) else list(job_ids)
            stored = (f"job {ids[0]} is" if len(ids) == 1
                      else f"jobs {', '.join(map(str, ids))} are" if len(ids) <= 3
                      else f"{len(ids)} jobs ({ids[0]}, {ids[1]} ... {ids[-1]}) are")
            warnings.warn(QueueNotReached(f"{stored} stored; agents will pick {'it' if len(ids) == 1 else 'them'}"
                                          f" up (the queue could not be written: {reason})"), stacklevel=5)

    # -- a user's actions (through the service) -----------------------------------------------------
    def submit(self, jobs: Sequence[NewJob], audit: Sequence[AuditRecord] = (),
               committed: Callable[[], None] = lambda: None) -> list[int]:
        """Store queued jobs and their tasks (and the submit's ``audit`` rows) in one transaction, call
        ``committed``, then queue all their messages in one write."""
        created = self.store.create_jobs(jobs, audit)
        committed()
        ids = [job_id for job_id, _ in created]
        self._send_for_user(ids, [d for _, dispatches in created for d in dispatches])
        return ids

    def pause(self, job_id: int, actor: str) -> None:
        self.store.pause_job(job_id, actor)

    def resume(self, job_id: int, actor: str) -> None:
        self._send_for_user(job_id, self.store.resume_job(job_id, actor))

    def cancel(self, job_id: int, actor: str) -> None:
        self.store.cancel_job(job_id, actor)

    def retry(self, job_id: int, actor: str, seq: int | None = None) -> None:
        dispatches, refinish = self.store.retry_job(job_id, actor, seq)
        self._send_for_user(job_id, dispatches, [job_id] if refinish else [])

    def set_priority(self, job_id: int, priority: int, actor: str) -> None:
        self._send_for_user(job_id, self.store.set_priority(job_id, priority, actor))

    def run_schedule_now(self, schedule: dict[str, Any], *, tasks: list[NewTask], has_finish: bool,
                         retries: int, actor: str, options: JobOptions) -> int:
        job_id, dispatches = self.store.schedules.run_now(schedule, tasks=tasks, has_finish=has_finish,
                                                         retries=retries, actor=actor, options=options)
        self._send_for_user(job_id, dispatches)
        return job_id

    # -- an agent's work (a queue failure raises: the agent's trouble log reports it) ----------------
    def finish_task(self, task_id: int, agent: str, state: str, *, error: str | None = None,
                    traceback: str | None = None, log_part: str | None = None,
                    stored: Callable[[Callable[[], Outcome]], Outcome] = lambda fn: fn()) -> Outcome:
        """End a running task; a retry is queued. ``stored`` runs the store call (the runner's
        until-the-store-answers loop), so only the commit is repeated, never the send."""
        outcome = stored(lambda: self.store.finish_task(task_id, agent, state, error=error, traceback=traceback,
                                                               log_part=log_part))
        if outcome.retry is not None or outcome.wake:
            self._send(([outcome.retry] if outcome.retry is not None else []) + outcome.wake)
        return outcome

    def finish_tasks(self, agent: str, finishes: list[Finish], *,
                     stored: Callable[[Callable[[], Completed]], Completed] = lambda fn: fn(),
                     written: Callable[[], None] = lambda: None) -> Completed:
        """End a batch of running tasks in one store transaction (the batched completer's write), then
        send the retries, the woken tasks and the due finishing steps. ``written`` runs between the
        commit and the sends."""
        done = stored(lambda: self.store.finish_tasks(agent, finishes))
        written()
        self._send(done.dispatches, done.finalize)
        return done

    def fire_due(self, agent: str, now: float | None = None) -> list[int | None]:
        """Fire every due schedule once (:func:`jobmanager.schedules.schedules.fire_due`); returns the job ids."""
        from jobmanager.schedules.schedules import fire_due

        fired = fire_due(self.store, agent, now)
        for _job_id, dispatches in fired:
            self._send(dispatches)
        return [job_id for job_id, _ in fired]

    def register_agent(self, info: dict[str, Any]) -> Recovery:
        return self._apply(self.store.register_agent(info))

    def agent_stopped(self, name: str, pid: int) -> Recovery:
        return self._apply(self.store.agent_stopped(name, pid))

    def recover(self, agent: str, now: float | None = None) -> Recovery:
        """Mark silent agents lost and queue their work again."""
        return self._apply(self.store.recover_lost(agent, now))

    def reconcile(self, name: str, pid: int, reported: list[int], snapshot_at: float) -> Recovery:
        """Queue again the tasks the store says agent ``name`` runs but its heartbeat no longer reports."""
        return self._apply(self.store.reconcile_agent(name, pid, reported, snapshot_at))

    def release(self, agent: str, claims: list[tuple[int, int]], reason: str,
                held: Iterable[tuple[int, int]] = ()) -> list[tuple[int, int]]:
        """Give back tasks ``agent`` claimed and did not start ((task id, dispatch) of the claims), and queue
        them again. ``held``: the (task id, dispatch) of messages the caller holds and puts back in the queue
        itself (in their places); those of the given-back tasks are returned, and every other message is
        sent."""
        recovery = self.store.release_tasks(agent, claims, reason)
        mine = set(held)
        back = [(d.task_id, d.dispatch) for d in recovery.dispatches if (d.task_id, d.dispatch) in mine]
        self._send([d for d in recovery.dispatches if (d.task_id, d.dispatch) not in mine], recovery.finalize)
        return back

    def sweep(self, queued_before: float) -> tuple[int, int]:
        """Re-send messages for runnable tasks (queued before ``queued_before``) and finishing steps the
        queue does not hold; returns how many of each."""
        dispatches, finals = self.store.queue_targets(queued_before=queued_before)
        pending_runs, pending_finals = self.queue.pending()
        missing = [d for d in dispatches if (d.task_id, d.dispatch) not in pending_runs]
        missing_finals = [j for j in finals if j not in pending_finals]
        # Tasks waiting for a concurrency limit have no message (queue_targets leaves them out, so the sweep
        # is no busy loop); those whose limit has a free slot now (a lost wake-up) are woken here.
        missing += [d for d in self.store.limits.wake_waiting() if (d.task_id, d.dispatch) not in pending_runs]
        self._send(missing, missing_finals)
        return len(missing), len(missing_finals)

    # -- concurrency limits (an administrator's actions, through the service) --------------------------
    def set_limit(self, name: str, *, type: str | None, queue: str | None, per_case: bool, max_running: int,
                  actor: str) -> None:
        """Create or change a limit; tasks that now fit are started."""
        self._send_for_limit(name, self.store.limits.save(name, type=type, queue=queue, per_case=per_case,
                                                         max_running=max_running, actor=actor))

    def delete_limit(self, name: str, actor: str) -> None:
        self._send_for_limit(name, self.store.limits.delete(name, actor=actor))

    def _send_for_limit(self, name: str, dispatches: list[Dispatch]) -> None:
        try:
            self._send(dispatches)
        except Exception as exc:  # stored; the agents' sweep wakes the waiting tasks
            reason = validate.printable(f"{type(exc).__name__}: {exc}")[:300]
            warnings.warn(QueueNotReached(f"limit {name} is stored; agents will start the waiting tasks (the "
                                          f"queue could not be written: {reason})"), stacklevel=4)

    def _apply(self, recovery: Recovery) -> Recovery:
        self._send(recovery.dispatches, recovery.finalize)
        return recovery
