"""An agent: one Huey consumer process, plus heartbeats and recovery of lost agents.

Huey acknowledges a message when it dequeues it and never re-delivers it if the
consumer dies (coleifer/huey#844, #598), so recovery comes from the store: every
heartbeat, each agent looks for agents silent for 3 intervals; the one whose
conditional UPDATE marks an agent lost requeues (or fails) that agent's tasks.
A sweep re-sends the messages of runnable tasks the queue does not hold (a
queue write lost in a crash between the store commit and the enqueue).

When the store, the queue or the log folder cannot be written (a full disk, a permission
problem, a server away), every loop backs off (0.5 s doubling to 30 s) and the agent says once
what is wrong, then reminds at most once a minute, and says when it is over (trouble.py).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psutil

from jobmanager import __version__, jobtypes, validate
from jobmanager.backends import queue_at
from jobmanager.engine import checkpoints
from jobmanager.engine.completer import Completer
from jobmanager.engine.engine import Engine
from jobmanager.engine.logcapture import FORMAT, router
from jobmanager.engine.queue import Queue, set_handler
from jobmanager.engine.runner import Runner
from jobmanager.engine.wake import WakeListener, WakingConsumer
from jobmanager.errors import BadParams, HomeError
from jobmanager.home import Home
from jobmanager.models import Recovery
from jobmanager.notify.outbox import Notifier
from jobmanager.schedules.schedules import sync_file
from jobmanager.store import JobStore, open_store
from jobmanager.trouble import Backoff, TroubleLog, WriteTrouble, storage_problem

log = logging.getLogger("jobmanager.engine.agent")
T = TypeVar("T")

#: re-send messages of tasks queued longer than this that the queue does not hold
SWEEP_MIN_AGE_S = 5.0
SWEEP_EVERY_S = 30.0
#: how often agents look for due schedules
SCHEDULER_TICK_S = 0.5


@dataclass
class Polling:
    """How idle workers poll the queue (Huey consumer's -d, -m, -b).

    Huey's defaults (0.1 s growing to 10 s) leave an idle agent seconds late. On a SQLite queue an
    idle worker is woken as soon as a message is queued (:mod:`jobmanager.engine.wake`), so its poll
    is only a safety net and may grow to ``woken_max_delay``; without a wake-up (the FIFO could not be
    made) it polls up to ``max_delay``. ``benchmarks/bench_latency.py`` measures the latency and the
    idle CPU each costs.
    """

    initial_delay: float = 0.005
    max_delay: float = 0.05
    backoff: float = 1.15
    woken_max_delay: float = 0.5
    #: False: never woken, only poll (the benchmark's comparison)
    wake: bool = True


class Agent:
    def __init__(
        self,
        home: Home,
        *,
        name: str | None = None,
        workers: int = 2,
        worker_type: str = "thread",
        imports: tuple[str, ...] = (),
        interval: float | None = None,
        polling: Polling | None = None,
        shutdown_timeout: float = 10.0,
        queues: tuple[str, ...] = ("default",),
    ) -> None:
        self.home = home
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.name = name or f"{self.host}-{self.pid}"
        self.workers = workers
        self.worker_type = worker_type
        self.imports = tuple(home.imports) + tuple(imports)
        self.interval = interval or home.heartbeat_interval
        self.polling = polling or Polling()
        self.shutdown_timeout = shutdown_timeout
        #: the job queues this agent takes tasks from (validated: they name Huey queues and Redis keys)
        self.queues = tuple(dict.fromkeys(validate.queue_name(q, "agent queue") for q in queues))
        if not self.queues:
            raise BadParams("an agent serves at least one queue")
        self._stop = threading.Event()
        self._last_sweep = 0.0
        self.trouble = TroubleLog(log)
        self._stopping: Any = self._stop

    # -- life cycle ----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Everything before the consumer starts; errors here are the user's (exit 2)."""
        jobtypes.discover(self.imports)
        self.store: JobStore = open_store(self.home)
        self.queue = Queue(self.home, serve=self.queues)
        self.checkpoints = checkpoints.for_agent(self.store, self.queue, self.trouble)
        self.engine = Engine(self.store, lambda: self.queue)
        # The schedules file is loaded before the agent shows as online, so whoever sees the agent
        # online also sees its schedules (a bad file must not keep agents from running jobs).
        schedules: dict[str, int] | Exception
        try:
            schedules = sync_file(self.store, self.home, f"agent:{self.name}", self.imports)
        except Exception as exc:
            schedules = exc
        self.engine.register_agent({
            "name": self.name, "host": self.host, "pid": self.pid, "workers": self.workers,
            "worker_type": self.worker_type, "version": __version__, "queues": list(self.queues),
            "interval": self.interval, "log_path": self.home.relative(self.home.agent_log(self.name)),
        })
        self._setup_logging()
        self.runner = Runner(self.home, self.store, self.engine, self.name)
        self.runner.until_stored = self._until_stored
        settings = self.home.settings
        self.completer = Completer(self.engine, self.name, flush_ms=settings.completer_flush_ms,
                                   batch=settings.completer_batch, stored=self._until_stored,
                                   written=self.runner.written, trouble=self.trouble)
        self.runner.completer = self.completer
        self._handler = _Guarded(self.runner, self.trouble, self._store_where(), self._stop)
        set_handler(self._handler)
        self.recover()
        self.sweep(min_age=0.0)
        if isinstance(schedules, Exception):
            log.error("schedules file not loaded: %s", schedules)
        elif schedules["declared"]:
            log.info("schedules file: %s", schedules)

    def run(self) -> None:
        """Run until SIGINT/SIGTERM (graceful: running tasks get ``shutdown_timeout`` to end)."""
        wake, listener = threading.Event(), None
        at = queue_at(self.home)
        if self.polling.wake and at.path is not None and self.worker_type == "thread":  # Redis: workers block
            listener = WakeListener(at.path, wake)
            if not listener.start():
                listener = None
        options: dict[str, Any] = dict(
            workers=self.workers, worker_type=self.worker_type, periodic=False,
            initial_delay=self.polling.initial_delay, backoff=self.polling.backoff,
            max_delay=self.polling.max_delay if listener is None else max(self.polling.max_delay,
                                                                           self.polling.woken_max_delay),
            shutdown_timeout=self.shutdown_timeout, graceful_signal="TERM",
        )
        consumer = (self.queue.huey.create_consumer(**options) if listener is None
                    else WakingConsumer(self.queue.huey, wake, **options))
        # Both SIGINT (Ctrl-C) and SIGTERM stop gracefully; Huey's second signal interrupts.
        consumer._signal_actions[signal.SIGINT] = (False, True)
        self._guard_dequeue(consumer.stop_flag)
        self._handler.stop = self._stopping = consumer.stop_flag  # a back-off ends when the agent is asked to stop
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        threading.Thread(target=self._scheduler_loop, name="scheduler", daemon=True).start()
        # Notifications are sent from their own thread: a slow mail server never holds a worker.
        self.notifier = Notifier(self.store, self.home.settings.notify, self.name, self.trouble)
        threading.Thread(target=self.notifier.run, args=(self._stop,), name="notifier", daemon=True).start()
        log.info("agent %s started: %s %s workers, queues %s, heartbeat every %.1f s, job types: %s",
                 self.name, self.workers, self.worker_type, ",".join(self.queues), self.interval,
                 ", ".join(jobtypes.registered()))
        self.completer.start()
        if self.checkpoints is not None:
            self.checkpoints.start()
        if self.worker_type == "thread":  # a forked worker process would copy the shared buffer
            settings = self.home.settings
            self.queue.start_prefetch(settings.prefetch_batch, settings.prefetch_hold_ms, settings.prefetch_short_ms,
                                      claims=self.runner if self.store.claims_ahead else None)
        try:
            consumer.run()
        finally:
            self.queue.stop_prefetch()  # the workers have stopped: what they took and did not start goes back
            if listener is not None:
                listener.close()
            self.completer.close()  # the buffer is written before the agent reports itself stopped
            if self.checkpoints is not None:
                self.checkpoints.close()
            self._stop.set()
            beat.join(timeout=self.interval + 1)
            self.engine.agent_stopped(self.name, self.pid)
            log.info("agent %s stopped", self.name)

    # -- heartbeat, recovery, sweep ---------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        proc = psutil.Process()
        proc.cpu_percent(None)
        backoff, delay = Backoff(), self.interval
        while not self._stop.wait(delay):
            try:
                stats = self.runner.counters.snapshot()
                stats["cpu_percent"] = proc.cpu_percent(None)
                stats["rss_bytes"] = proc.memory_info().rss
                command = self.store.heartbeat(self.name, self.pid, stats)
                if command == "stop":
                    log.warning("stop requested; shutting down gracefully")
                    os.kill(self.pid, signal.SIGTERM)
                    return
                self.reconcile(stats)
                if self.recover().lost:  # the messages it had taken and not claimed (engine/prefetch.py) went too
                    self.sweep(min_age=0.0)
                elif time.monotonic() - self._last_sweep >= SWEEP_EVERY_S:
                    self.sweep(min_age=SWEEP_MIN_AGE_S)
            except Exception as exc:  # a heartbeat must never kill the agent; the next one retries
                self.trouble.failed("heartbeat", exc, self._store_where())
                delay = max(self.interval, backoff.failed())
            else:
                self.trouble.ok("heartbeat")
                backoff.reset()
                delay = self.interval

    def _scheduler_loop(self) -> None:
        """Fire due schedules; the store makes each run fire once whichever agent gets there first."""
        backoff, delay = Backoff(), SCHEDULER_TICK_S
        while not self._stop.wait(delay):
            try:
                self.engine.fire_due(self.name)
            except Exception as exc:
                self.trouble.failed("scheduler", exc, self._store_where())
                delay = max(SCHEDULER_TICK_S, backoff.failed())
            else:
                self.trouble.ok("scheduler")
                backoff.reset()
                delay = SCHEDULER_TICK_S

    def _until_stored(self, write: Callable[[], T]) -> T:
        """``write()``, retried with back-off while the store cannot be written: a task that ran
        keeps its outcome until the store takes it (given up only when the agent stops; the task is
        then recovered like a lost agent's)."""
        backoff = Backoff()
        while True:
            try:
                result = write()
            except Exception as exc:
                if storage_problem(exc, None) is None and not isinstance(exc, HomeError):
                    raise
                self.trouble.failed("recording outcomes", exc, self._store_where())
                if self._stopping.wait(backoff.failed()):
                    raise
            else:
                if backoff.failures:
                    self.trouble.ok("recording outcomes")
                return result

    def _store_where(self) -> str:
        """The store's file, or its URL without the password, for messages."""
        return str(getattr(self.store, "path", None) or self.store)

    def _guard_dequeue(self, stop_flag: Any) -> None:
        """Huey logs a traceback for every failed dequeue and retries within 50 ms (our polling):
        instead, a failure is reported once and the worker backs off until the queue works again."""
        huey, trouble, backoff = self.queue.huey, self.trouble, Backoff()
        at = queue_at(self.home)
        where = str(at.path) if at.url is None else "the Redis queue"
        dequeue = huey.dequeue

        def guarded_dequeue() -> Any:
            try:
                task = dequeue()
            except Exception as exc:
                trouble.failed("queue", exc, where)
                stop_flag.wait(backoff.failed())
                return None
            if backoff.failures:
                backoff.reset()
                trouble.ok("queue")
            return task

        huey.dequeue = guarded_dequeue

    def recover(self) -> Recovery:
        recovery = self.engine.recover(self.name)
        for name in recovery.lost:
            log.warning("agent %s is lost; recovered its work (%d tasks requeued)", name, len(recovery.dispatches))
        return recovery

    def reconcile(self, stats: dict[str, Any]) -> Recovery:
        """Hand back the tasks the store says this agent runs that its heartbeat did not report (one
        whose finish write failed stays "running" otherwise). Process workers keep their own counters,
        out of the heartbeat's sight, so their agents do not reconcile."""
        if self.worker_type == "process":
            return Recovery()
        reported = [int(t["id"]) for t in stats.get("current", [])]
        recovery = self.engine.reconcile(self.name, self.pid, reported, float(stats["snapshot_at"]))
        if recovery.dispatches or recovery.finalize:
            log.warning("%d running tasks were missing from this agent's heartbeat; handed back to the queue",
                        len(recovery.dispatches))
        return recovery

    def sweep(self, min_age: float = SWEEP_MIN_AGE_S) -> int:
        """Re-send messages for runnable tasks the queue does not hold; returns how many."""
        self._last_sweep = time.monotonic()
        runs, finals = self.engine.sweep(queued_before=time.time() - min_age)
        if runs or finals:
            log.warning("sweep: re-sent %d task messages and %d finishing steps the queue did not hold", runs, finals)
        return runs + finals

    def _setup_logging(self) -> None:
        path = self.home.agent_log(self.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        capturing = router()
        formatter = logging.Formatter(FORMAT)
        for handler in (_AgentLogFile(path, encoding="utf-8"), logging.StreamHandler(sys.stderr)):
            handler.setFormatter(formatter)
            handler.addFilter(lambda record: not capturing.is_capturing(record.thread))
            logging.getLogger().addHandler(handler)
        logging.getLogger("huey").setLevel(logging.WARNING)


class _AgentLogFile(logging.FileHandler):
    """The agent's log file. A write that fails (a full disk) is said once on stderr, not as a
    "--- Logging error ---" traceback for every line; stderr keeps every line meanwhile."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trouble = WriteTrouble("cannot write the agent log: {why}; its lines go to stderr only until it works",
                                    "the agent log {path} is writable again")

        self._failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        self._failed = True
        self.trouble.failed(self.baseFilename)

    def emit(self, record: logging.LogRecord) -> None:  # under the handler's lock (Handler.handle)
        self._failed = False
        super().emit(record)  # calls handleError if the write fails
        if not self._failed:
            self.trouble.worked(self.baseFilename)


class _Guarded:
    """The runner as the queue's handler: a message that fails for want of storage (the store or a
    log cannot be written) is reported through the agent's TroubleLog and the worker backs off,
    instead of a traceback per message at full speed. The message is dropped, not lost: the task
    is still queued in the store, and the sweep re-sends it once the store works again."""

    def __init__(self, runner: Runner, trouble: TroubleLog, where: str, stop: Any) -> None:
        self.runner, self.trouble, self.where, self.stop = runner, trouble, where, stop
        self.backoffs = {"task": Backoff(), "finishing step": Backoff()}  # each activity says "recovered" itself

    def run(self, task_id: int, dispatch: int, job_id: int | None = None) -> None:
        self._call("task", self.runner.run, task_id, dispatch, job_id)

    def finalize(self, job_id: int) -> None:
        self._call("finishing step", self.runner.finalize, job_id)

    def _call(self, activity: str, fn: Any, *args: Any) -> None:
        backoff = self.backoffs[activity]
        try:
            fn(*args)
        except Exception as exc:
            self.trouble.failed(activity, exc, self.where)
            self.stop.wait(backoff.failed())
        else:
            if backoff.failures:
                backoff.reset()
                self.trouble.ok(activity)
