"""Route each task's Python logging to its own file.

Worker threads run tasks side by side, and Python logging is process-wide, so
one root handler dispatches each record to the file of the task running on the
record's thread. Records from threads running no task pass through untouched.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class TaskLogRouter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._files: dict[int, logging.FileHandler] = {}
        self._pending: dict[int, tuple[Path, str]] = {}
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        ident = record.thread or 0
        handler = self._files.get(ident)
        if handler is None and ident in self._pending:
            handler = self._open(ident)
        if handler is not None:
            handler.emit(record)

    def _open(self, ident: int) -> logging.FileHandler:
        """Create the task's file at its first record: a quiet task costs no file (measured: ~40% of the
        per-task overhead of a trivial task was creating its log file)."""
        path, header = self._pending.pop(ident)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter(FORMAT))
        assert handler.stream is not None  # opened by the constructor (delay=False)
        handler.stream.write(f"--- {header}\n")
        self._files[ident] = handler
        return handler

    def is_capturing(self, thread: int | None) -> bool:
        """True for records of a thread running a task (they go to the task's file, not the agent's)."""
        return (thread or 0) in self._files or (thread or 0) in self._pending

    @contextmanager
    def capture(self, path: Path, header: str) -> Iterator[None]:
        """Send this thread's records to ``path`` (created at the first record, appended on retries)."""
        ident = threading.get_ident()
        self._pending[ident] = (path, header)
        try:
            yield
        finally:
            self._pending.pop(ident, None)
            handler = self._files.pop(ident, None)
            if handler is not None:
                handler.close()


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
