"""Issue 12, items 10 and 11: bad input is one clear line and changes nothing; a queue that cannot be
written after the commit is a warning (the job is stored and runs), never an error inviting a duplicate;
names printed to a terminal carry no control characters.

Every bad input goes through the Python API (BadParams, one short line) and the real CLI (exit 2, one
``Error`` line, no traceback), and the number of jobs in the store is checked before and after.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from jobmanager import BadParams, JobManager
from jobmanager.cli.main import cli
from jobmanager.errors import QueueNotReached
from jobmanager.home import Home

from .backends import PG_REDIS, query_store, write_store

DEEP = "[" * 100_000 + "]" * 100_000  # json.loads: RecursionError before the fix
DEEP_40: Any = 1
for _ in range(40):  # under Python's recursion limit, over the documented depth of 32
    DEEP_40 = [DEEP_40]
ESCAPE_NAME = "\x1b]0;pwned\x07"


def job_count(home: Path) -> int:
    return query_store(home, "SELECT count(*) FROM jobs")[0][0]


@pytest.fixture
def run(home: Path) -> Callable[..., Any]:
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
        return runner.invoke(cli, ["--home", str(home), "--user", "cli-user", *args], env=env)

    return invoke


@pytest.fixture
def job(jm: JobManager) -> int:
    return jm.submit("sleep", {"tasks": 1}, name="existing")


# -- the Python API ---------------------------------------------------------------------------------
def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"x": value}
    return value


PYTHON_BAD = {
    "id 2**63": (lambda jm, j: jm.job(2**63), "job id must be a whole number between 1 and"),
    "id 'abc'": (lambda jm, j: jm.job("abc"), "not 'abc'"),
    "id None": (lambda jm, j: jm.job(None), "not None"),
    "id ' 1'": (lambda jm, j: jm.job(" 1"), "not ' 1'"),
    "id devanagari one": (lambda jm, j: jm.job("१"), "job id must be"),
    "id True": (lambda jm, j: jm.pause(True), "not True"),
    "id numpy True": (lambda jm, j: jm.pause(np.bool_(True)), "job id must be a whole number"),
    "id numpy uint64 2**63": (lambda jm, j: jm.job(np.uint64(2**63)), "job id must be a whole number"),
    "id numpy 1.0": (lambda jm, j: jm.job(np.float64(j)), "job id must be a whole number"),
    "priority numpy 2**40": (lambda jm, j: jm.set_priority(j, np.int64(2**40)), "priority must be a whole number"),
    "pause 'abc'": (lambda jm, j: jm.pause("abc"), "job id must be"),
    "task number 0": (lambda jm, j: jm.retry(j, task=0), "task number must be"),
    "live ids": (lambda jm, j: jm.live(["a"]), "job id must be"),
    "jobs(type=['a'])": (lambda jm, j: jm.jobs(type=["a"]), "type must be text, not ['a']"),
    "jobs(case=NUL)": (lambda jm, j: jm.jobs(case="a\x00"), "case may not contain control characters"),
    "jobs(limit=True)": (lambda jm, j: jm.jobs(limit=True), "limit must be a whole number"),
    "100 KB search": (lambda jm, j: jm.grid(search="x" * 100_000), "search is 100000 characters long: at most 200"),
    "grid type list": (lambda jm, j: jm.grid(type=["a"]), "type must be text"),
    "retries 10**6": (lambda jm, j: jm.submit("sleep", retries=10**6), "retries must be a whole number between 0 and"),
    "retries True": (lambda jm, j: jm.submit("sleep", retries=True), "not True"),
    "10 MB name": (lambda jm, j: jm.submit("sleep", name="n" * 10_000_000), "job name is 10000000 characters"),
    "NUL in name": (lambda jm, j: jm.submit("sleep", name="a\x00b"), "job name may not contain control characters"),
    "escape in name": (lambda jm, j: jm.submit("sleep", name=ESCAPE_NAME), "may not contain control characters"),
    "NUL in a parameter": (lambda jm, j: jm.submit("sleep", {"a\x00": 1}), "parameters may not contain '\\x00'"),
    "nested parameters": (lambda jm, j: jm.submit("sleep", nested(100_000)), "nested more than 32 deep"),
    "1 MB parameters": (lambda jm, j: jm.submit("sleep", {"x": "a" * 1_100_000}), "at most 1000000"),
    "case list": (lambda jm, j: jm.submit("sleep", case=["A"]), "case must be text"),
    "priority 2**40": (lambda jm, j: jm.set_priority(j, 2**40), "priority must be a whole number"),
    "wait nan": (lambda jm, j: jm.wait(j, timeout=float("nan")), "timeout must be a finite number of seconds"),
    "wait inf": (lambda jm, j: jm.wait(j, timeout=float("inf")), "timeout must be a finite number of seconds"),
    "artifact NUL": (lambda jm, j: jm.open_artifact(j, "a\x00.pdf"), "artifact name may not contain"),
    "agent name": (lambda jm, j: jm.stop_agent("x" * 300), "agent name is 300 characters long"),
    "export path NUL": (lambda jm, j: jm.export("/tmp/a\x00b.csv"), "export path may not contain control"),
    "schedule name NUL": (lambda jm, j: jm.create_schedule("a\x00", "sleep", {}, every="1h"),
                          "schedule name may not contain control characters"),
    "schedule name list": (lambda jm, j: jm.get_schedule(["a"]), "schedule name must be text"),
    "disable schedule None": (lambda jm, j: jm.disable_schedule(None), "schedule name must be text"),
}


@pytest.mark.parametrize("case", list(PYTHON_BAD))
def test_python_bad_input_is_one_bad_params_line(jm: JobManager, home: Path, job: int, case: str) -> None:
    call, message = PYTHON_BAD[case]
    before = job_count(home)
    with pytest.raises(BadParams) as info:
        call(jm, job)
    text = str(info.value)
    assert message in text and "\n" not in text and len(text) < 300, text
    assert job_count(home) == before
    assert jm.job(job).priority == 0 and jm.job(job).state == "queued"


def test_python_good_ids_still_work(jm: JobManager, job: int) -> None:
    assert jm.job(str(job)).id == job and jm.job(job).name == "existing"


def test_ids_and_numbers_taken_from_a_dataframe_work(jm: JobManager, job: int) -> None:
    """An analyst's first call after ``jm.jobs()``: its ids are NumPy integers (refused before the fix)."""
    frame = jm.jobs()
    first = frame.id.iloc[0]
    assert isinstance(first, np.integer)
    assert jm.job(first).id == job
    jm.set_priority(first, np.int32(3))
    assert jm.job(job).priority == 3
    jm.pause(first)
    assert jm.job(job).state == "paused"


