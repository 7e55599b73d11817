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
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        handler = self._files.get(record.thread or 0)
        if handler is not None:
            handler.emit(record)

    def is_capturing(self, thread: int | None) -> bool:
        """True for records of a thread whose task has its own log file."""
        return (thread or 0) in self._files

    @contextmanager
    def capture(self, path: Path, header: str) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.stream.write(f"--- {header}\n")
        handler.flush()
        ident = threading.get_ident()
        with self._lock:
            self._files[ident] = handler
        try:
            yield
        finally:
            with self._lock:
                self._files.pop(ident, None)
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
