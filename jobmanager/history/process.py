"""The history in a child process of its own.

DuckDB reads the store through its sqlite extension, which carries its *own*
copy of SQLite. Two SQLite libraries on one file in one process do not see each
other's POSIX locks: when DuckDB's copy closes the file it drops the locks the
store's connections hold, and it may take itself for the last connection and
delete the WAL under them (seen: an agent that ran an export_report lost every
later write). So DuckDB never opens the store in a process that writes it: the
service talks to a child process that holds only the history.

Only read-only calls cross: ``sql``, ``jobs``, ``grid_rows``, ``stats``. ``sql`` runs in a
sandbox of its own (:mod:`jobmanager.history.sandbox`) holding only the views' rows of the
caller's scope: the connection with the store attached never runs a user's SQL.
"""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
import threading
from typing import Any

from jobmanager.errors import BadParams, HomeError


class _Pipe:
    """Length-prefixed pickles over a pair of byte streams (the child's stdin and stdout)."""

    def __init__(self, reader: Any, writer: Any) -> None:
        self.reader, self.writer = reader, writer

    def send(self, obj: Any) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        self.writer.write(struct.pack("!Q", len(data)) + data)
        self.writer.flush()

    def recv(self) -> Any:
        head = self.reader.read(8)
        if len(head) < 8:
            raise EOFError
        (size,) = struct.unpack("!Q", head)
        return pickle.loads(self.reader.read(size))


def _serve(conn: Any, home_path: str) -> None:
    try:
        from jobmanager.history.history import History, store_file
        from jobmanager.home import Home

        history = History(store_file(Home.open(home_path)))
    except Exception as exc:  # reported to the parent as the error of its first call
        conn.send((False, exc))
        return
    conn.send((True, None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            break
        if msg is None:
            break
        method, args, kwargs = msg
        try:
            if method not in HistoryProcess.METHODS:
                raise BadParams(f"the history has no method {method!r}")
            conn.send((True, getattr(history, method)(*args, **kwargs)))
        except Exception as exc:
            try:
                conn.send((False, exc))
            except Exception:  # an exception that does not pickle: send its text
                conn.send((False, BadParams(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)))
    history.close()


class HistoryProcess:
    """A proxy with the History's read methods; the DuckDB connection lives in a child process."""

    METHODS = ("sql", "jobs", "grid_rows", "stats", "refresh")

    def __init__(self, home_path: str) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "jobmanager.history.process", str(home_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
        )
        self._conn = _Pipe(self._proc.stdout, self._proc.stdin)
        self._lock = threading.Lock()
        try:
            ok, error = self._conn.recv()
        except EOFError:
            raise HomeError("the history process did not start (see the messages above)") from None
        if not ok:
            self._proc.wait(5)
            raise error if isinstance(error, Exception) else HomeError(str(error))

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self._proc.poll() is not None:
                raise HomeError("the history process stopped; open the JobManager again")
            try:
                self._conn.send((method, args, kwargs))
                ok, value = self._conn.recv()
            except (EOFError, BrokenPipeError) as exc:
                raise HomeError(f"the history process stopped ({exc.__class__.__name__})") from None
        if ok:
            return value
        raise value

    def __getattr__(self, name: str) -> Any:
        if name in self.METHODS:
            return lambda *a, **k: self._call(name, *a, **k)
        raise AttributeError(name)

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.send(None)
                if self._proc.stdin is not None:
                    self._proc.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            if self._proc.stdout is not None:
                self._proc.stdout.close()


def main() -> None:
    """The child: serve one home's history on stdin/stdout until told to stop."""
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing printed by a library may corrupt the pipe
    _serve(_Pipe(sys.stdin.buffer, out), sys.argv[1])


if __name__ == "__main__":
    main()