# -- the CLI ----------------------------------------------------------------------------------------------
CLI_BAD = {
    "show ' 1'": (["show", " 1"], "job id must be a whole number"),
    "show devanagari one": (["show", "१"], "job id must be a whole number"),
    "show 2**63": (["show", str(2**63)], "job id must be a whole number"),
    "pause 'abc'": (["pause", "abc"], "not 'abc'"),
    "logs --task ' 1'": (["logs", "1", "--task", " 1"], "task number must be"),
    "wait --timeout nan": (["wait", "1", "--timeout", "nan"], "'nan' is not a finite number"),
    "wait --timeout inf": (["wait", "1", "--timeout", "inf"], "'inf' is not a finite number"),
    "wait --timeout -1": (["wait", "1", "--timeout", "-1"], "'-1' is not a finite number"),
    "deep --params-json": (["submit", "sleep", "--params-json", '{"x": ' + DEEP + "}"], "nested more than 32 deep"),
    "deep -p": (["submit", "sleep", "-p", "x=" + DEEP], "nested more than 32 deep"),
    "40 deep -p": (["submit", "sleep", "-p", "x=" + json.dumps(DEEP_40)], "nested more than 32 deep"),
    "--retries 1000000": (["submit", "sleep", "--retries", "1000000"], "between 0 and 100"),
    "--retries ' 1'": (["submit", "sleep", "--retries", " 1"], "between 0 and 100"),
    "--priority devanagari": (["submit", "sleep", "--priority", "१"], "whole number"),
    "long --name": (["submit", "sleep", "--name", "n" * 100_000], "job name is 100000 characters long: at most 200"),
    "escape --name": (["submit", "sleep", "--name", ESCAPE_NAME], "job name may not contain control characters"),
    "NUL --name": (["submit", "sleep", "--name", "a\x00b"], "job name may not contain control characters"),
    "long --case": (["submit", "sleep", "--case", "c" * 300], "case is 300 characters long"),
    "jobs --type NUL": (["jobs", "--type", "a\x00"], "type may not contain control characters"),
    "priority ' 3'": (["priority", "1", " 3"], "whole number"),
    "agent --heartbeat nan": (["agent", "--heartbeat", "nan"], "'nan' is not a finite number"),
    "stop-agent long name": (["stop-agent", "a" * 300], "agent name is 300 characters long"),
    "schedule add NUL": (["schedule", "add", "a\x00", "sleep", "--every", "1h"], "schedule name may not contain"),
    "schedule show long": (["schedule", "show", "s" * 300], "schedule name is 300 characters long"),
}


@pytest.mark.parametrize("case", list(CLI_BAD))
def test_cli_bad_input_is_one_line_exit_2(run, home: Path, job: int, case: str) -> None:
    args, message = CLI_BAD[case]
    before = job_count(home)
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception,
                                                                                         SystemExit)
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and message in errors[0] and len(errors[0]) < 300, result.output[:500]
    assert job_count(home) == before


