"""The dashboard's activity view: tasks processed and failed per minute and per hour, queue depth and wait.

Read from the store's ``events`` table, which holds one row per task transition (written in the same
transaction as the transition), through the ``events_kind_at (kind, at)`` index: every query names a
bounded time range, so its cost follows the work done in that range, never the size of the history.
Each event is joined to its job by primary key for the job's type and the viewer's scope (the same
case scope as the grid), so a user who sees some cases' jobs counts only those.

"Processed" is an attempt that ended (a task moved to succeeded, failed or retrying: Sidekiq counts
executions the same way); "failed" is an attempt that ended in failed or retrying.

:class:`ActivityReader` keeps the hours already over between calls (per scope), so the dashboard's
refresh reads only the last hour or two of events: measured by ``benchmarks/bench_activity.py``.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from jobmanager.backends import StoreAt, read_connection
from jobmanager.engine.states import RUNNABLE_TASK
from jobmanager.store.sql import scope_sql

MINUTE, HOUR = 60, 3600
#: how many minutes the per-minute series covers
MINUTES = 60
#: the most days the per-hour series may cover
MAX_DAYS = 31
#: an event may commit this long after its ``at`` (transactions are short); hours closer to now are re-read
SETTLE_S = 120.0
#: task states that end an attempt, and those that count as a failed attempt
ENDED = ("succeeded", "failed", "retrying")
FAILED = ("failed", "retrying")

#: one row of counts: (bucket start, epoch s; job type; agent or None) -> [processed, failed]
Counts = dict[tuple[float, str, str | None], list[int]]


@dataclass
class Activity:
    """What the activity view shows; every series has one entry per bucket, oldest first."""

    now: float
    #: per minute over the last :data:`MINUTES` minutes: (bucket start, type, agent) -> [processed, failed]
    minutes: Counts
    #: per hour over the last ``days`` days (the current hour included)
    hours: Counts
    minute_starts: list[float]
    hour_starts: list[float]
    #: queue -> (runnable tasks of visible jobs, age in s of the one waiting longest)
    queues: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: mean and longest wait (queued -> started) of the tasks started in the last hour, or None
    wait_mean_s: float | None = None
    wait_max_s: float | None = None

    def keys(self, by: str) -> list[str]:
        """The job types (``by='type'``) or agents (``by='agent'``) with work in either series."""
        i = 1 if by == "type" else 2
        return sorted({str(k[i]) for k in (*self.minutes, *self.hours) if k[i] is not None})

    def without_agents(self) -> Activity:
        """The same counts with the agents folded away (for a user who may not see agents)."""

        def fold(counts: Counts) -> Counts:
            out: Counts = {}
            for (start, type_, _agent), (p, f) in counts.items():
                got = out.setdefault((start, type_, None), [0, 0])
                got[0] += p
                got[1] += f
            return out

        return dataclasses.replace(self, minutes=fold(self.minutes), hours=fold(self.hours))

    def series(self, per: str, by: str | None = None, key: str | None = None) -> tuple[list[int], list[int]]:
        """(processed, failed) per bucket of ``per`` ('minute' or 'hour'), of one type or agent or of all."""
        counts, starts = (self.minutes, self.minute_starts) if per == "minute" else (self.hours, self.hour_starts)
        index = {s: n for n, s in enumerate(starts)}
        processed, failed = [0] * len(starts), [0] * len(starts)
        i = 1 if by == "type" else 2
        for k, (p, f) in counts.items():
            if by is not None and k[i] != key:
                continue
            n = index.get(k[0])
            if n is not None:
                processed[n] += p
                failed[n] += f
        return processed, failed


def _floor(t: float, step: int) -> float:
    return float(math.floor(t / step) * step)


def _read_counts(conn: Any, dialect: Any, since: float, until: float, step: int,
                 scope: dict[str, Any] | None) -> Counts:
    """Ended attempts in ``[since, until)`` per ``step`` seconds, job type and agent (one indexed range read)."""
    ended, ended_values = dialect.in_("e.to_state", ENDED)
    failed, failed_values = dialect.in_("e.to_state", FAILED)
    where, values = ("1 = 1", []) if scope is None else scope_sql(scope, owner="j.owner", case="j.case_id")
    rows = conn.execute(
        f"SELECT {dialect.bucket('(e.at - ?) / ?')} AS b, j.type, e.agent, count(*),"
        f" SUM(CASE WHEN {failed} THEN 1 ELSE 0 END)"
        f" FROM events e JOIN jobs j ON j.id = e.job_id"
        f" WHERE e.kind = 'task' AND e.at >= ? AND e.at < ? AND {ended} AND {where}"
        f" GROUP BY b, j.type, e.agent",
        (since, step, *failed_values, since, until, *ended_values, *values)).fetchall()
    return {(since + int(b) * step, str(t), a): [int(n), int(f or 0)] for b, t, a, n, f in rows}


def _read_queues(conn: Any, dialect: Any, now: float, scope: dict[str, Any] | None) -> dict[str, tuple[int, float]]:
    """Runnable tasks of visible queued/running jobs per queue, and how long the oldest has waited."""
    runnable, values = dialect.in_("t.state", RUNNABLE_TASK)
    where, scope_values = ("1 = 1", []) if scope is None else scope_sql(scope, owner="j.owner", case="j.case_id")
    rows = conn.execute(
        "SELECT j.queue, count(*), MIN(CASE WHEN t.state = 'retrying' THEN COALESCE(t.finished_at, t.queued_at)"
        " ELSE t.queued_at END)"
        f" FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE {runnable} AND j.state IN ('queued', 'running')"
        f" AND {where} GROUP BY j.queue",
        (*values, *scope_values)).fetchall()
    return {str(q): (int(n), max(0.0, now - float(oldest)) if oldest is not None else 0.0) for q, n, oldest in rows}


def _read_waits(conn: Any, since: float, scope: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """Mean and longest wait of the task attempts started since ``since`` (their start events)."""
    where, values = ("1 = 1", []) if scope is None else scope_sql(scope, owner="j.owner", case="j.case_id")
    row = conn.execute(
        "SELECT AVG(e.at - t.queued_at), MAX(e.at - t.queued_at) FROM events e"
        " JOIN tasks t ON t.id = e.task_id JOIN jobs j ON j.id = e.job_id"
        f" WHERE e.kind = 'task' AND e.at >= ? AND e.to_state = 'running' AND t.queued_at <= e.at AND {where}",
        (since, *values)).fetchone()
    if row is None or row[0] is None:
        return None, None
    return max(0.0, float(row[0])), max(0.0, float(row[1]))


class ActivityReader:
    """Reads :class:`Activity` for one store, keeping the counts of hours that are over between calls.

    An hour is kept once it ended more than :data:`SETTLE_S` ago (no event of it can still commit);
    every call re-reads only from the start of the oldest unsettled hour (or of the minute series,
    if older), so a refresh costs one or two hours of events, whatever the history holds.
    """

    def __init__(self, at: StoreAt) -> None:
        self.at = at
        self._lock = threading.Lock()
        self._scope_key: str | None = None
        self._kept: Counts = {}
        self._kept_until = 0.0  # hours before this are in _kept

    def read(self, scope: dict[str, Any] | None, days: int = 7, now: float | None = None) -> Activity:
        now = time.time() if now is None else float(now)
        dialect = self.at.dialect
        hour_now = _floor(now, HOUR)
        first_hour = hour_now - (days * 24 - 1) * HOUR
        settled = _floor(now - SETTLE_S, HOUR)  # hours before this one are over
        first_minute = _floor(now, MINUTE) - (MINUTES - 1) * MINUTE
        key = repr(sorted((scope or {"everything": True}).items()))
        with self._lock, read_connection(self.at) as conn:
            if key != self._scope_key or self._kept_until < first_hour:
                self._scope_key, self._kept, self._kept_until = key, {}, first_hour
            if settled > self._kept_until:
                self._kept.update(_read_counts(conn, dialect, self._kept_until, settled, HOUR, scope))
                self._kept_until = settled
            self._kept = {k: v for k, v in self._kept.items() if k[0] >= first_hour}
            recent_from = min(self._kept_until, first_minute)
            recent = _read_counts(conn, dialect, recent_from, now + 1, MINUTE, scope)
            queues = _read_queues(conn, dialect, now, scope)
            wait_mean, wait_max = _read_waits(conn, now - HOUR, scope)
            hours: Counts = {k: list(v) for k, v in self._kept.items()}
        minutes: Counts = {}
        for (start, type_, agent), (p, f) in recent.items():
            if start >= first_minute:
                minutes[(start, type_, agent)] = [p, f]
            if start >= self._kept_until:
                bucket = hours.setdefault((_floor(start, HOUR), type_, agent), [0, 0])
                bucket[0] += p
                bucket[1] += f
        return Activity(
            now=now, minutes=minutes, hours=hours,
            minute_starts=[first_minute + i * MINUTE for i in range(MINUTES)],
            hour_starts=[first_hour + i * HOUR for i in range(days * 24)],
            queues=queues, wait_mean_s=wait_mean, wait_max_s=wait_max)
