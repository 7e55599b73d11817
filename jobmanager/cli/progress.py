"""``jobmanager wait``'s progress: a live bar on a terminal, plain lines when stderr is piped.

Progress goes to stderr so stdout keeps exactly what scripts read: the job's final state.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

from jobmanager.models import Job
from jobmanager.validate import printable

#: plain (piped) lines: at most one per this many seconds unless the counts change
PLAIN_EVERY_S = 10.0
#: a terminal bar is redrawn at most this often
BAR_EVERY_S = 0.2


class Progress:
    """Called with the job at every poll of :meth:`JobManager.wait`; draws what changed."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.started = time.monotonic()
        self.first_done: int | None = None
        self.last_line = ""
        self.last_at = 0.0
        self.drawn = False

    def __call__(self, job: Job) -> None:
        now = time.monotonic()
        if self.first_done is None:
            self.first_done = job.tasks_done
        line = self.describe(job, now)
        if self.tty:
            if now - self.last_at < BAR_EVERY_S and line == self.last_line:
                return
            width = shutil.get_terminal_size((80, 24)).columns
            self.stream.write("\r" + line[: width - 1].ljust(min(len(self.last_line), width - 1)))
            self.drawn = True
        else:
            plain = line.split("] ", 1)[-1]
            if plain == self.last_line.split("] ", 1)[-1] and now - self.last_at < PLAIN_EVERY_S:
                return
            self.stream.write(f"job {job.id}: {plain}\n")
        self.stream.flush()
        self.last_line, self.last_at = line, now

    def done(self) -> None:
        """End the bar's line so the final state starts on a fresh one."""
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()

    def describe(self, job: Job, now: float) -> str:
        total, done = job.tasks_total, job.tasks_done
        failed = job.tasks_failed + job.tasks_cancelled
        width = 24
        filled = int(width * (done / total)) if total else 0
        bar = "#" * filled + "-" * (width - filled)
        parts = [f"{done}/{total} tasks", job.state]
        if failed:
            parts.append(f"{failed} failed")
        eta = self.eta(done, total, now)
        if eta:
            parts.append(f"ETA {eta}")
        return f"[{bar}] {printable(', '.join(parts))}"

    def eta(self, done: int, total: int, now: float) -> str | None:
        """Remaining time at the rate seen since waiting began (None until a task ended meanwhile)."""
        finished = done - (self.first_done or 0)
        if finished <= 0 or done >= total:
            return None
        seconds = (now - self.started) / finished * (total - done)
        minutes, secs = divmod(int(seconds + 0.5), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
