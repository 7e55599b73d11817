"""Where a task's log is, and reading it back: parts of per-(job, worker thread) files, checked first.

Layout (issue 18): a worker thread appends every task of a job it runs to one file,
``logs/jobs/<job>/<run>-<n>.log`` (:class:`jobmanager.engine.logcapture.SliceFiles`). When an attempt
starts, the thread appends ``<task id> <time> <offset>`` to the file's index ``<run>-<n>.idx``: where
that attempt's records start (``time``: microseconds since the epoch, which orders a task's attempts
across files; attempt numbers do not, as a lost agent's attempt is given back and counted again).
The index's n-th line is the file's n-th part. A part ends where the next part of the same file
starts (one writer per file, tasks one after another; ``n`` orders parts that start at the same
offset because a quiet task wrote nothing), else at the file's end, which is also what a running
task has written so far and all a task whose agent was killed ever wrote.

The index is written by the thread that runs the attempt, when it starts, not by its claim: an agent
may claim several tasks in one transaction and run them on any of its threads.

Homes from before: an earlier version's claim stored ``<file>:<offset>:<n>`` in the
task's ``log_slices`` column (space-separated, in attempt order); those parts are still read, before
the indexed ones. A task that ran in the oldest layout has its own ``task-NNNN.log`` (all its attempts);
it is read first. The finishing step's ``finish.log`` is unchanged.

Everything read from the database or an index is checked before a file is touched: a part must name a
file of the layout's exact shape (no separator, no dot-dot: it cannot leave the job's folder), an index
line must be of its exact shape and name one of the job's own tasks, and a range is clamped to the
file's size, so a bogus offset reads nothing and never allocates more than the file.
"""

from __future__ import annotations

import bisect
import os
import re
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

#: a worker thread's file: ``<12 hex digits>-<thread number>.log``
SLICE_FILE = re.compile(r"[0-9a-f]{12}-[0-9]{1,9}\.log")
#: its index: ``<12 hex digits>-<thread number>.idx``
INDEX_FILE = re.compile(r"([0-9a-f]{12}-[0-9]{1,9})\.idx")
_ENTRY = re.compile(rb"([0-9]{1,18}) ([0-9]{1,18}) ([0-9]{1,18})")
#: an index is read up to this size (about 2.5 million parts)
INDEX_BYTES = 64 * 1024 * 1024
_TOKEN = re.compile(r"([0-9a-f]{12}-[0-9]{1,9}\.log):([0-9]{1,18}):([0-9]{1,18})")
#: at most this much of one part is read for a tail
TAIL_BYTES = 256 * 1024
#: a symlink is not followed, and a FIFO put where a file should be does not block the open (then refused)
_NOFOLLOW = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


def slice_file_name(run: str, thread: int) -> str:
    name = f"{run}-{thread}.log"
    if not SLICE_FILE.fullmatch(name):
        raise ValueError(f"not a task log file name: {name!r}")
    return name


def index_file_name(log_name: str) -> str:
    """The index of a thread's log file ``<run>-<n>.log``: ``<run>-<n>.idx``."""
    return log_name[: -len(".log")] + ".idx"


def index_line(task_id: int, offset: int, at: float) -> bytes:
    """What a thread appends to its file's index when an attempt starts at ``at``: where its records start."""
    return b"%d %d %d\n" % (task_id, int(at * 1_000_000), offset)


def read_index(folder: Path, task_ids: Iterable[int]) -> dict[int, list[tuple[str, int, int]]]:
    """The parts the folder's index files record for ``task_ids``: task id -> its (file name, start, n),
    in the order the attempts started. Lines of another shape, or naming a task not of the job, are skipped."""
    wanted = set(task_ids)
    found: dict[int, list[tuple[int, str, int, int]]] = {}
    try:
        entries = sorted(e.name for e in os.scandir(folder))
    except OSError:
        return {}
    for entry in entries:
        m = INDEX_FILE.fullmatch(entry)
        if m is None:
            continue
        log_name = m.group(1) + ".log"
        data = _read_plain(folder / entry, INDEX_BYTES)
        for n, line in enumerate(data.split(b"\n")[:-1], 1):  # a line being written (no newline yet) waits
            e = _ENTRY.fullmatch(line)
            if e is not None and int(e.group(1)) in wanted:
                found.setdefault(int(e.group(1)), []).append((int(e.group(2)), log_name, int(e.group(3)), n))
    return {task: [(name, start, n) for _, name, start, n in sorted(parts)] for task, parts in found.items()}


