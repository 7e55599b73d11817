"""Where a task's log is, and reading it back: parts of per-thread files, checked first.

Layout (issue 18): a worker thread appends every task it runs, whatever the job, to one file,
``logs/threads/<run>-<n>.log`` (:class:`jobmanager.engine.logcapture.SliceFiles`); nothing is created
per job or per task. When an attempt starts, the thread appends ``<job> <task> <time> <offset>`` to the
file's index ``<run>-<n>.idx`` (``time``: microseconds since the epoch, which orders a task's attempts;
attempt numbers do not, as a lost agent's attempt is given back and counted again). When it ends, its
exact range ``<run>-<n>.log@<time>@<start>-<end>`` is written with its outcome to the task's
``log_slices`` column. So:

- an attempt whose outcome was written is read from its range in the store (an outcome the store did
  not take, the task taken back meanwhile, still stores its range: its bytes are the task's either way);
- each claim appends ``@<run>`` to ``log_slices``: the agent process that will log the attempt. A run
  that claimed a task more often than it stored its parts has an attempt with no outcome (running now,
  its agent killed, or stopped with the task handed back): its part is found in the tails of that run's
  thread indexes only. It ends where the index's next part starts, else at the size the log file had
  before the index was read (a start is written to the index before the records that follow it, so a
  part never runs on into a later one): what a running task has written so far, all a task whose agent
  was killed ever wrote.

Homes from before keep reading as they were written: parts of per-(job, thread) files in the job's folder
``logs/jobs/<job>/<run>-<n>.log`` with their index ``<run>-<n>.idx`` (``<task> <time> <offset>``;
a part ends where the next part of the same file starts), earlier ``<file>:<offset>:<n>`` tokens in
``log_slices``, and the oldest ``task-NNNN.log`` (all of a task's attempts, read first). The finishing
step's ``finish.log`` is unchanged.

Everything read from the database or an index is checked before a file is touched: a part must name a
file of the layout's exact shape (no separator, no dot-dot: it cannot leave its folder), an index line
must be of its exact shape and name the job and one of its own tasks, a range is clamped to the file's
size, and a job's parts of one file are kept disjoint, so a bogus value reads nothing and never more
than the file. The home's folders are the boundary: a process that can write an index or the store
could name other jobs' bytes of a thread file, as it could rewrite them.
"""

from __future__ import annotations

import bisect
import os
import re
import stat
from collections import Counter
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
#: a thread index's line: job, task, time, offset
_THREAD_ENTRY = re.compile(rb"([0-9]{1,18}) ([0-9]{1,18}) ([0-9]{1,18}) ([0-9]{1,18})")
#: an attempt's exact part in ``log_slices``: file, time, start, end
_PART = re.compile(r"([0-9a-f]{12}-[0-9]{1,9}\.log)@([0-9]{1,18})@([0-9]{1,18})-([0-9]{1,18})")
#: a claim's mark in ``log_slices``: the run of the agent process whose thread files will hold the attempt
_MARK = re.compile(r"@([0-9a-f]{12})")
#: how much of a thread index's end is read to find the parts whose outcome was not written
INDEX_TAIL = 256 * 1024
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


def index_line(job_id: int, task_id: int, offset: int, at: float) -> bytes:
    """What a thread appends to its index when an attempt starts at ``at``: where its records start."""
    return b"%d %d %d %d\n" % (job_id, task_id, int(at * 1_000_000), offset)


def part_token(name: str, at: float, start: int, end: int) -> str:
    """An attempt's exact part as its outcome stores it in ``log_slices`` (one token per attempt)."""
    return f"{name}@{int(at * 1_000_000)}@{start}-{end}"


def parse_parts(text: str | None) -> list[tuple[int, str, int, int]]:
    """The (time, file name, start, end) exact parts of a ``log_slices`` value; other tokens are skipped."""
    found = []
    for token in (text or "").split()[:10_000]:
        m = _PART.fullmatch(token)
        if m and int(m.group(3)) <= int(m.group(4)):
            found.append((int(m.group(2)), m.group(1), int(m.group(3)), int(m.group(4))))
    return found


def parse_marks(text: str | None) -> list[str]:
    """The runs of the ``@<run>`` marks claims appended to a ``log_slices`` value, one a claim."""
    return [m.group(1) for m in map(_MARK.fullmatch, (text or "").split()[:10_000]) if m is not None]


def scan_thread_indexes(folder: Path, job_id: int, task_ids: Iterable[int],
                        runs: Iterable[str]) -> dict[int, list[tuple[int, str, int, int]]]:
    """The parts the ends of the thread indexes of ``runs`` record for ``task_ids`` of ``job_id``: task id ->
    (time, file name, start, end).

    A part ends where the index's next part starts; the last one at the size its log file had before the
    index was read. A thread writes a start to the index before the records that follow it, so a part
    never runs on into a part that started after the read, whatever the file holds by the time it is read."""
    wanted, runs = set(task_ids), set(runs)
    found: dict[int, list[tuple[int, str, int, int]]] = {}
    try:
        names = sorted(entry.name for entry in os.scandir(folder))
    except OSError:
        return {}
    for index in names:
        m = INDEX_FILE.fullmatch(index)
        if m is None or m.group(1)[:12] not in runs:
            continue
        log_name = m.group(1) + ".log"
        size = _size(folder / log_name)
        if size is None:
            continue
        parsed = [e for e in map(_THREAD_ENTRY.fullmatch, _tail_lines(folder / index, INDEX_TAIL)) if e is not None]
        for i, e in enumerate(parsed):
            start = int(e.group(4))
            end = int(parsed[i + 1].group(4)) if i + 1 < len(parsed) else size
            if int(e.group(1)) == job_id and int(e.group(2)) in wanted and start <= end:
                found.setdefault(int(e.group(2)), []).append((int(e.group(3)), log_name, start, end))
    return found


