"""Hard time limits: a task of a job with a hard limit runs in a child process the agent can kill.

Python cannot stop a thread from outside, and a task stuck in ``while True: pass`` never calls its
context, so a worker thread cannot end it. For a job with a hard limit the agent's worker thread starts
a child process (multiprocessing, "forkserver": the agent's threads and open connections are never
forked, and each child is a cheap fork of a small server process that imported Job Manager and the
agent's job type modules once). The child imports the same job types (entry points and the agent's
``--import`` modules), opens its own store connection (for ``ctx.progress``, ``ctx.cancelled`` and the
outputs), runs the task with :func:`jobmanager.engine.runner.run_task` exactly as a worker thread
would (the soft limit works there too), appends the task's log to its worker thread's file
(inside the part the thread's index recorded at the start; the thread writes nothing while it waits), and sends back
(state, error, traceback). At the hard limit the worker thread ends the child (SIGTERM, then SIGKILL
after :data:`TERM_GRACE_S`) and the task fails "timed out after S s (hard limit)".

The child never records the outcome itself: it hands it to the worker thread, which records it through
``Engine.finish_task`` as for any task. One place writes outcomes (retries, the job's finishing step,
the until-the-store-answers loop all stay there), and a child killed at any moment cannot leave half
an outcome behind: either the agent got its answer, or the agent records the timeout (or the crash).

Tasks of jobs without a hard limit keep running in the worker thread and pay nothing for this.
``benchmarks/bench_time_limits.py`` measures what a hard limit costs per task.

A child ends itself if its agent dies (the pipe to the agent closes), so a SIGKILLed agent leaves no task
running behind the store's back; an agent that stops kills the children still running at exit.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback as tb
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from jobmanager import jobtypes
from jobmanager.engine.logcapture import SliceFiles, router
from jobmanager.engine.states import TaskState
from jobmanager.home import Home
from jobmanager.models import Job, Task

log = logging.getLogger("jobmanager.engine.agent")

#: seconds between SIGTERM and SIGKILL when a child is ended at its hard limit
TERM_GRACE_S = 2.0
#: seconds a child may take to start a task (import, open the store) before it is killed
START_TIMEOUT_S = 60.0
#: seconds to wait for a child that sent its outcome to exit, before it is killed
EXIT_WAIT_S = 5.0

Outcome = tuple[str, str | None, str | None]


def hard_limit_error(limit: float) -> str:
    return f"timed out after {limit:g} s (hard limit)"


class ChildTasks:
    """Runs tasks in child processes for one agent (one child per task attempt)."""

    def __init__(self, home: Home, agent: str, store_module: str = "jobmanager.store.sqlite",
                 logs: SliceFiles | None = None) -> None:
        self.home = home
        self.agent = agent
        #: the worker threads' log files: a child appends its task's records to its thread's file
        self.logs = logs or SliceFiles(home)
        self.store_module = store_module
        self._mp: Any = None
        self._lock = threading.Lock()
        self._running: set[BaseProcess] = set()

    def _context(self) -> Any:
        """The forkserver context, made at the first task that needs it. The server preloads Job Manager's
        engine, the store's backend and every job type module the agent has (entry points and ``--import``
        modules, so their types are registered), and each child starts as a fork of it: measured, a child
        that imported the job types and the store backend itself took ~300 ms more per task."""
        with self._lock:
            if self._mp is None:
                mp = multiprocessing.get_context("forkserver")
                types = sorted({type(jobtypes.get(name)).__module__ for name in jobtypes.registered()})
                # "__main__": the agent's main script (the ``jobmanager`` console script) runs once in the server,
                # not again in every child (where it would import the whole CLI each time)
                mp.set_forkserver_preload(["__main__", "jobmanager.engine.runner", "jobmanager.backends",
                                           self.store_module, *types, *jobtypes.imported()])
                atexit.register(self.kill_all)  # before multiprocessing's own exit hook, which would wait for them
                self._mp = mp
            return self._mp

    def run(self, job: Job, task: Task) -> Outcome:
        """Run ``task`` in a child and wait for its outcome, at most the job's hard limit from the moment
        the child starts the task (a child's start-up, longer for the first one while the fork server
        starts, does not count against the task)."""
        assert job.hard_limit is not None
        limit = job.hard_limit
        mp = self._context()
        ours, theirs = mp.Pipe()
        log_path = self.logs.path()  # the thread's file, whose index recorded where this part begins
        proc = mp.Process(target=_child_main, name=f"jm-task-{task.id}",
                          args=(theirs, self.home, jobtypes.imported(), self.agent, job, task, log_path))
        proc.start()
        theirs.close()
        with self._lock:
            self._running.add(proc)
        result: Outcome | None = None
        why = "timeout"
        try:
            message = _receive(ours, START_TIMEOUT_S)
            if message is None:
                why = "no start"
            elif message[0] == "started":
                message = _receive(ours, limit)
            if message is not None and message[0] == "outcome":
                result = message[1]
            elif message is not None and message[0] == "ended":
                why = "crash"
            if result is None:
                self._end(proc, TERM_GRACE_S)
            else:
                proc.join(EXIT_WAIT_S)
                if proc.is_alive():
                    self._end(proc, TERM_GRACE_S)
        finally:
            ours.close()
            with self._lock:
                self._running.discard(proc)
        if result is not None:
            return result
        if why == "timeout":
            error = hard_limit_error(limit)
            what = f"task stopped: {error}; its process was ended"
        elif why == "no start":
            error = f"the task's process did not start within {START_TIMEOUT_S:g} s"
            what = f"task failed: {error}"
        else:
            error = f"the task's process ended without an outcome (exit code {proc.exitcode})"
            what = f"task failed: {error}"
        log.warning("job %s task %s: %s", job.id, task.seq, what)
        from jobmanager.engine.runner import task_header

        with router().capture(self.logs.target(), task_header(job, task, self.agent)):
            logging.getLogger(f"jobmanager.job.{job.type}").error(what)
        return TaskState.FAILED, error, None

    @staticmethod
    def _end(proc: BaseProcess, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        proc.terminate()
        proc.join(grace)
        if proc.is_alive():
            proc.kill()
            proc.join()

    def kill_all(self) -> None:
        """At the agent's exit: end the children still running (their tasks were handed back)."""
        with self._lock:
            running = list(self._running)
        for proc in running:
            if proc.is_alive():
                proc.kill()
                proc.join(1)


