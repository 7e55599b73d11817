"""What a running task sees: progress, its logger, output files, cancellation, its soft time limit."""

from __future__ import annotations

import logging
import mimetypes
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobmanager.errors import BadParams
from jobmanager.home import Home, safe_name
from jobmanager.store import JobStore

#: at most one progress write per task in this many seconds (the last one always lands)
PROGRESS_EVERY_S = 0.25
#: how often ``cancelled()`` asks the store
CANCEL_CHECK_EVERY_S = 0.25


class Cancelled(Exception):
    """Raise from a task to stop it after ``ctx.cancelled()`` said so."""


class TimeLimitExceeded(Exception):
    """Raised at a task's next ``ctx.progress(...)`` or ``ctx.log.<level>(...)`` once it has run for its soft
    time limit (``ctx.cancelled()`` is true from then on). Let it propagate: the task fails "timed out after
    S s" and is retried like any failure. Clean up in ``finally`` blocks; do not log from them."""

    def __init__(self, limit: float) -> None:
        super().__init__(f"timed out after {limit:g} s")
        self.limit = limit


class TaskLogger(logging.Logger):
    """A task's logger with a soft time limit: each logging call first checks the limit (and raises
    :class:`TimeLimitExceeded` once it is over), then logs through the job type's logger as usual.

    A :class:`logging.Logger` subclass (not an adapter), so job types may hand it to any library that wants a
    Logger. It is not registered with ``logging.getLogger``: its parent is the job type's logger, so records
    carry the same name and reach the same handlers (the task's log file)."""

    def __init__(self, logger: logging.Logger, check: Callable[[], None]) -> None:
        super().__init__(logger.name)
        self.parent = logger
        self._check = check

    def debug(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        super().debug(*args, **kwargs)

    def info(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        super().info(*args, **kwargs)

    def warning(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        super().warning(*args, **kwargs)

    def error(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        super().error(*args, **kwargs)

    def exception(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        super().exception(*args, **kwargs)

    def critical(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        super().critical(*args, **kwargs)

    def log(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        super().log(*args, **kwargs)


@dataclass
class TaskContext:
    home: Home
    store: JobStore
    agent: str
    job_id: int
    task_id: int | None
    seq: int | None
    attempt: int
    job_params: dict[str, Any]
    log: logging.Logger
    owner: str = ""  # who submitted the job: jobs that read through the service act as them
    case: str | None = None  # the job's case: its inputs come from the shared folders and this case's only
    _outputs: list[tuple[str, Path, str | None]] = field(default_factory=list)
    _last_progress: float = 0.0
    _pending_progress: tuple[float, float | None] | None = None
    _last_cancel_check: float = field(default_factory=time.monotonic)  # the claim just read the task
    _cancelled: bool = False
    #: seconds this attempt may run before it is asked to stop (None: no soft limit)
    soft_limit: float | None = None
    #: when this attempt started (``time.time()``; the claim's ``started_at``), for the soft limit
    started_at: float | None = None
    #: set once ``cancelled()`` said True for the soft limit: a task that then returns has timed out
    stopped_for_time: bool = False

    def __post_init__(self) -> None:
        if self.soft_limit is not None:
            self.log = TaskLogger(self.log, self.check_time)

    def timed_out(self) -> bool:
        """True once this attempt has run for its soft limit."""
        return (self.soft_limit is not None and self.started_at is not None
                and time.time() - self.started_at >= self.soft_limit)

    def check_time(self) -> None:
        """Raise :class:`TimeLimitExceeded` once the soft limit is over (a no-op without one)."""
        if self.soft_limit is not None and self.timed_out():
            raise TimeLimitExceeded(self.soft_limit)

    _warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        """Record something the task's reader should know although it succeeded (shown with the task)."""
        self._warnings.append(message)
        self.log.warning("%s", message)
        if self.task_id is not None:
            self.store.warn_task(self.task_id, self.agent, "; ".join(self._warnings)[:2000])

    def progress(self, done: float, total: float | None = None) -> None:
        """Report in-task progress (``done`` of ``total``); cheap to call often. Raises
        :class:`TimeLimitExceeded` once the task's soft time limit is over."""
        self.check_time()
        now = time.monotonic()
        self._pending_progress = (done, total)
        if self.task_id is None or now - self._last_progress < PROGRESS_EVERY_S:
            return
        self.flush_progress()

    def flush_progress(self) -> None:
        if self._pending_progress is None or self.task_id is None:
            return
        done, total = self._pending_progress
        self._pending_progress = None
        self._last_progress = time.monotonic()
        if self.store.report_progress(self.task_id, self.agent, done, total):
            self._cancelled = True

    def cancelled(self) -> bool:
        """True once the job was cancelled (or the task taken away) or the soft time limit is over; stop soon
        when it is."""
        if self.soft_limit is not None and self.timed_out():
            self.stopped_for_time = True
            return True
        return self.cancel_requested()

    def cancel_requested(self) -> bool:
        """True once the job was cancelled (or the task taken away), whatever the time limit says."""
        if self._cancelled or self.task_id is None:
            return self._cancelled
        now = time.monotonic()
        if now - self._last_cancel_check >= CANCEL_CHECK_EVERY_S:
            self._last_cancel_check = now
            self._cancelled = self.store.cancel_requested(self.task_id)
        return self._cancelled

    def input_path(self, name: str, base_dir: str | None = None, *, notebook: bool = False) -> Path:
        """The real path of an input this job may read (see :meth:`Home.resolve_input`); else one refusal line."""
        return self.home.resolve_input(name, case=self.case, base_dir=base_dir,
                                       kind="notebook" if notebook else "input")

    def output_path(self, name: str, media_type: str | None = None) -> Path:
        """A path under the job's artifacts folder; the file is recorded if the task succeeds."""
        clean = safe_name(name)
        if clean != name or name in ("", ".", ".."):
            raise BadParams(f"artifact name {name!r} is not a plain file name")
        folder = self.home.job_artifacts(self.job_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / clean
        self._outputs.append((clean, path, media_type))
        return path

    def record_outputs(self) -> None:
        for name, path, media_type in self._outputs:
            if path.is_file():
                kind = media_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
                self.store.add_artifact(
                    self.job_id, self.task_id, name, self.home.relative(path), kind, path.stat().st_size
                )
