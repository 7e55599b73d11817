"""Route each task's Python logging to its worker thread's log file: one append-only file per thread.

Worker threads run tasks side by side, and Python logging is process-wide, so
one root handler dispatches each record to the log file of the task running on
the record's thread. Records from threads running no task pass through untouched.

A task's records go to the one file its worker thread appends every task to, whatever the job
(:class:`SliceFiles`): creating a file per task, and then a folder and files per job, was the
largest per-task cost of trivial tasks (issue 18). When a task starts, the thread appends where its
part of that file starts to the thread's index; when it ends, its exact range goes to the store with
its outcome (see :mod:`jobmanager.engine.tasklogs`). Each record is one unbuffered ``write`` to a
descriptor opened ``O_APPEND``, so what a task wrote is in the file even if its agent is SIGKILLed
the next instant. The job's finishing step keeps its own ``finish.log`` in the job's folder (one per
job, not a per-task cost).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from jobmanager.engine.tasklogs import index_file_name, index_line, part_token, slice_file_name
from jobmanager.home import Home
from jobmanager.trouble import WriteTrouble

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def open_append(path: Path) -> int:
    """An append-only descriptor on ``path`` (created 0600, its folder 0700); never follows a symlink."""
    try:
        return os.open(path, _FLAGS, 0o600)
    except FileNotFoundError:  # the folder is made only when missing: one system call less per file
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
        the end; a descriptor is borrowed (the worker thread's open file) and stays open."""
        ident = threading.get_ident()
        self._targets[ident] = _Target(target, header)
        try:
            yield
        finally:
            done = self._targets.pop(ident, None)
            if done is not None:
                done.close()


@dataclass(frozen=True)
class Begun:
    """An attempt's part as its start recorded it: where the task logs (the open descriptor, or the path
    opened at its first record) and where in which thread file its records start."""

    target: Path | int
    name: str
    start: int
    at: float


class SliceFiles:
    """Each worker thread's one log file for every task it runs, ``logs/threads/<run>-<n>.log``, and its
    index ``<run>-<n>.idx`` (where each attempt's part starts: job, task, time, offset).

    ``<run>`` is random per process (a restarted agent, or a forked worker process, never appends to a
    file an earlier process wrote, so a killed task's part runs to the end of its dead process's file) and
    ``<n>`` numbers the process's files: one writer per file, so a task's records are one contiguous part,
    and one part follows another. Nothing is created per job or per task: a new job costs no folder and no
    file (on ext4 creating them was most of a small job's agent time, issue 18). When an attempt ends, its
    exact range goes to the store with its outcome (:meth:`end`); the index finds the parts whose outcome
    was never written (a running task, an agent killed before its completer wrote).

    If a start cannot be written to the index (a full disk), the thread leaves both files for new ones
    before the task writes anything: a part found through an index then always ends where the next part of
    its file starts, or at the end of a file nobody appends to after it, never inside another job's part.
    """

    def __init__(self, home: Home) -> None:
        self.home = home
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pid = 0
        self._run = ""
        self._files = 0

    def _mine(self) -> threading.local:
        """This thread's state: its file name and open (log, index) descriptors (reset in a forked child)."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.pid, local.fds = os.getpid(), None
            self._new_name(local)
        return local

    def run(self) -> str:
        """This process's run: the prefix of its files' names (a claim records it, see
        :meth:`jobmanager.store.base.JobStore.claim_task`)."""
        with self._lock:
            return self._run_locked()

    def _run_locked(self) -> str:
        if self._pid != os.getpid():  # a forked process starts a run of its own
            self._pid, self._run, self._files = os.getpid(), secrets.token_hex(6), 0
        return self._run

    def _new_name(self, local: threading.local) -> None:
        with self._lock:
            run = self._run_locked()
            self._files += 1
            local.name = slice_file_name(run, self._files)

    def path(self) -> Path:
        """This thread's log file (a hard-limit task's child process appends to it)."""
        return self.home.thread_logs / self._mine().name

    def _open(self) -> tuple[int, int]:
        """This thread's open descriptors on its log file and its index (opened on first use)."""
        local = self._mine()
        if local.fds is None:
            folder = self.home.thread_logs
            fd = open_append(folder / local.name)
            try:
                local.fds = fd, open_append(folder / index_file_name(local.name))
            except OSError:
                os.close(fd)
                raise
        fds: tuple[int, int] = local.fds
        return fds

    def _leave(self) -> None:
        """Close this thread's files and take a new name: the next task starts a new pair."""
        local = self._mine()
        if local.fds is not None:
            for fd in local.fds:
                os.close(fd)
            local.fds = None
        self._new_name(local)

    def target(self) -> Path | int:
        """Where this thread's records go now: the open descriptor, or (if it cannot be opened now) the
        path, opened again at the first record."""
        try:
            return self._open()[0]
        except OSError:
            return self.path()

    def begin(self, job_id: int, task_id: int) -> Begun:
        """Record that an attempt of task ``task_id`` of job ``job_id`` starts here now; return where it logs.

        The part's start is this thread's file size now: until the task ends nothing else writes the file
        (one writer per file). It is appended to the index (one line, one ``write``), so it is on disk
        before the task writes its first record. If that fails, the thread moves to new files first (see
        the class); the task still runs, and its range is still recorded with its outcome."""
        at = time.time()
        try:
            fd, index = self._open()
            start = os.fstat(fd).st_size
            line = index_line(job_id, task_id, start, at)
            if os.write(index, line) != len(line):  # a short write (a full disk): the index is unreliable
                raise OSError("short write")
        except OSError:
            self._leave()
            return Begun(self.target(), self._mine().name, 0, at)
        return Begun(fd, self._mine().name, start, at)

    def end(self, begun: Begun) -> str | None:
        """The attempt's exact part, for its outcome (``tasks.log_slices``); None if its file is gone."""
        try:
            if isinstance(begun.target, int):
                size = os.fstat(begun.target).st_size
            else:
                size = os.lstat(self.home.thread_logs / begun.name).st_size
        except OSError:
            return None
        return part_token(begun.name, begun.at, begun.start, size)


_ROUTER: TaskLogRouter | None = None


def router() -> TaskLogRouter:
    """The process's router, installed on the root logger on first use."""
    global _ROUTER
    if _ROUTER is None:
        _ROUTER = TaskLogRouter()
        # A process a task forks (a multiprocessing pool it keeps) must not log into its parent thread's
        # file: that thread goes on to other jobs' tasks. A child that runs a task captures its own.
        os.register_at_fork(after_in_child=_ROUTER._targets.clear)
        root = logging.getLogger()
        root.addHandler(_ROUTER)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
    return _ROUTER
