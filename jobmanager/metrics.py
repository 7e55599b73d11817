"""Prometheus metrics of a home: counters tailed from the store's events, gauges from indexed queries.

``jobmanager metrics --port P`` (and ``jobmanager agent --metrics-port P``) serve :func:`registry`
with prometheus-client's own HTTP server and text format. What it costs does not grow with the
history, so a scrape costs the same at 1M finished jobs as at 1k (``benchmarks/bench_metrics.py``):

- Counters (tasks started, succeeded, failed, retried, cancelled, handed back; agents lost) and the
  task duration histogram are this process's own: each scrape reads only the events written since
  the last one (by id, the primary key) and counts them. They start at zero when the process starts
  ("now"; the events before are not read), which Prometheus treats as a counter reset: ``rate()`` and
  ``increase()`` are right across restarts.
- Gauges (queue depth and the oldest runnable task's wait, running tasks per agent, agents by state)
  are read at each scrape from the few rows in runnable or running states (the ``tasks_state`` index)
  and the small agents table.

Every endpoint of a home reports the same store-wide numbers: scrape one per home (or aggregate with
``max``), else a sum counts each task once per endpoint.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, start_http_server
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jobmanager.engine.states import AgentState, TaskState
from jobmanager.errors import BadParams
from jobmanager.store import JobStore
from jobmanager.store.sql import LOST_AFTER_INTERVALS

log = logging.getLogger("jobmanager.metrics")

#: the labels of the task counters and the duration histogram
LABELS = ("type", "queue")
#: task durations from a fraction of a second to hours
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, float("inf"))
#: events read per query while catching up
PAGE = 5000
#: how long the tail waits for a gap in the event ids to fill before it moves past it (see :class:`EventTail`)
GAP_GRACE_S = 60.0


class EventTail:
    """Each new event once, in id order, although PostgreSQL commits events out of id order.

    Ids come from a sequence when a transaction inserts, and a transaction holding a smaller id may
    commit after one holding a larger id (SQLite's single writer never does this). So the tail keeps
    a low-water mark below which every id was read, remembers the ids read above it, and reads from
    the mark again each time; a gap is waited for up to :data:`GAP_GRACE_S` (a rolled-back transaction
    leaves a gap for good), then passed. The re-read rows are the few written since the mark.
    """

    def __init__(self, store: JobStore, start: int) -> None:
        self.store = store
        self.low = start
        self._seen: set[int] = set()
        self._gaps: dict[int, float] = {}  # first missing id of a gap -> when it was first noticed

    def poll(self, now: float | None = None) -> list[dict[str, Any]]:
        """The events committed since the last poll that this tail has not returned yet."""
        now = time.monotonic() if now is None else now
        new: list[dict[str, Any]] = []
        cursor = self.low
        while True:
            rows = self.store.events_after(cursor, PAGE)
            for row in rows:
                if row["id"] not in self._seen:
                    self._seen.add(row["id"])
                    new.append(row)
            if len(rows) < PAGE:
                break
            cursor = rows[-1]["id"]
        self._advance(now)
        return new

    def _advance(self, now: float) -> None:
        low = self.low
        for event_id in sorted(self._seen):
            if event_id > low + 1:  # ids low+1 .. event_id-1 are missing
                if now - self._gaps.setdefault(low + 1, now) < GAP_GRACE_S:
                    break
            low = event_id
        self.low = low
        self._seen = {i for i in self._seen if i > low}
        self._gaps = {i: t for i, t in self._gaps.items() if i > low}


class StoreCollector(Collector):
    """The ``jobmanager_*`` metrics of one store (see the module's docstring for what each costs).

    Scrapes may come on several server threads; every store read runs on one worker thread of its own
    (so the store keeps one connection), one scrape at a time.
    """

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobmanager-metrics")
        self._lock = threading.Lock()
        self._tail: EventTail | None = None
        self._running_since: dict[int, float] = {}  # task id -> start, for tasks seen starting
        self._depth_keys: set[tuple[str, str]] = set()
        self.started = Counter("jobmanager_tasks_started", "Task attempts started (claimed by an agent).",
                               LABELS, registry=None)
        self.succeeded = Counter("jobmanager_tasks_succeeded", "Tasks that succeeded.", LABELS, registry=None)
        self.failed = Counter("jobmanager_tasks_failed",
                              "Tasks that failed for good (no attempt left); see jobmanager_tasks_retried_total "
                              "for failed attempts that run again.", LABELS, registry=None)
        self.retried = Counter("jobmanager_tasks_retried", "Failed task attempts that will run again (retries).",
                               LABELS, registry=None)
        self.cancelled = Counter("jobmanager_tasks_cancelled", "Tasks cancelled.", LABELS, registry=None)
        self.requeued = Counter("jobmanager_tasks_requeued",
                                "Running tasks handed back to the queue (their agent stopped or was lost).",
                                LABELS, registry=None)
        self.duration = Histogram("jobmanager_task_duration_seconds",
                                  "Run time of task attempts, from start to succeeded, failed, retrying or "
                                  "cancelled.", LABELS, buckets=DURATION_BUCKETS, registry=None)
        self.agents_lost = Counter("jobmanager_agents_lost", "Agents marked lost (no heartbeat for 3 intervals).",
                                   registry=None)
        self._counted = {TaskState.RUNNING: self.started, TaskState.SUCCEEDED: self.succeeded,
                         TaskState.FAILED: self.failed, TaskState.RETRYING: self.retried,
                         TaskState.CANCELLED: self.cancelled}

    def start(self) -> None:
        """Start counting from now (before the server answers, so the first scrape counts from here)."""
        self._worker.submit(self._start).result()

    def _start(self) -> None:
        if self._tail is None:
            self._tail = EventTail(self.store, self.store.last_event_id())

    def close(self) -> None:
        self._worker.submit(self.store.close).result()
        self._worker.shutdown()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            gauges: list[Metric] = []
            try:
                gauges = self._worker.submit(self._scrape).result()
            except Exception as exc:  # the store is away: say so in the metrics, keep serving
                log.warning("metrics: cannot read the store: %s", exc)
            up = GaugeMetricFamily("jobmanager_store_up", "1 when this scrape could read the job store, else 0.")
            up.add_metric([], 1 if gauges else 0)
            for metric in (*self._counted.values(), self.requeued, self.duration, self.agents_lost):
                yield from metric.collect()
        yield up
        yield from gauges

    # -- on the worker thread -------------------------------------------------------------------
    def _scrape(self) -> list[Metric]:
        self._start()
        assert self._tail is not None
        for event in self._tail.poll():
            self._count(event)
        return self._gauges(self.store.metrics_gauges(), time.time())

    def _count(self, e: dict[str, Any]) -> None:
        if e["kind"] == "agent":
            if e["to_state"] == AgentState.LOST:
                self.agents_lost.inc()
            return
        if e["kind"] != "task" or e["type"] is None:
            return
        labels = (e["type"], e["queue"])
        to = e["to_state"]
        if e["from_state"] == TaskState.RUNNING and to != TaskState.RUNNING:
            start = self._running_since.pop(e["task_id"], None)
            if start is None and e["started_at"] is not None and e["started_at"] <= e["at"]:
                start = e["started_at"]  # started before this process did (or the task row moved on)
            if start is not None:
                self.duration.labels(*labels).observe(max(0.0, e["at"] - start))
            if to == TaskState.QUEUED:
                self.requeued.labels(*labels).inc()
        if to == TaskState.RUNNING:
            self._running_since[e["task_id"]] = e["at"]
            if len(self._running_since) > 1_000_000:  # a task whose end was never recorded: forget the oldest
                self._running_since.pop(next(iter(self._running_since)))
        counter = self._counted.get(to)
        if counter is not None:
            counter.labels(*labels).inc()

    def _gauges(self, snapshot: dict[str, list[dict[str, Any]]], now: float) -> list[Metric]:
        depth = GaugeMetricFamily("jobmanager_queue_depth",
                                  "Runnable tasks waiting for an agent (queued or retrying, of queued or running "
                                  "jobs), by queue and job type.", labels=["queue", "type"])
        wait = GaugeMetricFamily("jobmanager_queue_oldest_wait_seconds",
                                 "How long the longest-waiting runnable task has waited, by queue and job type "
                                 "(0 when none waits).", labels=["queue", "type"])
        seen = set()
        for r in snapshot["depth"]:
            key = (r["queue"], r["type"])
            seen.add(key)
            depth.add_metric(list(key), r["n"])
            wait.add_metric(list(key), max(0.0, now - r["oldest"]) if r["oldest"] is not None else 0.0)
        self._depth_keys |= seen | {(queue, type_) for type_, queue in self._label_sets()}
        for key in sorted(self._depth_keys - seen):  # an emptied queue shows 0, not a missing series
            depth.add_metric(list(key), 0)
            wait.add_metric(list(key), 0.0)

        state_count = dict.fromkeys((AgentState.ONLINE, AgentState.LOST, AgentState.OFFLINE), 0)
        heartbeat = GaugeMetricFamily("jobmanager_agent_heartbeat_age_seconds",
                                      "Seconds since each online agent's last heartbeat.", labels=["agent"])
        running = {r["agent"]: r["n"] for r in snapshot["running"] if r["agent"] is not None}
        for a in snapshot["agents"]:
            state = a["state"]
            if state == AgentState.ONLINE:
                age = max(0.0, now - a["heartbeat_at"])
                if age > LOST_AFTER_INTERVALS * a["interval"]:
                    state = AgentState.LOST  # silent: no live agent has marked it yet
                else:
                    heartbeat.add_metric([a["name"]], age)
                    running.setdefault(a["name"], 0)
            state_count[state] = state_count.get(state, 0) + 1
        agents = GaugeMetricFamily("jobmanager_agents",
                                   "Agents by state: online, lost (marked lost, or silent for 3 heartbeat "
                                   "intervals) and offline (stopped).", labels=["state"])
        for state, n in state_count.items():
            agents.add_metric([str(state)], n)
        per_agent = GaugeMetricFamily("jobmanager_tasks_running", "Running tasks per agent.", labels=["agent"])
        for name, n in sorted(running.items()):
            per_agent.add_metric([name], n)
        return [depth, wait, per_agent, agents, heartbeat]

    def _label_sets(self) -> Iterable[tuple[str, str]]:
        """The (type, queue) pairs counted so far."""
        for metric in self._counted.values():
            for family in metric.collect():
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        yield sample.labels["type"], sample.labels["queue"]


def new_registry(*, process: bool = True) -> CollectorRegistry:
    """A registry of its own (not prometheus-client's global one), with this process's metrics."""
    reg = CollectorRegistry()
    if process:
        ProcessCollector(registry=reg)
    return reg


def add_store(reg: CollectorRegistry, store: JobStore) -> StoreCollector:
    """Add a store's ``jobmanager_*`` metrics to ``reg``, counting from now."""
    collector = StoreCollector(store)
    collector.start()
    reg.register(collector)
    return collector


def check_address(host: str, port: int) -> None:
    """BadParams unless ``host`` is an IP address and ``port`` a TCP port (the CLI's checks)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise BadParams(f"--host {host[:80]!r} is not an IP address (e.g. 127.0.0.1, ::1 or 0.0.0.0)") from None
    if not 1 <= port <= 65535:
        raise BadParams(f"--port {port} is not between 1 and 65535")


def serve(reg: CollectorRegistry, host: str, port: int) -> Any:
    """Serve ``reg`` at http://host:port/metrics in a daemon thread; returns the server (``shutdown()``)."""
    check_address(host, port)
    try:
        server, _thread = start_http_server(port, addr=host, registry=reg)
    except OSError as exc:
        raise BadParams(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
    return server
