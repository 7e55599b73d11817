"""``jobmanager wait``: the final state on stdout for scripts, progress on stderr for people (a live bar
on a terminal, plain lines when piped)."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from jobmanager import JobManager
from jobmanager.cli.main import cli
from jobmanager.cli.progress import Progress
from jobmanager.models import Job

from .conftest import agent_env


def _job(done: int, total: int = 10, failed: int = 0, state: str = "running") -> Job:
    return Job(id=7, type="sleep", name="n", params={}, owner="o", case=None, priority=0, state=state, retries=0,
               has_finish=False, finisher=None, tasks_total=total, tasks_succeeded=done - failed,
               tasks_failed=failed, tasks_cancelled=0, error=None, created_at=0, started_at=None,
               finished_at=None)


def test_plain_lines_when_piped_only_when_the_counts_change() -> None:
    out = io.StringIO()
    progress = Progress(out, tty=False)
    for done in (0, 0, 0, 4, 4, 10):
        progress(_job(done, failed=1 if done >= 4 else 0, state="completed_with_errors" if done == 10 else "running"))
    lines = out.getvalue().splitlines()
    assert lines[0] == "job 7: 0/10 tasks, running"
    assert lines[1].startswith("job 7: 4/10 tasks, running, 1 failed, ETA ")
    assert lines[2] == "job 7: 10/10 tasks, completed_with_errors, 1 failed"
    assert len(lines) == 3 and "\r" not in out.getvalue()


def test_a_bar_on_a_terminal_redrawn_in_place() -> None:
    out = io.StringIO()
    progress = Progress(out, tty=True)
    progress(_job(0))
    time.sleep(0.25)
    progress(_job(5))
    progress.done()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "[------------------------] 0/10 tasks, running" in text
    assert "[############------------] 5/10 tasks, running, ETA " in text


def test_piped_wait_keeps_stdout_for_the_state(home: Path, start_agent) -> None:
    start_agent("a1")
    with JobManager(home, user="tester") as jm:
        job_id = jm.submit("sleep", {"tasks": 3, "seconds": 0.3, "fail_tasks": [2]})
    result = CliRunner().invoke(cli, ["--home", str(home), "--user", "tester", "wait", str(job_id), "--timeout", "30"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "completed_with_errors\n"
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith(f"job {job_id}: ") for line in lines)
    assert lines[-1] == f"job {job_id}: 3/3 tasks, completed_with_errors, 1 failed"
    quiet = CliRunner().invoke(cli, ["--home", str(home), "--user", "tester", "wait", str(job_id), "-q"])
    assert quiet.stdout == "completed_with_errors\n" and quiet.stderr == ""


def test_wait_on_a_real_terminal_draws_a_bar(home: Path, start_agent) -> None:
    start_agent("a1")
    with JobManager(home, user="tester") as jm:
        job_id = jm.submit("sleep", {"tasks": 4, "seconds": 0.4})
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobmanager", "--home", str(home), "--user", "tester", "wait", str(job_id),
         "--timeout", "60"], stdout=subprocess.PIPE, stderr=slave, env=agent_env(),
    )
    os.close(slave)
    seen = b""
    while proc.poll() is None or select.select([master], [], [], 0.1)[0]:
        if select.select([master], [], [], 0.1)[0]:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
    os.close(master)
    assert proc.stdout is not None and proc.stdout.read() == b"completed\n" and proc.wait() == 0
    text = seen.decode()
    assert "\r[" in text and re.search(r"\[#{24}\] 4/4 tasks, completed", text), text
