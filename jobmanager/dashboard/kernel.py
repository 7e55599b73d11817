"""Loaded into every dashboard kernel (an IPython extension the dashboard server passes to ipykernel).

A dashboard user controls what the browser sends to the kernel: comm messages with any widget state.
Without this, a malformed update reached the browser as a traceback full of the server's paths:

* ``comm``'s manager logs handler errors with ``exc_info`` on the ``Comm`` logger, which has no handler
  in a kernel, so Python's last-resort handler wrote the traceback to ``sys.stderr``, the kernel's IOPub
  stream to the browser;
* ipywidgets runs ``on_click``/``observe`` callbacks through ``ip.showtraceback()``, which sends an
  ``error`` message with the whole traceback.

Here the ``Comm`` logger (and the root logger) write one line to the kernel process's real stderr (the
server's log), and ``showtraceback`` sends the browser one line (``ValueError: ...``) and the server's
log the same line plus the innermost frame (a browser can send bad messages in a loop: no tracebacks
to flood the log). Nothing here imports ipywidgets.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Any

#: the most characters of an error message shown in the browser or written to the log on one line
MAX_LINE = 300


def one_line(text: str) -> str:
    """``text`` on one line, at most :data:`MAX_LINE` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


class OneLineFormatter(logging.Formatter):
    """``[dashboard kernel] LEVEL message: ExcType: exc`` on one line, no traceback."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            message = f"{message}: {type(exc).__name__}: {exc}"
        return one_line(f"[dashboard kernel] {record.levelname} {message}")


def _server_log_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.__stderr__)
    handler.setFormatter(OneLineFormatter())
    return handler


def quiet_comm_errors() -> None:
    """Send comm handler errors (and anything else without a handler) to the server log as one line."""
    handler = _server_log_handler()
    for name in ("Comm", "comm", "ipywidgets"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
    root = logging.getLogger()
    if not root.handlers:  # else the last-resort handler writes to sys.stderr: the browser
        root.addHandler(handler)


def one_line_tracebacks(shell: Any) -> None:
    """Make ``shell.showtraceback`` send one line to the browser and one line to the server's log."""
    original = shell._showtraceback

    def _showtraceback(etype: type[BaseException], evalue: BaseException, stb: list[str]) -> None:
        line = one_line(f"{getattr(etype, '__name__', 'Error')}: {evalue}")
        try:  # the server's log: one line too (a browser can send bad messages in a loop), plus where
            frames = traceback.extract_tb(evalue.__traceback__)
            where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
            print(f"[dashboard kernel] ERROR {line}{where}", file=sys.__stderr__, flush=True)
        except Exception:  # the log is best effort; the browser still gets its line
            pass
        original(etype, evalue, [line])

    shell._showtraceback = _showtraceback


def load_ipython_extension(shell: Any) -> None:
    """IPython's hook: ``--IPKernelApp.extensions=['jobmanager.dashboard.kernel']``."""
    quiet_comm_errors()
    one_line_tracebacks(shell)
