"""Waking an idle agent when a message is queued, instead of polling fast.

Huey's workers poll a SQLite queue: an idle worker sleeps ``delay`` between two looks, growing to
``max_delay``. Polling fast enough for a start within a few milliseconds costs an idle agent about
1 % of a core (two workers at 50 ms); polling slowly costs latency. So each agent on this host listens
on a FIFO of its own in ``<queue file>.wake/``, and every process that queues messages writes one byte
into each FIFO there after its commit (:func:`wake_all`). An idle worker waits on that, so a submitted
task starts within a millisecond or two, and the slow poll that remains (``Polling.max_delay``) is only
the safety net for a wake that never came.

A wake carries nothing but "look now": a stray or hostile byte only costs one empty look, and a lost one
costs at most one poll interval. Nothing here is trusted: the senders open FIFOs without following
links and without blocking, and write only into FIFOs; the listener refuses a folder that is not the
agent's own. With the Redis queue a worker blocks on Redis itself (``BRPOP``), so nothing is needed.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import select
import stat
import threading
from pathlib import Path
from typing import Any

import psutil
from huey.consumer import Consumer, Worker

log = logging.getLogger("jobmanager.engine.agent")

#: a listener's FIFO name: the agent's pid and a random part (one process may run several agents)
FIFO_NAME = re.compile(r"^(\d{1,10})-[0-9a-f]{8}\.wake$")


def wake_dir(queue_file: Path) -> Path:
    """The folder of the FIFOs of the agents consuming ``queue_file``."""
    return queue_file.with_name(queue_file.name + ".wake")


def wake_all(queue_file: Path) -> None:
    """Tell every agent listening on this queue file to look now. Never blocks, never raises."""
    folder = wake_dir(queue_file)
    try:
        names = os.listdir(folder)
    except OSError:  # no agent ever listened here (or the folder is not ours to read)
        return
    for name in names:
        if FIFO_NAME.match(name):
            _poke(folder / name)


def _poke(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # ENXIO: nobody reads it (an agent that died); ELOOP: a link; gone meanwhile
        return
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.write(fd, b"!")
    except OSError:  # EAGAIN: the pipe is full, so a wake is pending anyway
        pass
    finally:
        os.close(fd)


class WakeListener:
    """An agent's FIFO: sets ``event`` whenever a sender pokes it. ``start`` returns False (and the
    agent simply polls) when the folder cannot be made safely."""

    def __init__(self, queue_file: Path, event: threading.Event) -> None:
        self.folder = wake_dir(queue_file)
        self.event = event
        self.path: Path | None = None
        self._fds: list[int] = []
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        try:
            self._make_folder()
            self._forget_dead()
            path = self.folder / f"{os.getpid()}-{secrets.token_hex(4)}.wake"
            os.mkfifo(path, 0o600)
            self.path = path
            reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
            self._fds.append(reader)
            # Our own writer end keeps the FIFO from reporting "hang-up" to poll() between senders.
            self._fds.append(os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC))
        except OSError as exc:
            log.warning("no wake-up FIFO in %s (%s): idle workers only poll", self.folder, exc.strerror or exc)
            self.close()
            return False
        self._thread = threading.Thread(target=self._listen, args=(reader,), name="wake", daemon=True)
        self._thread.start()
        return True

    def _make_folder(self) -> None:
        try:
            os.mkdir(self.folder, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(self.folder)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise OSError(errno.EPERM, "not a private folder of this user")

    def _forget_dead(self) -> None:
        """FIFOs of agents that died without closing (SIGKILL): removed, so senders stop opening them."""
        for name in os.listdir(self.folder):
            m = FIFO_NAME.match(name)
            if m is None or psutil.pid_exists(int(m.group(1))):
                continue
            try:
                os.unlink(self.folder / name)
            except OSError:
                pass

    def _listen(self, reader: int) -> None:
        poller = select.poll()
        poller.register(reader, select.POLLIN)
        while not self._closing.is_set():
            try:
                if not poller.poll(1000):
                    continue
                while os.read(reader, 4096):  # drain: many pokes are one wake
                    pass
            except BlockingIOError:
                pass
            except OSError:  # closed under us
                return
            self.event.set()

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()


class WakingWorker(Worker):
    """A Huey worker whose idle sleep ends early when ``wake`` is set (a message was queued)."""

    delay: float
    default_delay: float
    max_delay: float
    backoff: float

    def __init__(self, *args: Any, wake: threading.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wake = wake

    def sleep(self) -> None:
        delay: float = min(self.delay, self.max_delay)
        if self.wake.wait(delay):
            # Every sleeping worker wakes; one takes the message, the others find nothing and sleep again.
            self.wake.clear()
            self.delay = self.default_delay
        else:
            self.delay = delay * self.backoff


class WakingConsumer(Consumer):
    """Huey's consumer with :class:`WakingWorker` workers; stopping it wakes them, so none sleeps on."""

    def __init__(self, huey: Any, wake: threading.Event, **options: Any) -> None:
        self.wake = wake  # before Consumer.__init__, which creates the workers
        super().__init__(huey, **options)

    def _create_worker(self) -> WakingWorker:
        return WakingWorker(huey=self.huey, stop_flag=self.stop_flag, default_delay=self.default_delay,
                            max_delay=self.max_delay, backoff=self.backoff, max_tasks=self.max_tasks,
                            wake=self.wake)

    def stop(self, graceful: bool = False) -> None:
        self.stop_flag.set()
        self.wake.set()
        super().stop(graceful)

