"""Job types: a registry filled by the ``@job_type`` decorator.

A job type is a class with a pydantic ``Params`` model, a ``plan`` that turns
parameters into tasks, a ``run`` for one task, and optionally a ``finish`` run
once after all tasks are over (e.g. merging PDFs). Types are discovered from
the ``jobmanager.job_types`` entry points and from modules named with
``--import`` (or ``imports`` in the home's configuration).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pydantic

from jobmanager import validate as check
from jobmanager.auth.permissions import PERMISSIONS
from jobmanager.errors import BadParams
from jobmanager.models import JobOptions, NewTask
from jobmanager.notify import rules as notify_rules

if TYPE_CHECKING:
    from jobmanager.engine.context import TaskContext
    from jobmanager.home import Home

ENTRY_POINT_GROUP = "jobmanager.job_types"

#: a job type's parameters model: ``class Sleep(JobType[SleepParams])`` types its methods' ``params``
P = TypeVar("P", bound=pydantic.BaseModel)


class JobType(Generic[P]):
    """Base class of job types. Subclass (``JobType[MyParams]``), set ``Params``, and decorate with @job_type."""

    #: registered name, set by the decorator
    name: str = ""
    #: automatic retries of a failed task (attempts = 1 + retries)
    retries: int = 0
    #: the parameters, validated before anything is stored
    Params: type[pydantic.BaseModel] = pydantic.BaseModel
    #: a permission needed, besides ``submit_jobs``, to submit a job of this type or to create, edit or run a
    #: schedule of it (``notebook`` runs code on the agents: ``run_notebooks``); None = submit_jobs is enough
    requires: str | None = None
    #: the queue its jobs go to unless the job or schedule names another
    queue: str = "default"
    #: seconds a task may run before it is asked to stop (``ctx.cancelled()``, TimeLimitExceeded), None: never
    soft_limit: float | None = None
    #: seconds after which a task is ended whatever it does, None: never (see the agent's time limits)
    hard_limit: float | None = None
    #: times a task may lose its agent (killed, crashed) and run again before it fails as a poison task
    max_losses: int = 3
    #: False: a task whose agent was lost fails at once instead of running again (it may have done half)
    rerun_safe: bool = True
    #: notification rules of every job of this type, e.g. ``[{"on": ["failed"], "to": "mailto:ops@example.org"}]``
    #: (see :mod:`jobmanager.notify.rules`); a job's and a schedule's own rules are added to these
    notify: list[dict[str, Any]] = []

    def plan(self, params: P) -> list[NewTask]:
        """The tasks of a job with these parameters (at least one)."""
        return [NewTask("task", {})]

    def run(self, ctx: "TaskContext", params: P, task: dict[str, Any]) -> None:
        """Run one task. Raise to fail it; check ``ctx.cancelled()`` in long loops."""
        raise NotImplementedError

    @classmethod
    def submit_actions(cls) -> tuple[str, ...]:
        """What submitting a job of this type takes, the one place this rule is written: the ``submit``
        action and the type's own ``requires`` (checked by the service and again at each schedule run)."""
        return ("submit",) if cls.requires is None else ("submit", cls.requires)

    def check_inputs(self, home: "Home", params: P, case: str | None) -> None:
        """Optional: refuse at submit (one line) the input files a job of ``case`` may not read."""

    @classmethod
    def has_finish(cls) -> bool:
        return cls.finish is not JobType.finish

    def finish(self, ctx: "TaskContext", params: P) -> None:
        """Optional: run once all tasks are over (only if at least one succeeded)."""


_REGISTRY: dict[str, type[JobType]] = {}
_LOCK = threading.Lock()
_DISCOVERED = False
#: the modules ``discover`` imported, in order: what a task's child process imports (engine/child.py)
_IMPORTED: list[str] = []

T = TypeVar("T", bound=type[JobType])


def job_type(name: str) -> Callable[[T], T]:
    """Register a job type class under ``name``."""

    def register(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, JobType)):
            raise TypeError("@job_type decorates a JobType subclass")
        if cls.requires is not None and cls.requires not in PERMISSIONS:
            raise TypeError(f"job type {name!r} requires {cls.requires!r}, which is not a permission")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return register


def discover(imports: list[str] | tuple[str, ...] = ()) -> None:
    """Load entry-point job types (once) and import the named modules."""
    global _DISCOVERED
    with _LOCK:
        if not _DISCOVERED:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                ep.load()
            _DISCOVERED = True
    for module in imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise BadParams(f"cannot import job type module {module!r}: {exc}") from None
        if module not in _IMPORTED:
            _IMPORTED.append(module)


def imported() -> tuple[str, ...]:
    """The modules named to :func:`discover` so far (a child process running a task imports the same)."""
    return tuple(_IMPORTED)


def registered() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str | None) -> JobType:
    """The registered job type ``name``; BadParams names the known ones (also for a missing name)."""
    cls = None if name is None else _REGISTRY.get(name)
    if cls is None:
        known = ", ".join(registered()) or "none"
        raise BadParams(f"unknown job type {name!r} (known: {known})")
    return cls()


#: the job options a job or a schedule may override (``options()``'s keyword arguments)
OVERRIDABLE = ("queue", "soft_limit", "hard_limit", "notify")


def options(jt: JobType, **overrides: Any) -> JobOptions:
    """A job's options: the type's defaults, then the job's (or schedule's) overrides, each checked
    (one line for a bad one). The one place these rules are written."""
    unknown = set(overrides) - set(OVERRIDABLE)
    if unknown:
        raise BadParams(f"unknown job options: {', '.join(sorted(unknown))} (known: {', '.join(OVERRIDABLE)})")
    given = {k: v for k, v in overrides.items() if v is not None}
    queue = check.queue_name(given.get("queue", jt.queue))
    soft = check.time_limit(given.get("soft_limit", jt.soft_limit), "soft time limit")
    hard = check.time_limit(given.get("hard_limit", jt.hard_limit), "hard time limit")
    if soft is not None and hard is not None and hard < soft:
        raise BadParams(f"the hard time limit ({hard:g} s) is shorter than the soft one ({soft:g} s)")
    notify = notify_rules.merge(notify_rules.check_rules(jt.notify, f"{jt.name}.notify"),
                                notify_rules.check_rules(given.get("notify"), "notify"))
    return JobOptions(queue=queue, soft_limit=soft, hard_limit=hard,
                      max_losses=check.integer(jt.max_losses, "max_losses", 1, 1000),
                      rerun_safe=bool(jt.rerun_safe), notify=tuple(notify))


def validate(jt: JobType, params: dict[str, Any]) -> pydantic.BaseModel:
    """Parameters checked against the type's model; one readable line on error."""
    if not isinstance(params, dict):
        raise BadParams(f"parameters for {jt.name} must be a JSON object, not {type(params).__name__}")
    try:
        return jt.Params.model_validate(params)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in exc.errors()
        )
        raise BadParams(f"bad parameters for {jt.name}: {problems}") from None
