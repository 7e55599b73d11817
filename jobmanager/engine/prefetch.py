"""Prefetch: while tasks are short, one dequeue takes several messages (issue 18).

Each dequeue from the SQLite queue is a write transaction on the queue file, and the agent's
worker threads take turns at it (on Redis, each is a round trip). When a worker thread's previous
message was short (it came back for the next within ``short_s``), its dequeue takes up to ``batch``
messages in one transaction (one ``ZPOPMIN`` on Redis) and keeps all but the first in a buffer the
agent's workers share; the next dequeues take from the buffer without touching the queue. A thread
whose previous task was long takes one message, as before, so a queue of long tasks is spread over
every free worker exactly as it was.

Claims ahead (SQLite, ``Dialect.claims_ahead``): the batch's tasks are claimed in one store transaction as
it is taken (``claim``, the agent's :meth:`jobmanager.engine.runner.Runner.claim_ahead`); a message whose
task was not claimed (stale, or waiting for a limit's slot) is dropped, one the store leaves for later
stays a plain message. Without a ``claim`` hook (PostgreSQL) every buffered message is one not yet claimed.

Why nothing is lost, run twice or held back:

- A message is only a task's id and dispatch counter; the store's conditional claim decides whether
  it runs. A claimed task is read again before it starts, so a cancel, a pause or a retry that reaches
  the store after its claim is seen as it would be for a message still in the queue.
- A buffered message older than ``hold_s`` goes back to the queue (with its own id, so it keeps its
  place among messages of its priority) by a keeper thread, its task given back first if it was
  claimed (``release``: queued again with the same dispatch, no attempt spent): a long task that follows
  short ones does not keep the tasks behind it from idle workers, here or in other agents.
- A graceful stop does the same for the whole buffer (:meth:`Prefetch.close`). A SIGKILL loses it: the
  tasks of unclaimed messages are still queued in the store, and an agent's sweep sends their messages
  again (when an agent starts, every ``SWEEP_EVERY_S``, and when an agent recovers a lost agent's work);
  claimed ones are running for the dead agent, and whoever recovers it queues them again.
- Priorities: a buffered message can run before a message of higher priority sent after the buffer
  was filled, for at most ``batch - 1`` short tasks and never after ``hold_s``.

Measured (benchmarks/bench_throughput.py, 3,000 trivial tasks, 2 workers, before and after alternated three
times): one job 0.90-1.18 -> 0.97-1.25 of plain SqliteHuey (agent CPU 0.30-0.34 -> 0.28-0.29 ms per task),
300 jobs of 10 0.68-0.79 -> 0.78-0.85 (benchmarks/README.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("jobmanager.engine.agent")

#: messages one dequeue takes at most
BATCH = 8
#: a worker whose previous message took less than this (dequeue to dequeue) takes a batch
SHORT_S = 0.005
#: a buffered message waits at most this long before it goes back to the queue (settings allow 5 ms to 4 s:
#: less would have the keeper spin, more would outlast the sweep's minimum age, SWEEP_MIN_AGE_S = 5 s)
HOLD_S = 0.05
MIN_HOLD_S = 0.005
#: the keeper sleeps (until a batch is taken) after this long without buffered messages
KEEPER_IDLE_S = 1.0


@dataclass(frozen=True)
class Message:
    """A queue row: its id (its place among messages of its priority), Huey queue name, data, priority."""

    id: int
    queue: str
    data: bytes
    priority: float


class Prefetch:
    """The shared buffer of one agent process's worker threads (thread workers only: a forked worker
    process would copy it).

    ``pop(k)`` takes up to ``k`` messages from the queue in one transaction, best first; ``put_back``
    returns messages to the queue (in one transaction) and wakes idle agents.
    """

    def __init__(self, pop: Callable[[int], list[Message]], put_back: Callable[[list[Message]], None], *,
                 batch: int = BATCH, short_s: float = SHORT_S, hold_s: float = HOLD_S,
                 claim: Callable[[list[Message]], list[bool | None]] | None = None,
                 release: Callable[[list[Message], str], list[Message]] | None = None) -> None:
        self._pop, self._put_back = pop, put_back
        self._claim, self._release = claim, release
        self.batch, self.short_s, self.hold_s = max(1, batch), short_s, max(MIN_HOLD_S, hold_s)
        # (message, taken at, claimed): best first within a batch; batches in time order
        self._held: deque[tuple[Message, float, bool]] = deque()
        self._cond = threading.Condition()
        self._local = threading.local()
        self._keeper: threading.Thread | None = None
        self._keeper_sleeps = False  # only a sleeping keeper is woken: waking it per batch cost 10 % of an agent's CPU
        self._closed = False
        #: dequeues that took more than one message (for tests and benchmarks)
        self.batches = 0

    def take(self) -> bytes | None:
        """The next message for this worker thread: from the buffer, else from the queue."""
        now = time.monotonic()
        # short: this thread's previous message came back within short_s (an empty dequeue does not count:
        # after an idle spell the first message is taken alone, so a queue of long tasks is never claimed ahead)
        took = now - getattr(self._local, "last", float("-inf"))
        self._local.last = now
        with self._cond:
            if self._held:
                return self._held.popleft()[0].data
            closed = self._closed
        messages = self._pop(1 if closed else self.size(took))
        if not messages:
            self._local.last = float("-inf")
            return None
        if len(messages) > 1:
            claimed: list[bool | None] = [None] * len(messages) if self._claim is None else self._claim(messages)
            # a message whose claim was decided against (stale, or waiting for a limit's slot) is dropped
            kept = [(m, now, bool(c)) for m, c in zip(messages[1:], claimed[1:], strict=True) if c is not False]
            with self._cond:
                if self._closed:  # closed meanwhile: back to the queue at once
                    rest = kept
                else:
                    rest = []
                    self._held.extend(kept)
                    self.batches += 1
                    self._start_keeper()
                    if self._keeper_sleeps:
                        self._cond.notify()
            if rest:
                self._give_back(rest, "the agent is stopping")
        return messages[0].data

    def size(self, took: float) -> int:
        """How many messages a dequeue takes after a message that took ``took`` seconds: one after a long one;
        after a short one, ``batch`` at most, and no more than this thread alone would run in half the hold
        time at that pace (the others then rarely wait long enough to be given back)."""
        if took >= self.short_s:
            return 1
        return max(2, min(self.batch, int(self.hold_s / 2 / max(took, 1e-5))))

    def held(self) -> list[bytes]:
        """The buffered messages' data (the sweep counts them as queued)."""
        with self._cond:
            return [m.data for m, _, _ in self._held]

    def close(self) -> None:
        """Put every buffered message back and stop the keeper (a graceful stop)."""
        with self._cond:
            self._closed = True
            rest = list(self._held)
            self._held.clear()
            self._cond.notify()
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.join()
        if rest:
            self._give_back(rest, "the agent stopped before it started")

    def _give_back(self, held: list[tuple[Message, float, bool]], why: str) -> None:
        """Put messages back, after giving back the tasks claimed for them (``release``: queued again in the
        store, with the dispatch of their messages, which go back in their places). If the queue cannot be
        written (a full disk), say so: the store still has the tasks queued, and the sweep sends them again.
        Never raises (a stop must go on)."""
        claimed = [m for m, _, c in held if c]
        messages = [m for m, _, c in held if not c]
        try:
            if claimed and self._release is not None:  # the messages of the tasks queued again go back too
                messages = sorted(messages + self._release(claimed, why), key=lambda m: (-m.priority, m.id))
            if messages:
                self._put_back(messages)
        except Exception as exc:  # noqa: BLE001
            log.warning("prefetch: %d messages could not be put back in the queue (%s); the sweep sends "
                        "them again", len(held), exc)

    def _start_keeper(self) -> None:  # under self._cond
        if self._keeper is None:
            keeper = threading.Thread(target=self._keep, name="prefetch", daemon=True)
            try:
                keeper.start()
            except RuntimeError as exc:  # no thread to be had: the workers still take the buffer; the next batch
                log.warning("prefetch: the keeper thread did not start (%s)", exc)  # tries again
                return
            self._keeper = keeper

    def _keep(self) -> None:
        """Put back what waited ``hold_s``: it looks every ``hold_s / 2`` while messages were taken in the
        last second, and otherwise sleeps until a batch is taken."""
        seen = time.monotonic()
        while True:
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                if self._held:
                    seen = now
                elif now - seen > KEEPER_IDLE_S:
                    self._keeper_sleeps = True
                    while not self._held and not self._closed:
                        self._cond.wait()
                    self._keeper_sleeps = False
                    continue
                aged = []
                while self._held and now - self._held[0][1] >= self.hold_s:
                    aged.append(self._held.popleft())
                if not aged:
                    self._cond.wait(self.hold_s / 2)
                    continue
            self._give_back(aged, f"not started within {self.hold_s * 1000:g} ms of its claim (the agent's workers"
                                  " were busy)")
