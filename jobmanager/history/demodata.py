"""A realistic synthetic history, written into a home's store in bulk.

Used by the demo, the history tests, the analysis notebook and the benchmark
(1M jobs / ~10M tasks), so it generates the rows column-wise with numpy and hands them
to the store's :meth:`~jobmanager.store.base.JobStore.insert_history` (one transaction,
``executemany``; SQLite or PostgreSQL alike) instead of going through the service.

What it produces (all with the store's exact columns and valid state combinations):

* jobs of four types (``sleep``, ``print_to_pdf``, ``export_report``, ``notebook``)
  with per-type task counts, long-tail (log-normal) task durations and retries;
* owners, cases (some jobs without one), several agents with their ``agents`` rows;
* failure bursts: windows in which one agent fails most of what it runs;
* cancelled jobs, and the jobs still unfinished at ``now`` left queued / running / paused;
* per-job counters that match the tasks, the store's error summaries, job events
  (submitted, started, final state) and task events for failures and retries,
  and an artifact row for reports that produced output.

Agents holding a running task are ``online`` with a fresh heartbeat (a real agent
sweeping this home will find them lost after three intervals and recover their
work, which is the right thing for a demo); the others are ``offline``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from jobmanager.home import Home
from jobmanager.store import open_store
from jobmanager.store.base import HistoryBatch


@dataclass(frozen=True)
class _Type:
    name: str
    weight: float
    tasks_mean: float  # 1 + Poisson(tasks_mean - 1)
    duration_s: float  # median task duration
    fail_p: float  # chance a task fails outside bursts
    retries: int
    has_finish: bool
    errors: tuple[str, ...]


TYPES = (
    _Type("sleep", 0.30, 5, 2.0, 0.01, 0, False, ("RuntimeError: task failed on purpose",)),
    _Type("print_to_pdf", 0.30, 20, 8.0, 0.02, 1, True,
          ("TimeoutError: renderer did not answer in 60 s", "FileNotFoundError: template letter.html missing")),
    _Type("export_report", 0.25, 8, 30.0, 0.03, 1, True,
          ("ConnectionError: warehouse unavailable", "MemoryError", "KeyError: 'amount'")),
    _Type("notebook", 0.15, 1, 120.0, 0.05, 0, False,
          ("CellExecutionError: NameError: name 'df' is not defined", "DeadKernelError: kernel died")),
)
OWNERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
AGENTS = ("agent-linux-01", "agent-linux-02", "agent-linux-03", "agent-win-01", "agent-gpu-01")
AGENT_WEIGHTS = (0.27, 0.27, 0.2, 0.16, 0.1)
NAMES = {
    "sleep": ("Agent smoke test", "Sleep check", "Warm-up"),
    "print_to_pdf": ("Print letters", "Print invoices", "Print case file", "Print notices"),
    "export_report": ("Monthly report", "Quarterly report", "Audit export", "Billing export"),
    "notebook": ("Reconciliation notebook", "Forecast notebook", "Data quality notebook"),
}
#: hourly weights of submissions (UTC): office hours are busy
HOUR_WEIGHTS = np.array([1, 1, 1, 1, 1, 2, 4, 8, 12, 14, 14, 12, 10, 12, 14, 14, 12, 9, 6, 4, 3, 2, 1, 1], float)
_NONE = np.array(None, dtype=object)  # np.where's fill for a missing value (its stubs take no bare None)
CHUNK = 50_000  # jobs generated and written per round


def generate(
    home_path: str | os.PathLike[str] | Home,
    jobs: int = 1000,
    days: float = 30,
    seed: int = 0,
    *,
    now: float | None = None,
    in_progress: int | None = None,
    task_events: bool = False,
) -> dict[str, int]:
    """Append ``jobs`` synthetic jobs spread over the last ``days`` days to the home's store.

    ``in_progress`` jobs (default: 1% of them, 3..50) are submitted in the last
    minute so some are still queued, running or paused at ``now``. ``task_events``: also write every task's
    start and success events, as the engine does (the activity view counts them; off by default, as
    they more than double the events). Returns row counts.
    """
    home = home_path if isinstance(home_path, Home) else Home.open(home_path)
    rng = np.random.default_rng(seed)
    now = time.time() if now is None else float(now)
    if in_progress is None:
        in_progress = max(3, min(50, jobs // 100))
    in_progress = min(in_progress, jobs)
    created = _created_times(rng, jobs - in_progress, now, days)
    created = np.concatenate([created, np.sort(now - rng.uniform(0, 60, in_progress))])
    bursts = _bursts(rng, now, days)

    def batches(job_base: int, task_base: int) -> Iterator[HistoryBatch]:
        tally = _AgentTally()
        for start in range(0, jobs, CHUNK):
            part = _Chunk(rng, created[start:start + CHUNK], now, bursts, job_base + start, task_base)
            part.task_events = task_events
            task_base += part.n_tasks
            yield part.rows()
            tally.add(part)
        yield {"agents": tally.rows(rng, now, days)}

    store = open_store(home)  # (which checks it is a store of a version we understand)
    try:
        counts = store.insert_history(batches)
    finally:
        store.close()
    return {table: counts[table] for table in ("jobs", "tasks", "events", "artifacts")}


def _created_times(rng: np.random.Generator, n: int, now: float, days: float) -> np.ndarray:
    """Submission times over the period, busier in office hours, oldest first."""
    day = np.floor(rng.uniform(0, days, n))
    hour = rng.choice(24, n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    start = (now - days * 86400) // 86400 * 86400
    t = start + day * 86400 + hour * 3600 + rng.uniform(0, 3600, n)
    t = np.clip(t, now - days * 86400, now - 3600)
    return np.sort(t)


def _bursts(rng: np.random.Generator, now: float, days: float) -> list[tuple[float, float, int]]:
    """A few (start, end, agent index) windows in which one agent fails most tasks."""
    n = max(1, int(days // 7) + 1)
    out = []
    for _ in range(n):
        start = now - rng.uniform(0.1, 1.0) * days * 86400
        out.append((start, start + rng.uniform(1, 4) * 3600, int(rng.integers(len(AGENTS)))))
    return out


class _Chunk:
    """One batch of jobs and their tasks, generated column-wise."""

    #: also write every task's start and success events (``generate(task_events=True)``)
    task_events: bool = False

    def __init__(self, rng: np.random.Generator, created: np.ndarray, now: float,
                 bursts: list[tuple[float, float, int]], job_base: int, task_base: int) -> None:
        n = len(created)
        self.rng, self.now, self.n = rng, now, n
        self.ids = np.arange(job_base + 1, job_base + n + 1)
        self.created = created
        self.type_idx = rng.choice(len(TYPES), n, p=[t.weight for t in TYPES])
        tasks_mean = np.array([t.tasks_mean for t in TYPES])[self.type_idx]
        self.total = 1 + rng.poisson(tasks_mean - 1)
        self.n_tasks = int(self.total.sum())
        self.job_of = np.repeat(np.arange(n), self.total)  # task -> job index in chunk
        self.first = np.concatenate([[0], np.cumsum(self.total)[:-1]])  # first task index of each job
        self.seq = np.arange(self.n_tasks) - self.first[self.job_of] + 1
        self.task_ids = np.arange(task_base + 1, task_base + self.n_tasks + 1)
        self._schedule(bursts)
        self._outcomes()

    def _schedule(self, bursts: list[tuple[float, float, int]]) -> None:
        rng, n, job_of = self.rng, self.n, self.job_of
        # queue wait: usually seconds, minutes when a burst of submissions piles up
        self.wait = rng.exponential(4.0, n) + (rng.random(n) < 0.05) * rng.exponential(120.0, n)
        self.job_start = self.created + self.wait
        ttype = self.type_idx[job_of]
        median = np.array([t.duration_s for t in TYPES])[ttype]
        self.dur = median * rng.lognormal(0.0, 0.9, self.n_tasks)  # long tail
        # tasks of a job share ~4 workers: each starts when a quarter of the work before it is done
        cum = np.cumsum(self.dur) - self.dur
        self.t_start = self.job_start[job_of] + (cum - cum[self.first][job_of]) / 4.0
        self.t_end = self.t_start + self.dur
        self.agent = rng.choice(len(AGENTS), self.n_tasks, p=AGENT_WEIGHTS)
        fail_p = np.array([t.fail_p for t in TYPES])[ttype]
        for start, end, agent in bursts:
            hit = (self.t_start >= start) & (self.t_start < end) & (self.agent == agent)
            fail_p = np.where(hit, 0.7, fail_p)
        doomed = rng.random(n) < 0.01  # bad parameters: every task fails
        self.failed = (rng.random(self.n_tasks) < fail_p) | doomed[job_of]
        retries = np.array([t.retries for t in TYPES])[ttype]
        # a task with a retry left that failed its first attempt succeeds on the second most of the time
        first_fail = (retries > 0) & (rng.random(self.n_tasks) < fail_p * 2)
        self.attempts = np.where(first_fail | (self.failed & (retries > 0)), 2, 1)
        self.max_attempts = 1 + retries

    def _outcomes(self) -> None:
        rng, now, n, job_of = self.rng, self.now, self.n, self.job_of
        # cancelled jobs: tasks not started at cancel time are cancelled
        cancel = (rng.random(n) < 0.02) & (self.created < now - 3600)
        job_end_planned = np.maximum.reduceat(self.t_end, self.first)
        cancel_at = self.job_start + rng.uniform(0.1, 0.9, n) * (job_end_planned - self.job_start)
        cancel &= cancel_at <= now
        self.cancel_at = np.where(cancel, cancel_at, np.inf)
        started = self.t_start <= np.minimum(now, self.cancel_at[job_of])
        done = started & (self.t_end <= now)
        cancelled_task = cancel[job_of] & ~started
        # a cancelled job's running tasks were asked to stop; they stopped, cancelled
        cancelled_task |= cancel[job_of] & started & (self.t_end > self.cancel_at[job_of])
        state = np.full(self.n_tasks, "queued", dtype=object)
        state[started & ~done] = "running"
        state[done & ~self.failed] = "succeeded"
        state[done & self.failed] = "failed"
        state[cancelled_task] = "cancelled"
        self.t_state = state
        self.succ = np.bincount(job_of, state == "succeeded", n).astype(int)
        self.fail = np.bincount(job_of, state == "failed", n).astype(int)
        self.canc = np.bincount(job_of, state == "cancelled", n).astype(int)
        over = self.succ + self.fail + self.canc == self.total
        finish_step = np.array([t.has_finish for t in TYPES])[self.type_idx] & (self.succ > 0)
        last_end = np.maximum.reduceat(np.where(state == "cancelled", -np.inf, self.t_end), self.first)
        job_end = np.where(cancel, self.cancel_at, last_end + finish_step * rng.exponential(3.0, n))
        finished = over & (job_end <= now)
        jstate = np.full(n, "running", dtype=object)
        jstate[self.job_start > now] = "queued"
        paused = ~finished & (jstate == "running") & (rng.random(n) < 0.15)
        jstate[paused] = "paused"
        jstate[finished & (self.succ == self.total)] = "completed"
        jstate[finished & (self.succ > 0) & (self.succ < self.total)] = "completed_with_errors"
        jstate[finished & (self.succ == 0)] = "failed"
        jstate[cancel & finished] = "cancelled"
        self.j_state = jstate
        self.job_end = np.where(finished, job_end, np.nan)
        self.finish_step = finish_step
        # all tasks over, finishing step still running: an agent holds it
        self.finishing = over & ~finished & finish_step & (jstate != "queued")

    # -- rows (in the store's HISTORY_COLUMNS order) --------------------------------------------------
    def rows(self) -> HistoryBatch:
        return {"jobs": self._job_rows(), "tasks": self._task_rows(), "events": self._event_rows(),
                "artifacts": self._artifacts()}

    def _task_errors(self) -> np.ndarray:
        errors = np.full(self.n_tasks, None, dtype=object)
        bad = self.t_state == "failed"
        for i, t in enumerate(TYPES):
            sel = bad & (self.type_idx[self.job_of] == i)
            errors[sel] = np.array(t.errors, dtype=object)[self.rng.integers(len(t.errors), size=int(sel.sum()))]
        return errors

    def _job_rows(self) -> list[tuple[Any, ...]]:
        rng, n = self.rng, self.n
        self.t_error = self._task_errors()
        owner = np.array(OWNERS, dtype=object)[rng.zipf(1.6, n) % len(OWNERS)]
        self.owner = owner
        case_no = rng.integers(1000, 1000 + max(20, n // 200), n)
        case = np.where(rng.random(n) < 0.85, np.char.add("CASE-", case_no.astype(str)).astype(object), _NONE)
        priority = np.where(rng.random(n) < 0.1, rng.integers(1, 10, n), 0)
        # the store's failure summary: "<bad> of <total> tasks failed (first: <name>: <error>)"
        bad_idx = np.flatnonzero(self.t_state == "failed")
        first_bad: dict[int, int] = {}
        if len(bad_idx):
            jobs_of_bad, pos = np.unique(self.job_of[bad_idx], return_index=True)
            first_bad = dict(zip(jobs_of_bad.tolist(), bad_idx[pos].tolist(), strict=True))
        names = self._task_names()
        agents = np.array(AGENTS, dtype=object)[self.agent[self.first]]
        cols = zip(
            self.ids.tolist(), self.type_idx.tolist(), self.j_state.tolist(), owner.tolist(), case.tolist(),
            priority.tolist(), self.total.tolist(), self.succ.tolist(), self.fail.tolist(), self.canc.tolist(),
            self.created.tolist(), self.job_start.tolist(), _nan_none(self.job_end), self.finishing.tolist(),
            agents.tolist(), strict=True,
        )
        rows = []
        for i, (jid, ti, st, own, cs, prio, total, succ, fail, canc, created, start, fin, fing, ag) in enumerate(cols):
            tp = TYPES[ti]
            error = None
            if st == "cancelled":
                error = f"cancelled by {own}"
            elif fin is not None and fail:
                t = first_bad[i]
                error = f"{fail + canc} of {total} tasks failed (first: {names[t]}: {self.t_error[t]})"
            label = NAMES[tp.name][jid % len(NAMES[tp.name])]
            params = f'{{"tasks": {total}}}' if tp.name != "notebook" else '{"path": "analysis.ipynb"}'
            rows.append((
                jid, tp.name, f"{label} {cs}" if cs else label, params, own, cs, prio, st, tp.retries,
                int(tp.has_finish), ag if fing else None, total, succ, fail, canc, error, created,
                start if start <= self.now else None, fin, fin if fin is not None else min(self.now, created + 1),
            ))
        return rows

    def _task_names(self) -> np.ndarray:
        prefix = np.array(["sleep ", "document ", "part ", "run "], dtype=object)[self.type_idx[self.job_of]]
        return prefix + self.seq.astype(str).astype(object)

    def _task_rows(self) -> list[tuple[Any, ...]]:
        st = self.t_state
        started = st != "queued"
        started &= ~((st == "cancelled") & (self.t_start > self.cancel_at[self.job_of]))
        over = (st == "succeeded") | (st == "failed")
        names = self._task_names()
        agents = np.array(AGENTS, dtype=object)[self.agent]
        agent = np.where(started, agents, _NONE)
        attempts = np.where(started, self.attempts, 0)
        progress_total = np.where(started, 10.0, np.nan)
        running_done = np.floor(10 * np.clip((self.now - self.t_start) / self.dur, 0, 1))
        progress_done = np.where(st == "succeeded", 10.0, np.where(started, running_done, np.nan))
        finish = np.where(over, self.t_end, np.where(st == "cancelled", self.cancel_at[self.job_of], np.nan))
        queued_at = self.created[self.job_of]
        tb = np.where(st == "failed", "Traceback (most recent call last):\n  ...\n" + self.t_error.astype(str), _NONE)
        cols = zip(
            self.task_ids.tolist(), self.ids[self.job_of].tolist(), self.seq.tolist(), names.tolist(),
            st.tolist(), attempts.tolist(), self.max_attempts.tolist(), agent.tolist(),
            _nan_none(progress_done), _nan_none(progress_total), self.t_error.tolist(), tb.tolist(),
            queued_at.tolist(), _nan_none(np.where(started, self.t_start, np.nan)), _nan_none(finish),
            strict=True,
        )
        return [(tid, jid, seq, name, "{}", s, att, mx, 0, ag, pd_, pt, 0, err, trace, qa, sa, fa)
                for tid, jid, seq, name, s, att, mx, ag, pd_, pt, err, trace, qa, sa, fa in cols]

    def _event_rows(self) -> list[tuple[Any, ...]]:
        """Job events (submitted, started, paused, final state) and task failure / retry events."""
        ids, start, end = self.ids.tolist(), self.job_start.tolist(), self.job_end.tolist()
        agents = np.array(AGENTS, dtype=object)[self.agent[self.first]].tolist()
        rows: list[tuple[Any, ...]] = [
            (c, j, None, None, "job", None, "queued", None, o, "submitted")
            for c, j, o in zip(self.created.tolist(), ids, self.owner.tolist(), strict=True)
        ]
        for i in np.flatnonzero(self.job_start <= self.now).tolist():
            rows.append((start[i], ids[i], None, None, "job", "queued", "running", agents[i], None, None))
        for i in np.flatnonzero(self.j_state == "paused").tolist():
            rows.append((min(self.now, start[i] + 1.0), ids[i], None, None, "job", "running", "paused", None,
                         self.owner[i], "paused"))
        for i in np.flatnonzero(~np.isnan(self.job_end)).tolist():
            st = self.j_state[i]
            rows.append((end[i], ids[i], None, None, "job", "running", st, None,
                         self.owner[i] if st == "cancelled" else None, "cancelled" if st == "cancelled" else None))
        ran = self.t_state != "queued"
        for t in np.flatnonzero(ran & ((self.t_state == "failed") | (self.attempts > 1))).tolist():
            j, agent, seq, tid = ids[self.job_of[t]], AGENTS[self.agent[t]], int(self.seq[t]), int(self.task_ids[t])
            if self.attempts[t] > 1:  # the first attempt failed and was retried
                rows.append((float(self.t_start[t]), j, tid, seq, "task", "running", "retrying", agent, None,
                             "attempt 1 failed"))
            if self.t_state[t] == "failed":
                rows.append((float(self.t_end[t]), j, tid, seq, "task", "running", "failed", agent, None,
                             self.t_error[t]))
        if self.task_events:  # every start and success, as the engine writes them
            for t in np.flatnonzero(ran).tolist():
                j, agent, seq, tid = ids[self.job_of[t]], AGENTS[self.agent[t]], int(self.seq[t]), int(self.task_ids[t])
                rows.append((float(self.t_start[t]), j, tid, seq, "task", "queued", "running", agent, None, None))
                if self.t_state[t] == "succeeded":
                    rows.append((float(self.t_end[t]), j, tid, seq, "task", "running", "succeeded", agent, None,
                                 None))
        return rows

    def _artifacts(self) -> list[tuple[Any, ...]]:
        rows = []
        for i in np.flatnonzero(self.finish_step & ~np.isnan(self.job_end)).tolist():
            if self.j_state[i] not in ("completed", "completed_with_errors"):
                continue
            name = "letters.pdf" if TYPES[self.type_idx[i]].name == "print_to_pdf" else "report.xlsx"
            media = "application/pdf" if name.endswith(".pdf") else \
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            rows.append((int(self.ids[i]), None, name, f"artifacts/{self.ids[i]}/{name}", media,
                         int(self.rng.integers(20_000, 5_000_000)), float(self.job_end[i])))
        return rows


def _nan_none(a: np.ndarray) -> list[float | None]:
    """A float column as a list with NULL for NaN (sqlite3 would store NaN as NULL anyway, but say so)."""
    return [None if v != v else v for v in a.tolist()]


class _AgentTally:
    """What each demo agent holds and has done, over the chunks written (for the agents' rows)."""

    def __init__(self) -> None:
        self.running: list[list[dict[str, Any]]] = [[] for _ in AGENTS]
        self.done = [0] * len(AGENTS)
        self.failed = [0] * len(AGENTS)

    def add(self, part: _Chunk) -> None:
        st, seq, names = part.t_state, part.seq, part._task_names()
        jobs = part.ids[part.job_of]
        for k in range(len(AGENTS)):
            mine = part.agent == k  # (a task's agent is recorded once it started; these all did)
            self.done[k] += int(np.count_nonzero(mine & (st == "succeeded")))
            self.failed[k] += int(np.count_nonzero(mine & (st == "failed")))
            for t in np.flatnonzero(mine & (st == "running")).tolist():
                self.running[k].append({"job": int(jobs[t]), "task": int(seq[t]), "name": names[t]})

    def rows(self, rng: np.random.Generator, now: float, days: float) -> list[tuple[Any, ...]]:
        """The agents' rows: online (heartbeat now) if they hold a running task, else offline."""
        rows = []
        for k, name in enumerate(AGENTS):
            running = self.running[k]
            online = bool(running)
            rows.append(
                (name, name.removeprefix("agent-") + ".example.org", 4000 + k, max(8, len(running)), "thread",
                 "0.1.0", '["default"]', "online" if online else "offline", 5.0, now - days * 86400 - 3600, now,
                 None if online else now, json.dumps(running), self.done[k], self.failed[k],
                 float(rng.uniform(0, 30)), int(rng.integers(80, 400)) * 2**20, f"logs/agents/{name}.log"))
        return rows