def _size(path: Path) -> int | None:
    """A plain file's size (None: missing, a symlink, not a plain file)."""
    with _open_plain(path) as fd:
        return None if fd is None else os.fstat(fd).st_size


def _tail_lines(path: Path, most: int) -> list[bytes]:
    """The whole lines of the last ``most`` bytes of a plain file (a line still being written waits)."""
    with _open_plain(path) as fd:
        if fd is None:
            return []
        size = os.fstat(fd).st_size
        start = max(0, size - most)
        data = os.pread(fd, size - start, start)
    lines = data.split(b"\n")[:-1]
    return lines[1:] if start > 0 else lines  # the first may be cut


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
    read of a log folder goes through it: the folder's names come from the folder, not from us."""
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


def task_parts(folder: Path, threads: Path, job_id: int, old: Iterable[tuple[int, Path]],
               tasks: Iterable[_TaskRow], seq: int | None = None) -> Iterator[Part]:
    """The parts of the job's task logs in task order (only task ``seq``'s if given), each task's in the
    order written: its old-layout file, its parts in the job's folder, then its parts of thread files.

    ``folder`` is the job's log folder, ``threads`` the thread files' folder, ``old`` maps a task's seq to
    its old-layout file."""
    rows = list(tasks)
    legacy = _legacy_parts(folder, rows, seq)
    current = _thread_parts(threads, job_id, rows, None if seq is None else {t.id for t in rows if t.seq == seq})
    old_files = dict(old)
    for t in rows:
        if seq is not None and t.seq != seq:
            continue
        if t.seq in old_files:
            yield Part(old_files[t.seq])
        yield from legacy.get(t.id, [])
        yield from current.get(t.id, [])


def _thread_parts(threads: Path, job_id: int, rows: list[_TaskRow],
                  only: set[int] | None = None) -> dict[int, list[Part]]:
    """Each task's parts of thread files, in the order they started: the exact ranges its outcomes stored,
    and for each claim with no outcome stored (a running task, one whose agent was killed or stopped, an
    outcome the store did not take), the parts its agent process's thread indexes record. The indexes are
    read for the tasks ``only`` names (None: all); every task's stored ranges count for disjointness."""
    own: dict[int, dict[tuple[str, int], tuple[int, int]]] = {}  # task -> (file, start) -> (time, end)
    unsure: dict[int, set[str]] = {}  # task -> runs that claimed it more often than they stored its parts
    for t in rows:
        exact = parse_parts(t.log_slices)
        own[t.id] = {(name, start): (at, end) for at, name, start, end in exact}
        stored = Counter(name[:12] for _, name, _, _ in exact)
        runs = {run for run, n in Counter(parse_marks(t.log_slices)).items() if n > stored[run]}
        if runs and (only is None or t.id in only):
            unsure[t.id] = runs
    if unsure:
        found = scan_thread_indexes(threads, job_id, unsure, set().union(*unsure.values()))
        for task, scanned in found.items():
            for at, name, start, end in scanned:
                if name[:12] in unsure[task]:
                    own[task].setdefault((name, start), (at, end))  # a stored range wins
    by_file: dict[str, list[tuple[int, int, int, int]]] = {}  # file -> (start, end, time, task)
    for task, ranges in own.items():
        for (name, start), (at, end) in ranges.items():
            by_file.setdefault(name, []).append((start, end, at, task))
    kept: dict[int, list[tuple[int, Part]]] = {}
    for name, in_file in by_file.items():
        reach = 0  # a file's parts are kept disjoint: a crafted range never reads a byte twice
        for start, end, at, task in sorted(in_file):
            if start >= reach:
                kept.setdefault(task, []).append((at, Part(threads / name, start, end)))
                reach = end
    return {task: [part for _, part in sorted(timed, key=lambda p: p[0])] for task, timed in kept.items()}


def _legacy_parts(folder: Path, rows: list[_TaskRow], seq: int | None) -> dict[int, list[Part]]:
    """Each task's parts in its job's folder (the layout of sessions 13-15), in the order they started
    (only task ``seq``'s if given: a part two tasks name is read once, for the first one read)."""
    indexed = read_index(folder, (t.id for t in rows))
    own = {t.id: parse_slices(t.log_slices) + indexed.get(t.id, []) for t in rows}
    order: dict[str, list[tuple[int, int]]] = {}  # file -> its parts' (n, start), sorted
    for t in rows:
        for name, start, n in own[t.id]:
            order.setdefault(name, []).append((n, start))
    for name in order:
        order[name] = _disjoint(order[name])
    kept = {(name, n, start) for name, parts in order.items() for n, start in parts}
    seen: set[tuple[str, int, int]] = set()
    found: dict[int, list[Part]] = {}
    for t in rows:
        if seq is not None and t.seq != seq:
            continue
        for name, start, n in own[t.id]:
            if (name, n, start) not in kept or (name, n, start) in seen:
                continue  # a part named twice, or one overlapping the file's earlier parts: never read twice
            seen.add((name, n, start))
            parts = order[name]
            i = bisect.bisect_right(parts, (n, start))
            found.setdefault(t.id, []).append(Part(folder / name, start, parts[i][1] if i < len(parts) else None))
    return found


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
