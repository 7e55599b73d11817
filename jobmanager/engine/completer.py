"""The batched completer: an agent's finished tasks written to the store in one transaction per batch.

A worker that finishes a task hands its outcome (:class:`~jobmanager.models.Finish`) to the
completer and takes the next message at once; the completer's thread writes what has gathered
when the batch is full (``completer_batch`` tasks) or ``completer_flush_ms`` after the first
outcome of the batch arrived, whichever comes first (River's batch completer does the same; its
defaults are 50 ms and 100). One transaction per batch (:meth:`JobStore.finish_tasks`): one
UPDATE for the tasks that succeeded, the events in one multi-row INSERT, each job's counters and its
settling once per batch. Retries, freed concurrency-limit slots and due finishing steps are sent
to the queue after the commit (:meth:`Engine.finish_tasks`).

The guarantee (also in the README, "How it works"):

- A finished task becomes durable within ``completer_flush_ms`` (plus the time of the write; while
  the store cannot be written the outcome is kept and retried with back-off, as before).
- Until then the task stays ``running`` in the store and in the agent's heartbeat report (so the
  heartbeat's reconcile never takes it back). An agent killed inside that window loses the
  outcome: the task is handed back as a lost agent's task (no attempt spent, a loss counted,
  ``max_losses`` applies) and runs again, so a task runs at least once, never is recorded twice.
- A graceful stop writes the buffer (:meth:`Completer.close`) before the agent reports itself
  stopped; only outcomes the store would not take are handed back, as a stop's tasks are.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from jobmanager.engine.engine import Engine
from jobmanager.models import Completed, Finish
from jobmanager.trouble import TroubleLog

log = logging.getLogger("jobmanager.engine.agent")


class Completer:
    """Gathers finished tasks and writes them in batches from its own thread.

    ``stored`` runs a store write (the agent's until-the-store-answers loop); ``written`` is called
    with the ids of a batch once the store has them (or has refused them for good), before anything is
    sent, so the runner stops reporting them before a retry of one can be claimed again.
    """

    def __init__(self, engine: Engine, agent: str, *, flush_ms: float, batch: int,
                 stored: Callable[[Callable[[], Any]], Any], written: Callable[[list[int]], None],
                 trouble: TroubleLog) -> None:
        self.engine, self.agent = engine, agent
        self.flush_s, self.batch = max(0.0, flush_ms) / 1000.0, max(1, batch)
        self.stored, self.written, self.trouble = stored, written, trouble
        self._buffer: list[Finish] = []
        self._first_at = 0.0
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        #: batches and tasks written (for tests and benchmarks)
        self.batches = 0
        self.tasks = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="completer", daemon=True)
        self._thread.start()

    def finish(self, outcome: Finish) -> None:
        """Hand over one finished task (returns at once)."""
        with self._cond:
            if not self._buffer:
                self._first_at = time.monotonic()
            self._buffer.append(outcome)
            if len(self._buffer) in (1, self.batch):  # the thread waits for a first outcome, then for a full batch
                self._cond.notify()
        if self._thread is None:  # not started (no thread): written at once, as before batching
            self._write(self._take())

    def close(self) -> None:
        """Write everything buffered, then stop the thread (a graceful stop, before the agent reports
        itself stopped)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        while True:  # anything handed over after the thread ended
            items = self._take()
            if not items:
                return
            self._write(items)

    def _take(self) -> list[Finish]:
        with self._cond:
            items, self._buffer = self._buffer[:self.batch], self._buffer[self.batch:]
            if self._buffer:
                self._first_at = time.monotonic()
            return items

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._buffer and not self._closing:
                    self._cond.wait()
                if not self._buffer:
                    return  # closing, nothing left
                while len(self._buffer) < self.batch and not self._closing:
                    left = self._first_at + self.flush_s - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            self._write(self._take())

    def _write(self, items: list[Finish]) -> None:
        if not items:
            return
        ids = [f.task_id for f in items]
        try:
            done: Completed = self.engine.finish_tasks(self.agent, items, stored=self.stored,
                                                       written=lambda: self.written(ids))
        except Exception as exc:  # noqa: BLE001 - one bad outcome (text the database refuses) must not drop
            # the others: write them one at a time; what still fails is handed back by recovery (a loss)
            if len(items) == 1:
                self.written(ids)
                self.trouble.failed("recording outcomes", exc, "the store")
                return
            log.warning("completer: a batch of %d could not be written (%s); writing them one by one",
                        len(items), exc)
            for item in items:
                self._write([item])
            return
        self.trouble.ok("recording outcomes")  # after a bad outcome (below), the next batch that is written
        self.batches += 1
        self.tasks += len(done.recorded)
        log.debug("completer: wrote %d of %d finished tasks", len(done.recorded), len(items))
