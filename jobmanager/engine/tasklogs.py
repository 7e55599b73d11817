"""Where a task's log is, and reading it back: parts of per-(job, worker thread) files, checked first.

Layout (issue 18): a worker thread appends every task of a job it runs to one file,
``logs/jobs/<job>/<run>-<n>.log`` (:class:`jobmanager.engine.logcapture.SliceFiles`). The claim of
each attempt appends ``<file>:<offset>:<n>`` to the task's ``log_slices`` column (space-separated, in
attempt order): where that attempt's records start, and that it is the file's n-th part. A part ends
where the next part recorded in the same file starts (one writer per file, tasks one after another;
``n`` orders parts that start at the same offset because a quiet task wrote nothing), else at the
file's end, which is also what a running task has written so far and all a task whose agent was
killed ever wrote.

Homes from before: a task that ran in the old layout has its own ``task-NNNN.log`` (all its attempts);
it is read first, then any parts written since. The finishing step's ``finish.log`` is unchanged.

Everything read from the database is checked before a file is touched: a part must name a file of the
layout's exact shape (no separator, no dot-dot: it cannot leave the job's folder) and its range is
clamped to the file's size, so a bogus offset reads nothing and never allocates more than the file.
"""

from __future__ import annotations

import bisect
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

#: a worker thread's file: ``<12 hex digits>-<thread number>.log``
SLICE_FILE = re.compile(r"[0-9a-f]{12}-[0-9]{1,9}\.log")
_TOKEN = re.compile(r"([0-9a-f]{12}-[0-9]{1,9}\.log):([0-9]{1,18}):([0-9]{1,18})")
#: at most this much of one part is read for a tail
TAIL_BYTES = 256 * 1024
_NOFOLLOW = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def slice_file_name(run: str, thread: int) -> str:
    name = f"{run}-{thread}.log"
    if not SLICE_FILE.fullmatch(name):
        raise ValueError(f"not a task log file name: {name!r}")
    return name


def slice_token(name: str, offset: int, n: int) -> str:
    """What a claim appends to ``tasks.log_slices``: where an attempt's records start (the file's n-th part)."""
    return f"{name}:{offset}:{n}"


def parse_slices(text: str | None) -> list[tuple[str, int, int]]:
    """The (file name, start, n) parts of a ``log_slices`` value; anything not of the exact shape is skipped."""
    found = []
    for token in (text or "").split()[:10_000]:
        m = _TOKEN.fullmatch(token)
        if m:
            found.append((m.group(1), int(m.group(2)), int(m.group(3))))
    return found


class _TaskRow(Protocol):
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
        try:
            fd = os.open(self.path, _NOFOLLOW)
        except OSError:
            return b""
        try:
            if not _plain(fd):
                return b""
            start, end = self._range(fd)
            if tail is not None:
                start = max(start, end - tail)
            return os.pread(fd, end - start, start) if end > start else b""
        finally:
            os.close(fd)


def _plain(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def task_parts(folder: Path, old: Iterable[tuple[int, Path]], tasks: Iterable[_TaskRow],
               seq: int | None = None) -> Iterator[Part]:
    """The parts of the job's task logs in task order (only task ``seq``'s if given), each task's old
    file first. ``folder`` is the job's log folder, ``old`` maps a task's seq to its old-layout file."""
    rows = list(tasks)
    order: dict[str, list[tuple[int, int]]] = {}  # file -> its parts' (n, start), sorted
    for t in rows:
        for name, start, n in parse_slices(t.log_slices):
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
        for name, start, n in parse_slices(t.log_slices):
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