def _receive(conn: Connection, timeout: float) -> tuple[str, Any] | None:
    """The child's next message; ("ended", None) if it ended without one; None after ``timeout`` s."""
    if not conn.poll(timeout):
        return None
    try:
        message: tuple[str, Any] = conn.recv()
    except (EOFError, OSError):  # the child ended without an answer (a crash, os._exit)
        return ("ended", None)
    return message


def _child_main(conn: Connection, home: Home, imports: tuple[str, ...], agent: str, job: Job, task: Task,
                log_path: Path) -> None:
    """The child process: run the task with its own store connection, send back the outcome."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the agent gracefully; the agent decides
    threading.Thread(target=_end_with_agent, args=(conn,), name="agent-watch", daemon=True).start()
    from jobmanager.engine.runner import _one_line, run_task
    from jobmanager.store import open_store

    try:
        if job.type not in jobtypes.registered():  # preloaded by the fork server, unless that import failed there
            jobtypes.discover(imports)
        store = open_store(home)
    except Exception as exc:
        conn.send(("outcome", (TaskState.FAILED, _one_line(exc), tb.format_exc())))
        return
    try:
        started = time.time()
        conn.send(("started", started))
        outcome = run_task(home, store, agent, job, task, started_at=started, log_to=log_path)
    finally:
        store.close()
    conn.send(("outcome", outcome))
    # The task's log is closed and its store connection too: skip the interpreter's clean-up of every module
    # the fork server loaded (measured: tens of ms a task), which only delays the agent's join.
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


def _end_with_agent(conn: Connection) -> None:
    """Wait on the pipe to the agent (which never writes to it): it closes when the agent is gone."""
    try:
        conn.recv()
    except (EOFError, OSError):
        pass
    os._exit(1)
