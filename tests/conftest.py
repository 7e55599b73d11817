"""Fixtures: real homes in tmp_path and real agent processes started with the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jobmanager import JobManager

from .backends import prepare_home, pytest_collection_modifyitems  # noqa: F401  (hook of the sqlite_only mark)

SUPPORT = Path(__file__).parent / "support"
HEARTBEAT = 0.3  # seconds; an agent is lost after 3 silent intervals


def agent_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SUPPORT), env.get("PYTHONPATH", "")])
    return env


ADMIN_PASSWORD = "admin-password-1"
#: users every test home has, all administrators (tests/test_permissions.py builds narrower ones)
TEST_USERS = ("tester", "cli-user")


@pytest.fixture
def home(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    path = tmp_path / "home"
    prepare_home(path, request)  # JOBMANAGER_TEST_BACKEND=pg-redis: a fresh PG schema + Redis db
    with JobManager.init(path, admin_password=ADMIN_PASSWORD) as admin:
        for name in TEST_USERS:
            admin.add_user(name, f"{name}-password", groups=["admins"])
    # tests write job inputs (documents, notebooks, CSV files) next to the home; the home's own files
    # (logs, artifacts, store, config) stay unreadable to jobs although tmp_path contains the home
    cfg = path / "jobmanager.toml"
    folder = json.dumps(str(tmp_path))
    cfg.write_text(cfg.read_text().replace("input_dirs = []", f"input_dirs = [{folder}]\nnotebook_dirs = [{folder}]"))
    return path


@pytest.fixture
def jm(home: Path) -> Iterator[JobManager]:
    manager = JobManager(home, user="tester", imports=("jm_test_types",))
    sys.path.insert(0, str(SUPPORT))
    yield manager
    manager.close()
    sys.path.remove(str(SUPPORT))


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class AgentProcess:
    def __init__(self, home: Path, name: str, workers: int, log: Path, extra: tuple[str, ...]) -> None:
        self.name = name
        self.log = log
        cmd = [sys.executable, "-m", "jobmanager", "--home", str(home), "agent", "--name", name,
               "--workers", str(workers), "--heartbeat", str(HEARTBEAT), "--import", "jm_test_types",
               "--shutdown-timeout", "5", *extra]
        self.proc = subprocess.Popen(cmd, env=agent_env(), stdout=log.open("w"), stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no clean-up runs, as in a crash."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def start_agent(home: Path, tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Start a real agent process and wait until it is online."""
    started: list[AgentProcess] = []

    def start(name: str = "a1", workers: int = 2, *extra: str, wait: bool = True) -> AgentProcess:
        agent = AgentProcess(home, name, workers, tmp_path / f"agent-{name}-{len(started)}.log", extra)
        started.append(agent)
        if wait:
            with JobManager(home, user="tester") as jm:
                def online() -> bool:
                    if agent.proc.poll() is not None:
                        raise AssertionError(f"agent {name} exited:\n{agent.output()}")
                    df = jm.agents()
                    row = df[(df.name == name) & (df.pid == agent.pid)]
                    return not row.empty and row.iloc[0].status in ("idle", "busy")
                wait_for(online, what=f"agent {name} online")
        return agent

    yield start
    for agent in started:
        agent.stop()