def test_cli_search_of_100_kb_is_one_line(run, home: Path, tmp_path: Path) -> None:
    pytest.importorskip("duckdb")
    result = run("export", str(tmp_path / "out.csv"), "--search", "x" * 100_000)
    assert result.exit_code == 2 and "search is 100000 characters long: at most 200" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out.csv").exists()


def test_wait_nan_does_not_hang(run, job: int) -> None:
    """Before: ``wait --timeout nan`` never returned (the deadline comparison is always False)."""
    result = run("wait", str(job), "--timeout", "nan")
    assert result.exit_code == 2
    assert run("wait", str(job), "--timeout", "0.05").output.strip().endswith("after 0.05 s")


# -- control characters never reach the terminal ---------------------------------------------------------------
def test_escape_sequences_in_names_are_not_printed(run, home: Path, job: int) -> None:
    """A name stored before names were checked (or written by an older version) prints without ESC/BEL."""
    write_store(home, [("UPDATE jobs SET name = ?, error = ? WHERE id = ?", (ESCAPE_NAME, "bad\x1b[2J", job)),
                       ("UPDATE tasks SET name = ? WHERE job_id = ?", ("t\x9b31m\x07", job))])
    log = Home.open(home).task_log(job, 1)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("line one\n\x1b]0;pwned-by-log\x07line two\r\n")
    for args in (["jobs"], ["show", str(job)], ["logs", str(job)]):
        result = run(*args)
        assert result.exit_code == 0, result.output
        assert not {"\x1b", "\x07", "\x9b", "\r"} & set(result.output), (args, result.output)
    assert "]0;pwned" in run("jobs").output  # the text stays readable, only the control characters go
    assert "line one\n]0;pwned-by-logline two\n" in run("logs", str(job)).output
    assert json.loads(run("show", str(job), "--json").output)["name"] == ESCAPE_NAME  # JSON escapes them itself


def test_error_messages_are_printable(run) -> None:
    result = run("submit", "\x1b]0;x\x07")
    assert result.exit_code == 2 and "\x1b" not in result.output and "\x07" not in result.output


# -- a queue that cannot be written after the commit -------------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def broken_queue(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The queue refuses writes while the store works: on SQLite a trigger makes queue.db refuse inserts (the
    tests run as root, so a read-only file mode would not stop them); on Redis the queue URL points at a
    closed port. Undone on exit, so an agent can start."""
    if PG_REDIS:
        monkeypatch.setenv("JOBMANAGER_QUEUE", f"redis://127.0.0.1:{closed_port()}/0")
        yield
        monkeypatch.delenv("JOBMANAGER_QUEUE")
        return
    path = home / "queue.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TRIGGER read_only BEFORE INSERT ON task BEGIN "
                     "SELECT RAISE(ABORT, 'attempt to write a readonly database'); END")
    try:
        yield
    finally:
        with sqlite3.connect(path) as conn:
            conn.execute("DROP TRIGGER read_only")


def test_cli_submit_with_a_broken_queue_exits_0_and_the_job_runs(
    run, home: Path, start_agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = job_count(home)
    with broken_queue(home, monkeypatch):
        result = CliRunner().invoke(cli, ["--home", str(home), "--user", "cli-user", "submit", "sleep",
                                          "-p", "tasks=2", "-p", "seconds=0.1"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and not any(ln.startswith("Error") for ln in result.output.splitlines())
    job_id = int(result.stdout.strip())  # stdout is the id alone, as scripts expect
    assert f"job {job_id} is stored; agents will pick it up" in result.stderr
    assert job_count(home) == before + 1
    start_agent("sweeper")  # its start-up sweep sends what the queue never got
    waited = run("wait", str(job_id), "--timeout", "30")
    assert waited.exit_code == 0 and waited.stdout.strip() == "completed"


def test_python_submit_with_a_broken_queue_returns_the_id_and_warns(
    home: Path, start_agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    with broken_queue(home, monkeypatch), JobManager(home, user="tester") as jm:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            job_id = jm.submit("sleep", {"tasks": 1})
        stored = [w for w in caught if issubclass(w.category, QueueNotReached)]
        assert len(stored) == 1 and f"job {job_id} is stored; agents will pick it up" in str(stored[0].message)
        assert stored[0].filename == __file__  # points at the caller's line
        assert jm.job(job_id).state == "queued"
    start_agent("sweeper")
    with JobManager(home, user="tester") as jm:
        assert jm.wait(job_id, timeout=30).state == "completed"


def test_dashboard_message_bar_says_stored_when_the_queue_fails(
    home: Path, start_agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    from widgets.models import Messages

    bar = Messages()
    with broken_queue(home, monkeypatch), JobManager(home, user="tester", interface="dashboard") as jm:
        job_id = bar.attempt(lambda: jm.submit("sleep", {"tasks": 1}), "submitted")
        assert bar.kind == "info" and bar.message.startswith(f"job {job_id} is stored; agents will pick it up")
    start_agent("sweeper")
    with JobManager(home, user="tester") as jm:
        assert jm.wait(job_id, timeout=30).state == "completed"