def _read_plain(path: Path, most: int) -> bytes:
    """Up to ``most`` bytes of a plain file (b"" for a symlink, a folder, a missing file)."""
    with _open_plain(path) as fd:
        return b"" if fd is None else os.pread(fd, most, 0)


@contextmanager
def _open_plain(path: Path) -> Iterator[int | None]:
    """A descriptor to read ``path`` if it is a plain file, None for anything else (missing, a symlink, which
    is never followed, a folder, a FIFO, which is opened without blocking); closed at the block's end. Every
    read of a job's log folder goes through it: the folder's names come from the folder, not from us."""
    try:
        fd = os.open(path, _NOFOLLOW)
    except OSError:
        fd = None
    if fd is None:
        yield None  # outside the handler: an error of the caller's block is not chained to the OSError
        return
    try:
        yield fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    finally:
        os.close(fd)


def parse_slices(text: str | None) -> list[tuple[str, int, int]]:
    """The (file name, start, n) parts of a ``log_slices`` value; anything not of the exact shape is skipped."""
    found = []
    for token in (text or "").split()[:10_000]:
        m = _TOKEN.fullmatch(token)
        if m:
            found.append((m.group(1), int(m.group(2)), int(m.group(3))))
    return found


class _TaskRow(Protocol):
    id: int
    seq: int
    log_slices: str | None


@dataclass(frozen=True)
class Part:
    """A byte range of a log file (``end`` None: to the file's end, read at the time of reading)."""

    path: Path
    start: int = 0
    end: int | None = None

    def _range(self, fd: int) -> tuple[int, int]:
        size = os.fstat(fd).st_size
        end = size if self.end is None else max(0, min(self.end, size))
        return min(max(0, self.start), end), end

    def read(self, tail: int | None = None) -> bytes:
        """The part's bytes (its last ``tail`` bytes at most); b"" if the file is gone or not a plain file."""
        with _open_plain(self.path) as fd:
            if fd is None:
                return b""
            start, end = self._range(fd)
            if tail is not None:
                start = max(start, end - tail)
            return os.pread(fd, end - start, start) if end > start else b""


def task_parts(folder: Path, old: Iterable[tuple[int, Path]], tasks: Iterable[_TaskRow],
               seq: int | None = None) -> Iterator[Part]:
    """The parts of the job's task logs in task order (only task ``seq``'s if given), each task's old
    file first. ``folder`` is the job's log folder, ``old`` maps a task's seq to its old-layout file."""
    rows = list(tasks)
    indexed = read_index(folder, (t.id for t in rows))
    own = {t.id: parse_slices(t.log_slices) + indexed.get(t.id, []) for t in rows}
    order: dict[str, list[tuple[int, int]]] = {}  # file -> its parts' (n, start), sorted
    for t in rows:
        for name, start, n in own[t.id]:
            order.setdefault(name, []).append((n, start))
    for name in order:
        order[name] = _disjoint(order[name])
    kept = {(name, n, start) for name, parts in order.items() for n, start in parts}
    old_files = dict(old)
    seen: set[tuple[str, int, int]] = set()
    for t in rows:
        if seq is not None and t.seq != seq:
            continue
        if t.seq in old_files:
            yield Part(old_files[t.seq])
        for name, start, n in own[t.id]:
            if (name, n, start) not in kept or (name, n, start) in seen:
                continue  # a part named twice, or one overlapping the file's earlier parts: never read twice
            seen.add((name, n, start))
            parts = order[name]
            i = bisect.bisect_right(parts, (n, start))
            yield Part(folder / name, start, parts[i][1] if i < len(parts) else None)


def _disjoint(parts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """A file's (n, start) parts in order, keeping only those that start at or after the part before.

    One writer appends them, so the n-th part never starts before the (n-1)-th: a value that does was not
    written by a claim. Dropping it keeps the parts disjoint, so reading all of them never returns more
    than the file holds (crafted overlapping parts could otherwise repeat a large file thousands of times).
    """
    kept: list[tuple[int, int]] = []
    for n, start in sorted(set(parts)):
        if not kept or start >= kept[-1][1]:
            kept.append((n, start))
    return kept
