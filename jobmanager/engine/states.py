"""Job and task states, and which tab each belongs to.

The state machine itself lives in the store (each transition is one conditional
UPDATE); this module only names the states so every layer spells them the same.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRYING = "retrying"
    CANCELLED = "cancelled"


class AgentState(StrEnum):
    """What an agent row says; ``busy``/``idle`` are derived on read."""

    ONLINE = "online"
    LOST = "lost"
    OFFLINE = "offline"


IN_PROGRESS: tuple[str, ...] = ("queued", "running", "paused")
FINISHED: tuple[str, ...] = ("completed", "completed_with_errors", "failed", "cancelled")
JOB_STATES: tuple[str, ...] = tuple(s.value for s in JobState)
TASK_STATES: tuple[str, ...] = tuple(s.value for s in TaskState)

#: task states from which an agent may claim the task
RUNNABLE_TASK: tuple[str, ...] = ("queued", "retrying")
#: task states that are over (nothing more will happen unless retried)
DONE_TASK: tuple[str, ...] = ("succeeded", "failed", "cancelled")

TABS: dict[str, tuple[str, ...]] = {
    "in-progress": IN_PROGRESS,
    "completed": FINISHED,
}


def tab_states(tab: str) -> tuple[str, ...]:
    """The job states shown on a tab (``in-progress`` or ``completed``)."""
    key = tab.replace("_", "-").lower()
    if key not in TABS:
        from jobmanager.errors import BadParams

        raise BadParams(f"unknown tab {tab!r}: choose one of {', '.join(TABS)}")
    return TABS[key]
