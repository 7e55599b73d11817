"""The Permissions List and the actions they allow, as data.

Adding a permission is one line in :data:`PERMISSIONS`; an action names the
permission it needs in :data:`ACTIONS`. Every check is one call,
:func:`allowed`, made by the service whatever interface called it.

Cases scope what a user sees: a job (or schedule, or output) with a case is
visible only to users one of whose groups holds that case (``*`` holds all);
jobs without a case are visible to everyone with view rights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: name -> what it lets a group do (the README's "Permissions List")
PERMISSIONS: dict[str, str] = {
    "view_own_jobs": "See the jobs you submitted, their tasks, events and state",
    "view_all_jobs": "See every job of your groups' cases (and jobs without a case)",
    "submit_jobs": "Submit new jobs",
    "run_notebooks": "Run notebooks on the agents (code execution): submit notebook jobs and schedules",
    "manage_jobs": "Pause, resume and cancel jobs, and change their priority",
    "retry_tasks": "Retry the failed tasks of a job",
    "download_logs": "Read and download job logs",
    "download_outputs": "Download job outputs (PDFs, exports, executed notebooks)",
    "view_schedules": "See scheduled jobs and where each is configured",
    "manage_schedules": "Create, edit, enable, disable, delete and run schedules (these, except disable and "
                        "delete, also need the submit rights for the schedule's job type; a schedule runs as "
                        "whoever last created, edited or enabled it)",
    "view_agents": "See agents, their status, load and logs",
    "manage_agents": "Stop (drain) agents",
    "admin": "Administer users, groups, permissions and cases; read the audit trail",
}

#: action -> the permission it needs (``view`` is satisfied by either view permission)
ACTIONS: dict[str, str] = {
    "view": "view_own_jobs",
    "submit": "submit_jobs",
    "manage": "manage_jobs",
    "retry": "retry_tasks",
    "download_log": "download_logs",
    "download_output": "download_outputs",
    "view_schedules": "view_schedules",
    "manage_schedules": "manage_schedules",
    "view_agents": "view_agents",
    "manage_agents": "manage_agents",
    "admin": "admin",
}

#: what the groups made by ``jobmanager init`` and the demo hold
DEFAULT_GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "admins": (list(PERMISSIONS), ["*"]),
    "operators": (["view_all_jobs", "submit_jobs", "manage_jobs", "retry_tasks", "download_logs",
                   "download_outputs", "view_schedules", "manage_schedules", "view_agents", "manage_agents"], ["*"]),
    "analysts": (["view_own_jobs", "view_all_jobs", "submit_jobs", "download_logs", "download_outputs",
                  "view_schedules"], []),
}


@dataclass(frozen=True)
class Actor:
    """Who is acting: their permissions and cases (the union over their groups)."""

    username: str
    permissions: frozenset[str] = field(default_factory=frozenset)
    cases: frozenset[str] = field(default_factory=frozenset)
    interface: str = "python"

    @property
    def all_cases(self) -> bool:
        return "*" in self.cases

    def can(self, permission: str) -> bool:
        return permission in self.permissions or "admin" in self.permissions

    def sees_case(self, case: str | None) -> bool:
        return case is None or self.all_cases or case in self.cases or "admin" in self.permissions

    def sees_job(self, owner: str, case: str | None) -> bool:
        if owner == self.username and self.can("view_own_jobs"):
            return True
        return self.can("view_all_jobs") and self.sees_case(case)

    def scope(self) -> dict[str, Any]:
        """The visibility rule as plain data, for the store to turn into bound SQL parameters."""
        return {
            "user": self.username,
            "own": self.can("view_own_jobs"),
            "all": self.can("view_all_jobs"),
            "cases": None if (self.all_cases or "admin" in self.permissions) else sorted(self.cases),
        }


def needs(action: str) -> str:
    """The permission an action needs; a permission named directly (a job type's ``requires``) needs itself."""
    if action in ACTIONS:
        return ACTIONS[action]
    if action in PERMISSIONS:
        return action
    raise KeyError(f"unknown action {action!r}")


def allowed(actor: Actor, action: str, owner: str | None = None, case: str | None = None) -> bool:
    """Whether ``actor`` may do ``action`` (on a job of ``owner`` and ``case`` when given)."""
    permission = needs(action)
    if action == "view":
        can = actor.can("view_own_jobs") or actor.can("view_all_jobs")
    else:
        can = actor.can(permission)
    if not can:
        return False
    if owner is not None:
        return actor.sees_job(owner, case)
    if case is not None:
        return actor.sees_case(case)
    return True
