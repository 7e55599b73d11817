"""Waking idle agents (jobmanager/engine/wake.py): a queued message starts at once, not at the next poll.

The agents here poll only once a minute, so a job that starts within the test's 20 s wait was started by
a wake-up: without one these tests fail. The sender side is fed hostile folders (links, plain files,
FIFOs nobody reads) and must neither block, nor raise, nor write anywhere but into a FIFO.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobmanager import JobManager
from jobmanager.backends import queue_at
from jobmanager.engine.wake import FIFO_NAME, WakeListener, wake_all, wake_dir
from jobmanager.home import Home

from .backends import sqlite_only
from .conftest import agent_env, wait_for

#: an agent whose idle workers poll once a minute (so only a wake-up starts a task within the test)
SLOW_AGENT = """
import sys
from jobmanager.engine.agent import Agent, Polling
from jobmanager.home import Home
home, name, wake = sys.argv[1], sys.argv[2], sys.argv[3] == "wake"
agent = Agent(Home.open(home), name=name, workers=2, interval=0.3,
              polling=Polling(initial_delay=60, max_delay=60, backoff=1, woken_max_delay=60, wake=wake))
agent.prepare()
agent.run()
"""


@pytest.fixture
def slow_agent(home: Path, tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str = "slow", wake: bool = True) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-c", SLOW_AGENT, str(home), name, "wake" if wake else "poll"],
                                env=agent_env(), stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        with JobManager(home, user="tester") as jm:
            def online() -> bool:
                df = jm.agents()
                return bool(((df.name == name) & (df.pid == proc.pid) & (df.status == "idle")).any())
            wait_for(online, what=f"agent {name} online")
        time.sleep(0.5)  # its workers have looked once and sleep now (for a minute)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(15)


def _finished(jm: JobManager, job: int) -> bool:
    return jm.job(job).state == "completed"


pytestmark = sqlite_only  # a Redis queue needs no wake-up: its workers block on the queue


def test_an_idle_agent_starts_a_submitted_job_when_woken_not_at_its_next_poll(
        jm: JobManager, home: Path, slow_agent: Any) -> None:
    slow_agent()
    for _ in range(3):  # woken again and again, also after it went back to sleep
        job = jm.submit("sleep", {"tasks": 3, "seconds": 0})
        wait_for(lambda job=job: _finished(jm, job), timeout=20, what="the job to finish after a wake-up")
        time.sleep(0.3)


def test_without_a_wake_up_the_same_agent_waits_for_its_poll(jm: JobManager, slow_agent: Any) -> None:
    """The control: the test above would pass for another reason if this one finished too."""
    slow_agent(wake=False)
    job = jm.submit("sleep", {"tasks": 1, "seconds": 0})
    time.sleep(3)
    assert jm.job(job).state == "queued"


def test_a_stopped_agent_takes_its_fifo_with_it(home: Path, slow_agent: Any) -> None:
    folder = wake_dir(queue_at(Home.open(home)).path)
    proc = slow_agent()
    fifos = [n for n in os.listdir(folder) if FIFO_NAME.match(n)]
    assert len(fifos) == 1 and fifos[0].startswith(f"{proc.pid}-")
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    proc.terminate()
    assert proc.wait(15) == 0
    assert not [n for n in os.listdir(folder) if FIFO_NAME.match(n)]


def test_a_killed_agents_fifo_is_harmless_and_removed_by_the_next_listener(tmp_path: Path) -> None:
    queue_file = tmp_path / "queue.db"
    folder = wake_dir(queue_file)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    os.mkdir(folder, 0o700)
    os.mkfifo(folder / f"{dead.pid}-0123abcd.wake", 0o600)  # what a SIGKILLed agent leaves behind
    wake_all(queue_file)  # nobody reads it: no block, no error
    event = threading.Event()
    listener = WakeListener(queue_file, event)
    assert listener.start()
    try:
        assert sorted(os.listdir(folder)) == [listener.path.name]  # type: ignore[union-attr]
        wake_all(queue_file)
        assert event.wait(5)
    finally:
        listener.close()
    assert os.listdir(folder) == []


def test_senders_write_into_fifos_only(tmp_path: Path) -> None:
    queue_file = tmp_path / "queue.db"
    wake_all(queue_file)  # no folder yet: nothing to do
    folder = wake_dir(queue_file)
    os.mkdir(folder, 0o700)
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    plain = folder / "1-00000000.wake"
    plain.write_text("")
    (folder / "2-00000000.wake").symlink_to(target)
    (folder / "3-00000000.wake").symlink_to(tmp_path / "nowhere")
    os.mkfifo(folder / "notes.txt")  # not a listener's name: never opened
    os.mkdir(folder / "4-00000000.wake")
    for _ in range(3):
        wake_all(queue_file)
    assert target.read_text() == "keep me" and plain.read_text() == ""
    assert not (tmp_path / "nowhere").exists()


def test_a_full_fifo_does_not_block_a_sender(tmp_path: Path) -> None:
    queue_file = tmp_path / "queue.db"
    event = threading.Event()
    listener = WakeListener(queue_file, event)
    assert listener.start()
    try:
        listener._closing.set()  # the reader stops draining
        assert listener._thread is not None
        listener._thread.join(5)
        done = threading.Event()

        def flood() -> None:
            for _ in range(100_000):  # far beyond a pipe's 64 KiB
                wake_all(queue_file)
            done.set()

        threading.Thread(target=flood, daemon=True).start()
        assert done.wait(60), "a sender blocked on a full FIFO"
    finally:
        listener.close()


@pytest.mark.parametrize("unsafe", ["world-writable", "a file", "a link"])
def test_an_unsafe_wake_folder_means_polling_not_failing(tmp_path: Path, unsafe: str) -> None:
    queue_file = tmp_path / "queue.db"
    folder = wake_dir(queue_file)
    if unsafe == "world-writable":
        os.mkdir(folder)
        os.chmod(folder, 0o777)
    elif unsafe == "a file":
        folder.write_text("")
    else:
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        folder.symlink_to(tmp_path / "elsewhere")
    listener = WakeListener(queue_file, threading.Event())
    assert listener.start() is False
    listener.close()
    if unsafe == "a link":
        assert os.listdir(tmp_path / "elsewhere") == []


def test_an_agent_with_an_unsafe_wake_folder_still_runs_jobs(jm: JobManager, home: Path, start_agent: Any) -> None:
    folder = wake_dir(queue_at(Home.open(home)).path)
    os.mkdir(folder)
    os.chmod(folder, 0o777)
    agent = start_agent()
    job = jm.submit("sleep", {"tasks": 2, "seconds": 0})
    wait_for(lambda: _finished(jm, job), what="the job on a polling agent")
    assert "idle workers only poll" in agent.output()
