"""Issue 12, item 7: a home is private to the OS user owning it (folders 0700, files 0600).

``init`` used to leave homes world-readable (0755/0644), so any local user read the password hashes
in store.db. Now everything is private from the first write, including what agents write later.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobmanager import JobManager
from jobmanager.cli.main import cli

from .conftest import agent_env


def loose(root: Path) -> list[str]:
    """Everything under ``root`` (and itself) that group or others may read, write or enter."""
    found = []
    for p in [root, *root.rglob("*")]:
        mode = p.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            found.append(f"{p.relative_to(root.parent)} {stat.filemode(mode)}")
    return found


def _run_with_umask(args: list[str], umask: int = 0o022, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The CLI in a process whose umask would make files world-readable."""
    code = f"import os, sys; os.umask({umask}); from jobmanager.cli.main import cli; sys.exit(cli.main({args!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, input=stdin,
                          env=agent_env(), timeout=120)


@pytest.mark.sqlite_only  # the SQLite files are what must be private (PostgreSQL keeps its own)
def test_cli_init_makes_a_private_home(tmp_path: Path) -> None:
    home = tmp_path / "h"
    proc = _run_with_umask(["--home", str(home), "init", "--password-stdin"], stdin="pw-123456\n")
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "store.db").stat().st_mode) == 0o600
    assert loose(home) == []


@pytest.mark.sqlite_only
def test_python_init_makes_a_private_home_even_with_a_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        JobManager.init(tmp_path / "h", admin_password="pw-123456").close()
    finally:
        os.umask(old)
    assert (tmp_path / "h" / "store.db").is_file() and loose(tmp_path / "h") == []


def test_logs_and_artifacts_written_by_a_real_agent_are_private(jm: JobManager, start_agent, tmp_path: Path) -> None:
    (tmp_path / "page.txt").write_text("a page", encoding="utf-8")
    start_agent("a1")  # started with the test process's umask (typically 022)
    job_id = jm.submit("print_to_pdf", {"documents": [str(tmp_path / "page.txt")]})
    assert jm.wait(job_id, timeout=60).state == "completed"
    home = jm.home.path
    logs = [*jm.home.thread_logs.iterdir(), *jm.home.job_logs(job_id).iterdir()]  # threads' files, finish.log
    artifact = jm.home.job_artifacts(job_id) / "merged.pdf"
    assert len(logs) >= 3 and artifact.is_file()
    for p in (*logs, artifact, jm.home.agent_log("a1")):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    for p in (jm.home.thread_logs, jm.home.job_logs(job_id), artifact.parent):
        assert stat.S_IMODE(p.stat().st_mode) == 0o700, p
    assert loose(home) == []  # the SQLite -wal/-shm files too: they take the database file's mode


def test_doctor_warns_about_a_loose_home_and_init_tightens_it(home: Path) -> None:
    home.chmod(0o755)
    (home / "jobmanager.toml").chmod(0o644)
    runner = CliRunner()
    result = runner.invoke(cli, ["--home", str(home), "doctor"])
    assert result.exit_code == 2, result.output
    assert "FAIL  home" in result.output and "other OS users can read it" in result.output
    assert f"chmod -R go-rwx {home}" in result.output
    result = runner.invoke(cli, ["--home", str(home), "init"])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "jobmanager.toml").stat().st_mode) == 0o600
    result = runner.invoke(cli, ["--home", str(home), "doctor"])
    assert result.exit_code == 0 and "FAIL" not in result.output, result.output
