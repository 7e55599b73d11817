"""What a running task sees: progress, its logger, output files, cancellation."""

from __future__ import annotations

import logging
import mimetypes
import time
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
    _warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        """Record something the task's reader should know although it succeeded (shown with the task)."""
        self._warnings.append(message)
        self.log.warning("%s", message)
        if self.task_id is not None:
            self.store.warn_task(self.task_id, self.agent, "; ".join(self._warnings)[:2000])

    def progress(self, done: float, total: float | None = None) -> None:
        """Report in-task progress (``done`` of ``total``); cheap to call often."""
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
        """True once the job was cancelled (or the task taken away); stop soon when it is."""
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
