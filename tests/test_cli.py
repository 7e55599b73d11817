"""The ``jobmanager`` command: every command, and bad input as one line with exit status 2."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobmanager import JobManager
from jobmanager.cli.main import cli

from .backends import query_store
from .conftest import agent_env, wait_for


@pytest.fixture
def run(home: Path):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli, ["--home", str(home), "--user", "cli-user", *args], catch_exceptions=False)

    return invoke


def job_count(home: Path) -> int:
    return query_store(home, "SELECT count(*) FROM jobs")[0][0]


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for name, command in cli.commands.items():
        assert command.help, f"{name} has no help text"
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output


def test_init_creates_a_home(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "h"), "init"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "h" / "store.db").exists() and (tmp_path / "h" / "jobmanager.toml").exists()
    again = CliRunner().invoke(cli, ["--home", str(tmp_path / "h"), "init"])
    assert again.exit_code == 0  # idempotent


def test_submit_prints_the_id_and_show_lists_it(run, home: Path) -> None:
    result = run("submit", "sleep", "--param", "tasks=2", "-p", "seconds=0.1", "--name", "nightly",
                 "--priority", "3", "--case", "ACME")
    assert result.exit_code == 0, result.output
    job_id = int(result.output.strip())
    shown = json.loads(run("show", str(job_id), "--json").output)
    assert shown["name"] == "nightly" and shown["owner"] == "cli-user" and shown["case"] == "ACME"
    assert shown["params"]["tasks"] == 2 and shown["priority"] == 3 and len(shown["tasks"]) == 2
    text = run("show", str(job_id)).output
    assert "nightly" in text and "queued" in text
    listed = json.loads(run("jobs", "--json").output)
    assert [j["id"] for j in listed] == [job_id]
    assert "nightly" in run("jobs", "--tab", "in-progress").output
    assert run("jobs", "--tab", "completed").output.strip() == "(none)"


def test_params_json(run) -> None:
    result = run("submit", "sleep", "--params-json", '{"tasks": 3, "fail_tasks": [1]}')
    assert result.exit_code == 0
    shown = json.loads(run("show", result.output.strip(), "--json").output)
    assert shown["params"]["fail_tasks"] == [1] and shown["tasks_total"] == 3


def test_actions_through_the_cli(run) -> None:
    job_id = run("submit", "sleep", "-p", "tasks=2").output.strip()
    assert run("pause", job_id).exit_code == 0
    assert json.loads(run("show", job_id, "--json").output)["state"] == "paused"
    assert run("resume", job_id).exit_code == 0
    assert run("priority", job_id, "7").exit_code == 0
    assert json.loads(run("show", job_id, "--json").output)["priority"] == 7
    assert run("cancel", job_id).exit_code == 0
    assert json.loads(run("show", job_id, "--json").output)["state"] == "cancelled"
    assert run("retry", job_id).exit_code == 0  # a cancelled job's cancelled tasks go back to the queue
    assert json.loads(run("show", job_id, "--json").output)["state"] == "queued"


BAD_INPUT = [
    (["submit", "nope"], "unknown job type 'nope'"),
    (["submit", "sleep", "-p", "tasks=0"], "bad parameters for sleep: tasks"),
    (["submit", "sleep", "-p", "bogus=1"], "bogus: Extra inputs are not permitted"),
    (["submit", "sleep", "-p", "fail_tasks=[9]"], "outside 1..1"),
    (["submit", "sleep", "-p", "novalue"], "expected KEY=VALUE"),
    (["submit", "sleep", "--params-json", "{nope"], "not valid JSON"),
    (["submit", "sleep", "--params-json", "[1, 2]"], "must be a JSON object"),
    (["submit", "sleep", "-p", "tasks=1" + "0" * 5000], "--param 'tasks' holds a number of more than 4300 digits"),
    (["submit", "sleep", "--params-json", '{"tasks": 2, "tasks": 3}'], "holds the key 'tasks' twice in one object"),
    (["show", "999"], "no job 999"),
    (["pause", "999"], "no job 999"),
    (["logs", "999"], "no job 999"),
    (["wait", "999"], "no job 999"),
    (["jobs", "--state", "sideways"], "unknown state 'sideways'"),
    (["show", "abc"], "job id must be a whole number between 1 and 9223372036854775807, not 'abc'"),
]


@pytest.mark.parametrize("args,message", BAD_INPUT)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(run, home: Path, args, message) -> None:
    before = job_count(home)
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len([ln for ln in result.output.splitlines() if ln.startswith("Error")]) == 1
    assert "Traceback" not in result.output
    assert job_count(home) == before


def test_actions_that_do_not_fit_the_state(run, home: Path) -> None:
    job_id = run("submit", "sleep").output.strip()
    for args, message in [(["resume", job_id], "only a paused job can be resumed"),
                          (["retry", job_id], "retry applies to a finished job"),
                          (["retry", job_id, "--task", "1"], "only a failed task can be retried"),
                          (["logs", job_id, "--task", "5"], "has no task 5")]:
        result = run(*args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert json.loads(run("show", job_id, "--json").output)["state"] == "queued"


def test_not_a_home(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "missing"), "jobs"])
    assert result.exit_code == 2 and "is not a Job Manager home" in result.output


def test_store_that_is_not_a_job_manager_database(tmp_path: Path) -> None:
    JobManager.init(tmp_path / "h").close()
    (tmp_path / "h" / "store.db").unlink()
    (tmp_path / "h" / "store.db-wal").unlink(missing_ok=True)
    (tmp_path / "h" / "store.db-shm").unlink(missing_ok=True)
    sqlite3.connect(tmp_path / "h" / "store.db").execute("CREATE TABLE t (x)").connection.commit()
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "h"), "jobs"])
    assert result.exit_code == 2 and "not a Job Manager store" in result.output


@pytest.mark.sqlite_only
def test_store_from_a_newer_schema(home: Path) -> None:
    with sqlite3.connect(home / "store.db") as c:
        c.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    result = CliRunner().invoke(cli, ["--home", str(home), "jobs"])
    assert result.exit_code == 2 and "schema version 99, newer" in result.output


def test_real_process_exit_status_and_stderr(home: Path) -> None:
    """The console script itself: one line on stderr, status 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "jobmanager", "--home", str(home), "--user", "tester", "submit", "nope"],
        capture_output=True, text=True, env=agent_env(),
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: unknown job type 'nope' (known: ") and "sleep" in lines[0]
    assert proc.stdout == ""


def test_agent_name_in_use_is_refused(home: Path, start_agent) -> None:
    start_agent("dup")
    proc = subprocess.run([sys.executable, "-m", "jobmanager", "--home", str(home), "agent", "--name", "dup"],
                          capture_output=True, text=True, env=agent_env(), timeout=30)
    assert proc.returncode == 2 and "agent dup is already running" in proc.stderr


def test_wait_logs_agents_with_a_real_agent(run, start_agent, tmp_path: Path) -> None:
    start_agent("a1")
    job_id = run("submit", "sleep", "-p", "tasks=2", "-p", "fail_tasks=[2]").output.strip()
    result = run("wait", job_id, "--timeout", "20")
    assert result.exit_code == 0 and result.stdout.strip() == "completed_with_errors"  # progress: stderr
    log = run("logs", job_id).output
    assert "task 1: sleeping" in log and "failed on purpose" in log
    out = tmp_path / "job.log"
    assert run("logs", job_id, "-o", str(out)).exit_code == 0 and out.read_text() == log
    agents = wait_for(lambda: [a for a in json.loads(run("agents", "--json").output) if a["done"] == 1],
                      what="heartbeat with counters")
    assert agents[0]["name"] == "a1" and agents[0]["status"] in ("idle", "busy") and agents[0]["failed"] == 1
    assert "a1" in run("agents").output
    assert run("retry", job_id, "--task", "2").exit_code == 0
    assert run("wait", job_id, "--timeout", "20").stdout.strip() == "completed_with_errors"


def test_wait_timeout_is_exit_2(run) -> None:
    job_id = run("submit", "sleep").output.strip()
    result = run("wait", job_id, "--timeout", "0.1")
    assert result.exit_code == 2 and "still queued" in result.output
