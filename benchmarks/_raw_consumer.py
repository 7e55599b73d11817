"""The baseline: plain SqliteHuey with a trivial task, no Job Manager.

Imported by ``bench_throughput.py`` to enqueue, and imported in a subprocess to consume
(``import _raw_consumer; _raw_consumer.main()`` with argv ``QUEUE_DB N WORKERS``: imported,
not run as ``__main__``, so the task's registry name matches the enqueuer's).

The consumer counts completions with Huey's ``SIGNAL_COMPLETE`` (no extra write
per task), prints ``ready`` once its workers run and ``done <time.time()>`` when
the N-th task has executed, then keeps running until it is terminated.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from huey import SqliteHuey
from huey.signals import SIGNAL_COMPLETE
from huey.storage import SqliteStorage


def make_huey(path: str, normal: bool = False) -> tuple[SqliteHuey, Callable[..., Any]]:
    """Plain SqliteHuey (``synchronous=FULL``, Huey's default), or with ``normal`` the very storage class
    the Job Manager's queue uses (``synchronous=NORMAL``), and one trivial task."""
    if normal:
        from huey.api import Huey

        from jobmanager.engine.queue import QueueStorage

        huey = Huey("bench", storage_class=QueueStorage, filename=path, results=False, utc=True, timeout=30)
        huey.storage.served = ("bench",)  # QueueStorage dequeues the Job Manager's queue names unless told
    else:
        huey = SqliteHuey(name="bench", filename=path, results=False, utc=True, timeout=30)

    @huey.task(name="bench.noop")
    def noop(i: int) -> None:
        return None

    return huey, noop


def enqueue_bulk(huey: SqliteHuey, task: Callable[..., Any], n: int) -> None:
    """All N messages in one transaction, exactly as ``Queue.send`` does it."""
    storage = huey.storage
    assert isinstance(storage, SqliteStorage)
    rows = [(storage.name, storage.to_blob(huey.serialize_task(task.s(i))), 0) for i in range(n)]
    with storage.db(commit=True) as curs:
        curs.executemany("insert into task (queue, data, priority) values (?, ?, ?)", rows)


def enqueue_each(huey: SqliteHuey, task: Callable[..., Any], n: int) -> None:
    """One ``task(i)`` call (one transaction) per message: how plain Huey code enqueues."""
    for i in range(n):
        task(i)


def main() -> None:
    path, n, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    huey, _ = make_huey(path, normal=len(sys.argv) > 4 and sys.argv[4] == "normal")
    lock = threading.Lock()
    count = 0

    @huey.signal(SIGNAL_COMPLETE)
    def completed(signal: str, task: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal count
        with lock:
            count += 1
            if count == n:
                print(f"done {time.time():.6f}", flush=True)

    consumer = huey.create_consumer(
        workers=workers, worker_type="thread", periodic=False, initial_delay=0.005, max_delay=0.05, backoff=1.15,
    )
    print("ready", flush=True)
    consumer.run()
