"""Route each task's Python logging to its job's log, one append-only file per (job, worker thread).

Worker threads run tasks side by side, and Python logging is process-wide, so
one root handler dispatches each record to the log file of the task running on
the record's thread. Records from threads running no task pass through untouched.

A task's records go to the file its worker thread keeps open for the task's job
(:class:`SliceFiles`): creating a file per task was the largest and most erratic
per-task cost of a trivial task (0.06 to 0.8 ms of CPU, issue 18). When a task starts,
the thread appends where its part of that file starts to the file's index (see
:mod:`jobmanager.engine.tasklogs`); it ends where the next part in the same file
starts, or at the end of the file. Each record is one unbuffered ``write`` to a
descriptor opened ``O_APPEND``, so what a task wrote is in the file even if its
agent is SIGKILLed the next instant. The job's finishing step keeps its own
``finish.log`` (one per job, not a per-task cost).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobmanager.engine.tasklogs import index_file_name, index_line, slice_file_name
from jobmanager.home import Home
from jobmanager.trouble import WriteTrouble

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: files a worker thread keeps open (its most recent jobs); an older one is closed and reopened if needed
OPEN_PER_THREAD = 4
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def open_append(path: Path) -> int:
    """An append-only descriptor on ``path`` (created 0600, its folder 0700); never follows a symlink."""
    try:
        return os.open(path, _FLAGS, 0o600)
    except FileNotFoundError:  # the folder is made only when missing: one system call less per job and thread
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.open(path, _FLAGS, 0o600)


class _Target:
    """Where one thread's records go while it runs a task: a descriptor, or a path opened at the first record."""

    def __init__(self, target: Path | int, header: str) -> None:
        self.path = target if isinstance(target, Path) else None
        self.fd = target if isinstance(target, int) else None
        self.owned = self.fd is None  # a descriptor the capture opened itself is closed at its end
        self.header: str | None = header

    def write(self, text: str) -> None:
        if self.fd is None:
            assert self.path is not None
            self.fd = open_append(self.path)
        if self.header is not None:
            text, self.header = f"--- {self.header}\n{text}", None
        data = text.encode("utf-8", errors="replace")
        while data:  # a write to a regular file is whole unless the disk is full (then it raises)
            data = data[os.write(self.fd, data):]

    def close(self) -> None:
        if self.owned and self.fd is not None:
            os.close(self.fd)
            self.fd = None


class TaskLogRouter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(FORMAT))
        self._targets: dict[int, _Target] = {}
        self.trouble = WriteTrouble("cannot write a task's log: {why}; task log lines are lost until it works",
                                    "task logs are writable again")

    def emit(self, record: logging.LogRecord) -> None:
        target = self._targets.get(record.thread or 0)
        if target is None:
            return
        try:
            target.write(self.format(record) + "\n")
        except OSError:  # a full disk: the task goes on, its lines are lost meanwhile
            self.trouble.failed(target.path or "the task's log")
        except Exception:
            self.handleError(record)
        else:
            self.trouble.worked(target.path)

    def is_capturing(self, thread: int | None) -> bool:
        """True for records of a thread running a task (they go to the task's log, not the agent's)."""
        return (thread or 0) in self._targets

    @contextmanager
    def capture(self, target: Path | int, header: str) -> Iterator[None]:
        """Send this thread's records to ``target`` after a ``--- header`` line written at the first record
        (a quiet task writes nothing). A path is opened for appending at the first record and closed at
        the end; a descriptor is borrowed (the worker thread's open file for the job) and stays open."""
        ident = threading.get_ident()
        self._targets[ident] = _Target(target, header)
        try:
            yield
        finally:
            done = self._targets.pop(ident, None)
            if done is not None:
                done.close()


class SliceFiles:
    """Each worker thread's open log file per job, ``logs/jobs/<job>/<run>-<n>.log``, and its index
    ``<run>-<n>.idx`` (where each task's part starts).

    ``<run>`` is random per process (a restarted agent, or a forked worker process, never appends to a
    file an earlier process wrote, so a killed task's part runs to the end of its file) and ``<n>``
    numbers the process's threads: one writer per file, so a task's records are one contiguous part.
    Names are built from these and the job's integer id only."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pid = 0
        self._run = ""
        self._threads = 0

    def _mine(self) -> tuple[str, OrderedDict[int, tuple[int, int]]]:
        """This thread's file name and its open (log, index) descriptors by job (reset in a forked child)."""
        pid = os.getpid()
        local = self._local
        if getattr(local, "pid", None) != pid:
            with self._lock:
                if self._pid != pid:
                    self._pid, self._run, self._threads = pid, secrets.token_hex(6), 0
                self._threads += 1
                local.pid, local.name, local.files = pid, slice_file_name(self._run, self._threads), OrderedDict()
        return local.name, local.files

    def path(self, job_id: int) -> Path:
        """This thread's log file for ``job_id`` (a hard-limit task's child process appends to it)."""
        name, _ = self._mine()
        return self.home.job_logs(job_id) / name

    def _open(self, job_id: int) -> tuple[int, int]:
        """This thread's open descriptors on its log file and index for ``job_id`` (opened, and an old
        pair closed, on need)."""
        name, files = self._mine()
        fds = files.get(job_id)
        if fds is not None:
            files.move_to_end(job_id)
            return fds
        folder = self.home.job_logs(job_id)
        fd = open_append(folder / name)
        try:
            fds = fd, open_append(folder / index_file_name(name))
        except OSError:
            os.close(fd)
            raise
        files[job_id] = fds
        while len(files) > OPEN_PER_THREAD:
            for old in files.popitem(last=False)[1]:
                os.close(old)
        return fds

    def target(self, job_id: int) -> Path | int:
        """Where this thread's task of ``job_id`` logs: the open descriptor, or (if it cannot be opened now)
        the path, opened again at the first record."""
        try:
            return self._open(job_id)[0]
        except OSError:
            return self.path(job_id)

    def begin(self, job_id: int, task_id: int) -> Path | int:
        """Record that an attempt of task ``task_id`` starts here now, then return where it logs
        (:meth:`target`).

        The part's start is this thread's file size now: until the task ends nothing else writes the file
        (one writer per file). It is appended to the file's index (one line, one ``write``), so it is on
        disk before the task writes its first record, whichever thread claimed the task. If the index
        cannot be written (a full disk), the task still runs; its records then read as part of the part
        before it."""
        try:
            fd, index = self._open(job_id)
            os.write(index, index_line(task_id, os.fstat(fd).st_size, time.time()))
        except OSError:
            return self.path(job_id)
        return fd


_ROUTER: TaskLogRouter | None = None


def router() -> TaskLogRouter:
    """The process's router, installed on the root logger on first use."""
    global _ROUTER
    if _ROUTER is None:
        _ROUTER = TaskLogRouter()
        root = logging.getLogger()
        root.addHandler(_ROUTER)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
    return _ROUTER
