"""Storage trouble: naming what is wrong in one line, and reporting it without a flood.

A full disk, a permission problem and a file that is not a store need different fixes, so they
get different words: "disk full writing PATH", "permission denied opening PATH", "PATH is not a
Job Manager store". SQLite often reports a full disk as "disk I/O error" (it could not grow its
shared-memory file), so when it says so the file system is asked how much room is left.

:class:`TroubleLog` is how an agent's background loops report a failure that repeats: the first
time it says what is wrong (one line), then at most a reminder a minute, and once when it is
over; :class:`Backoff` spaces the retries (0.5 s doubling to 30 s). A full disk once made an agent
log about 40 tracebacks a second.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from jobmanager.errors import JobManagerError

#: below this many free bytes, an I/O error on a file system is taken for a full disk
LOW_SPACE_BYTES = 1 << 20
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}


def _free_bytes(path: Path) -> int | None:
    for folder in (path, *path.parents):
        try:
            st = os.statvfs(folder)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize
    return None


def _whoami() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return f"uid {os.geteuid()}"


def _denied_file(path: Path) -> tuple[str, Path] | None:
    """The first file (or folder) of an SQLite database this process may not use, and how."""
    folder = path.parent
    if not os.access(folder, os.X_OK):
        return "opening", folder
    for f in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if f.exists() and not os.access(f, os.R_OK):
            return "reading", f
        if f.exists() and not os.access(f, os.W_OK):
            return "writing", f
    if not os.access(folder, os.W_OK):  # WAL mode creates -wal and -shm files next to the database
        return "writing", folder
    return None


def storage_problem(exc: BaseException, path: str | os.PathLike[str] | None) -> str | None:
    """One line saying what is wrong, for a full disk or a permission problem; None for anything else.

    ``path`` is the file being used (a database, a log) or, for a server, its redacted URL.
    """
    where = str(path) if path is not None else "?"
    if isinstance(exc, OSError) and exc.errno is not None:
        name = exc.filename or where
        if exc.errno in _DISK_FULL:
            return f"disk full writing {name}: {exc.strerror}"
        if exc.errno in _DENIED:
            return f"permission denied using {name}: {exc.strerror} (running as {_whoami()})"
        return None
    code = getattr(exc, "sqlite_errorname", None)
    if code is not None:  # sqlite3.Error
        file = Path(where)
        if code == "SQLITE_FULL":
            return f"disk full writing {file}: {exc}"
        if code.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")):
            denied = _denied_file(file)
            if denied is not None:
                how, what = denied
                return f"permission denied {how} {what} (running as {_whoami()}; the store needs read and write " \
                       f"access to it, its -wal and -shm files and its folder)"
            free = _free_bytes(file)
            if code.startswith("SQLITE_IOERR") and free is not None and free < LOW_SPACE_BYTES:
                return f"disk full writing {file}: {exc} ({free} bytes free)"
            if code.startswith("SQLITE_READONLY"):
                return f"cannot write {file}: {exc}"
        return None
    sqlstate = getattr(exc, "sqlstate", None)  # psycopg.Error
    if sqlstate == "53100":
        return f"disk full on the PostgreSQL server of {where}: {_first_line(exc)}"
    if sqlstate == "42501":
        return f"permission denied in {where}: {_first_line(exc)}"
    return None


def describe(exc: BaseException, path: str | os.PathLike[str] | None) -> str:
    """:func:`storage_problem`, or the error's type and first line."""
    return storage_problem(exc, path) or f"{type(exc).__name__}: {_first_line(exc)} ({path})"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class Backoff:
    """The wait before the next try after ``n`` failures in a row: ``first * 2**(n-1)``, at most ``cap``."""

    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self.first, self.cap = first, cap
        self.failures = 0
        self._lock = threading.Lock()

    def failed(self) -> float:
        with self._lock:
            self.failures += 1
            return min(self.cap, self.first * 2 ** min(self.failures - 1, 30))

    def reset(self) -> None:
        with self._lock:
            self.failures = 0


