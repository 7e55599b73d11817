"""A full disk and a permission problem, for real (issue 12, item 14).

A full disk once made an agent log about 40 tracebacks a second (9,094 in 4 minutes), and a full
disk or a permission problem was reported as "is not a Job Manager store". Here a home lives on a
real, small tmpfs that the test fills (mounting needs root: the tests skip, saying so, without it),
and a permission problem is met by a process running as ``nobody``. SQLite-specific: on PostgreSQL
the disk that fills is the server's.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobmanager import JobManager
from jobmanager.cli.main import cli
from jobmanager.engine.logcapture import TaskLogRouter
from jobmanager.trouble import Backoff, TroubleLog

from .conftest import ADMIN_PASSWORD, AgentProcess, wait_for

pytestmark = pytest.mark.sqlite_only

TMPFS_MB = 16


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system of TMPFS_MB MiB (a tmpfs), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root (the tests run as root in CI)")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m,mode=0700", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> Path:
    """Write zeros until the file system says ENOSPC; returns the file to delete to make room again."""
    path = disk / "filler"
    chunk = b"\0" * (1 << 20)
    with path.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    assert shutil.disk_usage(disk).free < 64 * 1024
    return path


def test_an_agent_on_a_full_disk_says_so_once_backs_off_and_recovers(small_disk: Path, tmp_path: Path) -> None:
    home = small_disk / "home"
    JobManager.init(home, admin_password=ADMIN_PASSWORD).close()
    out = tmp_path / "agent.out"  # the agent's stderr, on a disk that does not fill
    agent = AgentProcess(home, "a1", 2, out, ())
    try:
        with JobManager(home, user="admin") as jm:
            wait_for(lambda: "started" in out.read_text(), what="agent started")
            job = jm.submit("sleep", {"tasks": 30, "seconds": 0.1})
            wait_for(lambda: jm.job(job).tasks_done >= 2, what="tasks running")
            before = len(out.read_text().splitlines())
            filler = fill(small_disk)
            time.sleep(8)  # ~27 heartbeats at 0.3 s, hundreds of dequeue polls
            during = out.read_text().splitlines()[before:]
            assert agent.proc.poll() is None, "the agent must keep running"
            assert any("disk full writing" in line and str(home) in line for line in during), during
            assert not any("Traceback" in line or "Logging error" in line for line in during), "\n".join(during)
            assert len(during) <= 6, "\n".join(during)  # before: ~40 tracebacks a second
            filler.unlink()  # room again
            wait_for(lambda: "recovered after" in out.read_text(), timeout=45, what="the agent to recover")
            # nothing is stuck: every task ended, those that failed say why
            wait_for(lambda: jm.job(job).state in ("completed", "completed_with_errors"), timeout=60,
                     what=f"job {job} to finish")
            for task in jm.job(job).tasks:
                assert task.state == "succeeded" or "disk full" in (task.error or ""), task
            again = jm.submit("sleep", {"tasks": 3})
            jm.wait(again, timeout=30)
            assert jm.job(again).state == "completed"
        total = out.read_text()
        # each writer that hit the full disk (task outcomes, the queue, heartbeats) says so once, then once
        # that it recovered ("recovered after N s: disk full writing ..."); never a line per retry
        announced = re.findall(r"disk full writing .*; retrying with back-off \(([^)]+)\)", total)
        assert "Traceback" not in total and announced and len(announced) == len(set(announced)), total
        assert total.count("recovered after") <= len(announced), total
    finally:
        agent.stop()


def test_opening_a_store_on_a_full_disk_says_disk_full(small_disk: Path) -> None:
    home = small_disk / "home"
    JobManager.init(home, admin_password=ADMIN_PASSWORD).close()  # closed: no -wal/-shm files left
    filler = fill(small_disk)
    runner = CliRunner()
    result = runner.invoke(cli, ["--home", str(home), "--user", "admin", "submit", "sleep"])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "disk full writing" in result.output, result.output
    assert "not a Job Manager store" not in result.output
    filler.unlink()
    result = runner.invoke(cli, ["--home", str(home), "--user", "admin", "submit", "sleep"])
    assert result.exit_code == 0, result.output


def _as_nobody(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a process that drops to user ``nobody`` (root) or runs as the current user (not root)."""
    code = ("import os, sys\n"
            "from jobmanager.cli.main import cli\n"
            "import jobmanager.store.sqlite, jobmanager.trouble, pwd\n"  # imported before dropping root
            "if os.geteuid() == 0:\n"
            "    nobody = pwd.getpwnam('nobody')\n"
            "    os.setgid(nobody.pw_gid); os.setuid(nobody.pw_uid)\n"
            "sys.argv = ['jobmanager', *sys.argv[1:]]\n"
            "cli()\n")
    return subprocess.run([sys.executable, "-c", code, "--home", str(home), "--user", "admin", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def open_home() -> Iterator[Path]:
    """A home in a folder others may enter (tmp_path's parents are 0700), removed afterwards."""
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("no user 'nobody' to meet a permission problem as")
    top = Path(tempfile.mkdtemp(prefix="jm-perm-"))
    top.chmod(0o755)
    home = top / "home"
    JobManager.init(home, admin_password=ADMIN_PASSWORD).close()
    home.chmod(0o755)
    (home / "jobmanager.toml").chmod(0o644)
    yield home
    shutil.rmtree(top, ignore_errors=True)


def test_a_store_one_may_not_read_says_permission_denied(open_home: Path) -> None:
    store = open_home / "store.db"
    store.chmod(0o000)
    done = _as_nobody(open_home, "jobs")
    assert done.returncode == 2, done
    assert done.stderr.strip().startswith(f"Error: permission denied reading {store}"), done.stderr
    assert "not a Job Manager store" not in done.stderr and "Traceback" not in done.stderr
    store.chmod(0o644)  # readable now, but the folder (for -wal and -shm) is not writable
    done = _as_nobody(open_home, "jobs")
    assert done.returncode == 2 and "permission denied writing" in done.stderr, done.stderr
    assert "not a Job Manager store" not in done.stderr and "Traceback" not in done.stderr


def test_a_file_that_is_not_a_store_says_so(tmp_path: Path) -> None:
    home = tmp_path / "home"
    JobManager.init(home, admin_password=ADMIN_PASSWORD).close()
    for suffix in ("", "-wal", "-shm"):
        (home / f"store.db{suffix}").unlink(missing_ok=True)
    (home / "store.db").write_bytes(b"this is not an SQLite database, just some text" * 100)
    result = CliRunner().invoke(cli, ["--home", str(home), "--user", "admin", "jobs"])
    assert result.exit_code == 2
    assert result.output == f"Error: {home / 'store.db'} is not a Job Manager store (file is not a database)\n"


def test_trouble_log_says_once_reminds_rarely_and_says_when_it_is_over(caplog: pytest.LogCaptureFixture) -> None:
    trouble = TroubleLog(logging.getLogger("test.trouble"), remind_s=0.5)
    full = OSError(28, "No space left on device", "/srv/home/store.db")
    with caplog.at_level(logging.INFO, logger="test.trouble"):
        for _ in range(50):
            trouble.failed("heartbeat", full, "/srv/home/store.db")
            trouble.failed("queue", full, "/srv/home/store.db")
        time.sleep(0.6)
        trouble.failed("heartbeat", full, "/srv/home/store.db")
        trouble.ok("heartbeat")
        trouble.ok("queue")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("disk full writing /srv/home/store.db: No space left on device")
    assert lines[1].startswith("still failing after") and "(100 tries since the last message)" in lines[1]
    assert lines[2].startswith("recovered after")
    assert not any(r.exc_info for r in caplog.records)
    backoff = Backoff()
    assert [backoff.failed() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_a_task_log_on_a_full_disk_is_one_line_not_a_traceback_per_record(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Seen on a full disk: each of a task's log records printed "--- Logging error ---" and a traceback."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    router = TaskLogRouter()  # a router of its own, not the process's
    router.trouble.settle_s = 0.2
    log = logging.getLogger("jobmanager.job.test-full-disk")
    log.addHandler(router)
    log.propagate, log.level = False, logging.INFO
    full = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
    try:
        with router.capture(full, "job 1 task 1 (full) attempt 1 on a1"):
            for i in range(20):
                log.info("record %d", i)
        with router.capture(tmp_path / "ok.log", "job 1 task 2 (ok) attempt 1 on a1"):
            log.info("written")  # too soon to say it is over: a line may fit now and then on a full disk
            early = capsys.readouterr().err
            assert "writable again" not in early, early
            time.sleep(0.3)
            log.info("written again")
    finally:
        os.close(full)
        log.removeHandler(router)
    err = early + capsys.readouterr().err
    assert err.count("cannot write a task's log: disk full writing the task's log") == 1, err
    assert "Traceback" not in err and "Logging error" not in err, err
    assert err.count("task logs are writable again") == 1, err
    assert "written" in (tmp_path / "ok.log").read_text()
