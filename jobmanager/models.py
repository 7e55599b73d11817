"""Plain records passed between the store, the service and its clients."""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class NewTask:
    """A task as a job type plans it: a display name and its own parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Task:
    id: int
    job_id: int
    seq: int
    name: str
    params: dict[str, Any]
    state: str
    attempts: int
    max_attempts: int
    dispatch: int
    agent: str | None
    progress_done: float | None
    progress_total: float | None
    cancel_requested: bool
    error: str | None
    traceback: str | None
    queued_at: float | None
    started_at: float | None
    finished_at: float | None
    #: times an agent was lost (crashed, killed) while running this task; a loss spends no attempt
    losses: int = 0
    #: why a runnable task is not starting (e.g. a concurrency limit is full), for display
    waiting: str | None = None
    #: what a task that succeeded wants its reader to know (e.g. characters no font could draw)
    warning: str | None = None
    #: each ended attempt's part of its thread's log file (earlier layouts: where it started), one token an
    #: attempt (jobmanager/engine/tasklogs.py)
    log_slices: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Job:
    id: int
    type: str
    name: str
    params: dict[str, Any]
    owner: str
    case: str | None
    priority: int
    state: str
    retries: int
    has_finish: bool
    finisher: str | None
    tasks_total: int
    tasks_succeeded: int
    tasks_failed: int
    tasks_cancelled: int
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    progress: float = 0.0
    schedule_id: int | None = None
    queue: str = "default"
    soft_limit: float | None = None
    hard_limit: float | None = None
    max_losses: int = 3
    rerun_safe: bool = True
    notify: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)

    @property
    def tasks_done(self) -> int:
        """Tasks that are over, whatever their result."""
        return self.tasks_succeeded + self.tasks_failed + self.tasks_cancelled

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tasks_done"] = self.tasks_done
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


@dataclass(frozen=True)
class JobOptions:
    """How the engine treats a job's tasks, fixed when the job is stored (see ``jobtypes.options``).

    ``soft_limit``/``hard_limit`` are seconds per task attempt (None: none); ``max_losses`` is how many
    times a task may lose its agent before it fails as a poison task; ``rerun_safe`` False fails a lost
    task at once; ``notify`` lists the job's notification rules (``{"on": [...], "to": "..."}``).
    """

    queue: str = "default"
    soft_limit: float | None = None
    hard_limit: float | None = None
    max_losses: int = 3
    rerun_safe: bool = True
    notify: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class NewJob:
    """A job checked and planned by the service, as the store inserts it (``JobStore.create_jobs``)."""

    type: str
    name: str
    params: dict[str, Any]
    owner: str
    case: str | None
    priority: int
    retries: int
    has_finish: bool
    tasks: list[NewTask]
    actor: str
    options: JobOptions = JobOptions()


@dataclass(frozen=True)
class Dispatch:
    """A queue message to send: run task ``task_id`` if its dispatch is still ``dispatch``.

    The counter makes messages idempotent: every re-enqueue bumps it, so an older
    copy of the message still sitting in the queue is recognised as stale and dropped.
    """

    task_id: int
    dispatch: int
    priority: int = 0
    #: the job's queue: the message goes to the Huey queue of this name (see ``engine/queue.py``)
    queue: str = "default"
    #: the task's job, carried in the message as a hint the claim checks (PostgreSQL then claims without
    #: reading the task first); None: a message without it, claimed as before
    job_id: int | None = None


@dataclass
class Claim:
    """What an agent gets when it wins a task: the task and its job."""

    task: Task
    job: Job


class Later(enum.Enum):
    """What :meth:`JobStore.claim_tasks` answers for a task of a batch it leaves to be claimed when it starts."""

    LATER = "later"


LATER = Later.LATER


@dataclass
class Outcome:
    """What the store decided when a task ended.

    ``retry`` is a message to enqueue (the task failed with attempts left);
    ``finalize`` says this agent won the job's finishing step and must run it now;
    ``wake`` are messages for tasks that waited for the concurrency-limit slot this task freed.
    """

    recorded: bool = True
    retry: Dispatch | None = None
    finalize: bool = False
    job_state: str | None = None
    wake: list[Dispatch] = field(default_factory=list)


@dataclass
class Recovery:
    """What a sweep of lost agents decided: agents marked lost, messages to resend."""

    lost: list[str] = field(default_factory=list)
    dispatches: list[Dispatch] = field(default_factory=list)
    finalize: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Finish:
    """How a task ended, as a worker hands it to the batched completer (``engine/completer.py``)."""

    task_id: int
    state: str
    error: str | None = None
    traceback: str | None = None
    #: when the task ended (its ``finished_at``), not when the batch was written
    at: float = 0.0
    #: the dispatch the task was claimed with: every hand-back or retry bumps it, so an outcome held while
    #: the store was away is never written over a later claim of the same task by the same agent (which the
    #: attempt number cannot tell: a loss spends no attempt); None: not checked
    dispatch: int | None = None
    #: when a task claimed with a batch began (its ``started_at`` until then is its claim's); None: at its claim
    started_at: float | None = None
    #: the attempt's exact part of its thread's log file, appended to the task's ``log_slices``
    #: (jobmanager/engine/tasklogs.py); None: nothing to record
    log_part: str | None = None


@dataclass
class Completed:
    """What the store decided for one batch of finished tasks (:meth:`JobStore.finish_tasks`).

    ``recorded`` are the tasks written (a task another agent took back meanwhile is left out);
    ``dispatches`` are messages to send (retries and tasks woken by freed limit slots); ``finalize``
    are jobs whose finishing step is now due (sent as finalize messages, run by whichever worker
    takes one); ``job_states`` the jobs this batch finished, with their final state.
    """

    recorded: list[int] = field(default_factory=list)
    dispatches: list[Dispatch] = field(default_factory=list)
    finalize: list[int] = field(default_factory=list)
    job_states: dict[int, str] = field(default_factory=dict)