class TroubleLog:
    """Says once what is wrong, then a reminder at most every ``remind_s``, and once when it is over.

    Each activity (``"heartbeat"``, ``"queue"``...) reports :meth:`failed` or :meth:`ok` after every
    try; activities failing for the same reason share one message. A failure that is not a storage
    problem (a bug) keeps its traceback, once per distinct message.
    """

    def __init__(self, logger: logging.Logger, remind_s: float = 60.0) -> None:
        self.log = logger
        self.remind_s = remind_s
        self._lock = threading.Lock()
        self._failing: dict[str, tuple[str, float]] = {}  # activity -> (what is wrong, since)
        self._said: dict[str, float] = {}  # what is wrong -> when last logged
        self._count: dict[str, int] = {}  # what is wrong -> failed tries since last logged
        self._storage: set[str] = set()  # activities failing for want of storage (storage_problem)

    def failed(self, activity: str, exc: BaseException, path: Any) -> None:
        problem = storage_problem(exc, path)
        storage = problem is not None
        if problem is None and isinstance(exc, JobManagerError):  # already one line that says what is wrong
            problem = str(exc)
        what = problem or describe(exc, path)
        now = time.monotonic()
        with self._lock:
            (self._storage.add if storage else self._storage.discard)(activity)
            if activity not in self._failing or self._failing[activity][0] != what:
                self._failing[activity] = (what, now)
            self._count[what] = self._count.get(what, 0) + 1
            last = self._said.get(what)
            if last is not None and now - last < self.remind_s:
                return
            since = min(t for w, t in self._failing.values() if w == what)
            tries, self._count[what] = self._count[what], 0
            self._said[what] = now
        if last is None:
            self.log.error("%s; retrying with back-off (%s)", what, activity,
                           exc_info=None if problem else exc)
        else:
            self.log.error("still failing after %.0f s (%d tries since the last message): %s",
                           now - since, tries, what)

    def ok(self, activity: str) -> None:
        with self._lock:
            if activity not in self._failing:
                return
            what, since = self._failing.pop(activity)
            self._storage.discard(activity)
            if any(w == what for w, _ in self._failing.values()):
                return  # another activity still fails for the same reason: say "over" once, at the end
            self._said.pop(what, None)
            self._count.pop(what, None)
        self.log.warning("recovered after %.0f s: %s", time.monotonic() - since, what)

    def storage_failing(self, besides: str | None = None) -> bool:
        """Whether an activity (other than ``besides``) is failing now for want of storage (a full disk)."""
        with self._lock:
            return any(activity != besides for activity in self._storage)


class WriteTrouble:
    """A log file that cannot be written (a full disk): said once on stderr, with why, and once when it has
    been written again for ``settle_s`` (on a full disk a short line still fits now and then in a file's
    last block: that is not over yet); never a "--- Logging error ---" traceback for each record."""

    def __init__(self, failed: str, recovered: str, settle_s: float = 5.0) -> None:
        #: the two lines, with ``{why}`` and ``{path}`` to fill in
        self.failed_line, self.recovered_line = failed, recovered
        self.settle_s = settle_s
        self.failing = False
        self._last_failed = 0.0

    def failed(self, path: str | os.PathLike[str] | None) -> None:
        """Call in the ``except`` of the failed write."""
        self._last_failed = time.monotonic()
        if not self.failing:
            self.failing = True
            exc = sys.exc_info()[1]
            why = describe(exc, path) if exc is not None else "unknown error"
            sys.stderr.write(self.failed_line.format(why=why, path=path) + "\n")

    def worked(self, path: object) -> None:
        if self.failing and time.monotonic() - self._last_failed >= self.settle_s:
            self.failing = False
            sys.stderr.write(self.recovered_line.format(path=path) + "\n")
