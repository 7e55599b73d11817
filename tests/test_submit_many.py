"""``submit_many`` and ``jobmanager submit-many``: many jobs in one call, all of them or none.

Every item is checked as ``submit`` checks it; one refused refuses the call and nothing is stored. The jobs
go into the store in one transaction and into the queue in one write (issue 18: many small jobs).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from jobmanager import BadParams, JobManager, PermissionDenied, validate
from jobmanager.cli.main import cli
from jobmanager.errors import QueueNotReached

from .backends import query_store
from .test_sec_validation import broken_queue


def job_count(home: Path) -> int:
    return query_store(home, "SELECT count(*) FROM jobs")[0][0]


def audit_rows(home: Path, actor: str, action: str) -> list[dict[str, Any]]:
    with JobManager(home, user="admin") as admin:
        df = admin.audit_log(1000)
    return df[(df.actor == actor) & (df.action == action)].sort_values("id").to_dict("records")


def test_every_job_is_stored_in_order_with_its_own_arguments_and_runs(jm: JobManager, home: Path,
                                                                      start_agent) -> None:
    items = [{"type": "sleep", "params": {"tasks": 1 + i % 3, "seconds": 0}, "name": f"batch {i}",
              "priority": i % 5, "retries": i % 2} for i in range(40)]
    items[7]["case"] = "C7"
    items[9]["queue"] = "default"
    ids = jm.submit_many(items)
    assert len(ids) == 40 and ids == sorted(ids)
    for job_id, item in zip(ids, items, strict=True):
        job = jm.job(job_id)
        assert (job.name, job.priority, job.tasks_total, job.owner) == (
            item["name"], item["priority"], item["params"]["tasks"], "tester")
        assert job.tasks[0].max_attempts == 1 + item["retries"]
    assert jm.job(ids[7]).case == "C7"
    start_agent("a1")
    for job_id in ids:
        assert jm.wait(job_id, timeout=60).state == "completed"
    rows = audit_rows(home, "tester", "submit_many")  # one row for the call, not one a job
    assert len(rows) == 1 and rows[0]["detail"] == "40 jobs" and rows[0]["target"] == "sleep"


BAD_ITEMS = [
    ({"type": "sleep", "prio": 3}, "job 2 of 3: unknown key 'prio'; the keys are: type, params"),
    ({"type": "sleep", 7: "x"}, "job 2 of 3: unknown key 7"),
    ({"params": {"tasks": 1}}, 'job 2 of 3: no "type"'),
    ("sleep", "job 2 of 3: must be a mapping of submit arguments, not 'sleep'"),
    ({"type": "sleep", "params": {"tasks": 0}}, "job 2 of 3: bad parameters for sleep: tasks"),
    ({"type": "sleep", "params": "tasks=3"}, "job 2 of 3: parameters must be a mapping"),
    ({"type": "nosuch"}, "job 2 of 3: unknown job type 'nosuch'"),
    ({"type": "sleep", "name": "x\x1b]0;pwned\x07"}, "job 2 of 3: job name may not contain control characters"),
    ({"type": "sleep", "priority": 2**31}, "job 2 of 3: priority"),
    ({"type": "sleep", "retries": -1}, "job 2 of 3: retries"),
    ({"type": "sleep", "notify": ["whenever:mailto:ops@example.org"]}, "job 2 of 3: "),
    ({"type": "sleep", "hard_limit": float("nan")}, "job 2 of 3: "),
    ({"type": "sleep", "queue": "../../etc"}, "job 2 of 3: "),
    ({"type": "../../etc/passwd"}, "job 2 of 3: "),
]


@pytest.mark.parametrize(("bad", "message"), BAD_ITEMS, ids=[str(i) for i in range(len(BAD_ITEMS))])
def test_one_bad_job_refuses_the_call_and_stores_nothing(jm: JobManager, home: Path, bad: Any,
                                                         message: str) -> None:
    before = job_count(home)
    good = {"type": "sleep", "params": {"tasks": 2}}
    with pytest.raises(BadParams) as caught:
        jm.submit_many([good, bad, good])
    text = str(caught.value)
    assert text.startswith(message) and "\n" not in text and "\x1b" not in repr(text)[1:-1], text
    assert job_count(home) == before


@pytest.mark.parametrize("jobs", [None, "sleep", b"[]", {"type": "sleep"}, (j for j in [{"type": "sleep"}]), [],
                                  42])
def test_what_is_not_a_list_of_jobs_is_refused(jm: JobManager, home: Path, jobs: Any) -> None:
    before = job_count(home)
    with pytest.raises(BadParams, match=r"^jobs"):
        jm.submit_many(jobs)
    assert job_count(home) == before


def test_too_many_jobs_or_tasks_in_one_call(jm: JobManager, home: Path) -> None:
    before = job_count(home)
    with pytest.raises(BadParams, match=f"at most {validate.MAX_SUBMIT_MANY}; submit them in parts"):
        jm.submit_many([{"type": "sleep"}] * (validate.MAX_SUBMIT_MANY + 1))
    big = {"type": "sleep", "params": {"tasks": 100_000}}
    with pytest.raises(BadParams, match=r"^jobs 1 to 3 of 5 plan 300000 tasks, at most 200000"):
        jm.submit_many([big] * 5)  # refused as soon as the sum passes the limit, before planning the rest
    assert job_count(home) == before
    rows = audit_rows(home, "tester", "submit_many")
    assert len(rows) == 1 and rows[0]["detail"].startswith("failed: jobs 1 to 3 of 5 plan")


def test_permissions_are_checked_for_every_job(home: Path) -> None:
    with JobManager(home, user="admin") as admin:
        admin.add_group("acme")
        for perm in ("view_own_jobs", "submit_jobs"):
            admin.grant("acme", perm)
        admin.add_case("acme", "ACME")
        admin.add_user("ana", "password-123", groups=["acme"])
        admin.add_user("nobody", "password-123")
    before = job_count(home)
    with JobManager(home, user="ana") as ana:
        ok = {"type": "sleep", "case": "ACME"}
        with pytest.raises(PermissionDenied, match="^job 2 of 2: ana may not submit in case GLOBEX"):
            ana.submit_many([ok, {"type": "sleep", "case": "GLOBEX"}])
        with pytest.raises(PermissionDenied, match="^job 2 of 2: ana may not submit notebook jobs: they need the "
                                                   "run_notebooks permission"):
            ana.submit_many([ok, {"type": "notebook", "case": "ACME", "params": {"notebook": "x.ipynb"}}])
        assert job_count(home) == before
        assert len(ana.submit_many([ok, ok])) == 2
    with JobManager(home, user="nobody") as nobody, pytest.raises(PermissionDenied, match="^job 1 of 1: nobody"):
        nobody.submit_many([{"type": "sleep"}])
    assert job_count(home) == before + 2
    refusals = audit_rows(home, "ana", "submit_many")
    assert [r["allowed"] for r in refusals] == [False, True, False, True, True]  # each refusal, then each call
    assert refusals[1]["detail"].startswith("failed: job 2 of 2: ana may not submit in case GLOBEX")
    assert refusals[-1]["detail"] == "2 jobs"


def test_a_queue_that_cannot_be_written_warns_once_and_every_job_still_runs(
    jm: JobManager, home: Path, start_agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    with broken_queue(home, monkeypatch), JobManager(home, user="tester") as user:
        for n, said in ((3, "jobs {0}, {1}, {2} are stored; agents will pick them up"),
                        (5, "5 jobs ({0}, {1} ... {4}) are stored; agents will pick them up")):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ids = user.submit_many([{"type": "sleep", "params": {"tasks": 2}}] * n)
            stored = [w for w in caught if issubclass(w.category, QueueNotReached)]
            assert len(stored) == 1 and str(stored[0].message).startswith(said.format(*ids)), stored
            assert stored[0].filename == __file__  # points at the caller's line
            assert {user.job(j).state for j in ids} == {"queued"}
    start_agent("sweeper")  # its start-up sweep sends what the queue never got
    for job_id in range(ids[0] - 3, ids[-1] + 1):
        assert jm.wait(job_id, timeout=60).state == "completed"


# -- the command ------------------------------------------------------------------------------------------------
@pytest.fixture
def run(home: Path):
    def invoke(*args: str, input: bytes | str | None = None):
        return CliRunner().invoke(cli, ["--home", str(home), "--user", "cli-user", *args], input=input,
                                  catch_exceptions=False)

    return invoke


def test_cli_reads_json_lines_or_an_array_and_prints_the_ids(run, home: Path, tmp_path: Path) -> None:
    lines = tmp_path / "jobs.jsonl"
    lines.write_bytes(b"\xef\xbb\xbf" + "\n".join([  # a byte-order mark, as Windows editors write
        json.dumps({"type": "sleep", "params": {"tasks": 2}, "name": "éèø 日本語 العربية"}),
        "",
        "   ",
        json.dumps({"type": "sleep", "priority": 4}),
    ]).encode() + b"\r\n")
    result = run("submit-many", str(lines))
    assert result.exit_code == 0, result.output
    ids = [int(line) for line in result.stdout.split()]
    assert len(ids) == 2
    with JobManager(home, user="admin") as admin:
        assert admin.job(ids[0]).name == "éèø 日本語 العربية" and admin.job(ids[1]).priority == 4
    array = json.dumps([{"type": "sleep", "name": f"n{i}"} for i in range(3)], indent=2)
    result = run("submit-many", "-", input=array)
    assert result.exit_code == 0, result.output
    assert [int(x) for x in result.stdout.split()] == [ids[1] + 1, ids[1] + 2, ids[1] + 3]


@pytest.mark.parametrize(("content", "message"), [
    (b'{"type": "sleep"}\n{"type": nope}\n', "Error: stdin, line 2: not valid JSON (Expecting value: column 10)"),
    (b'[{"type": "sleep"},\n\n  {"type": "sleep"},\n  {"type": nope}]',
     "Error: stdin: not valid JSON (Expecting value: line 4 column 12)"),
    (b'[{"type": "sleep"}] {"type": "sleep"}', "Error: stdin: not valid JSON (Extra data: line 1 column 21)"),
    (b'{"type": "sleep", "params": {"tasks": 1' + b"0" * 5000 + b"}}",
     "Error: stdin, line 1 holds a number of more than 4300 digits"),
    (b'{"type": "sleep", "type": "notebook"}', "Error: stdin, line 1 holds the key 'type' twice in one object"),
    (b'[{"type": "sleep", "params": {"tasks": 1, "tasks": 9}}]',
     "Error: stdin holds the key 'tasks' twice in one object"),
    (b'{"type": "sleep"}\n\n\n{"type": "sleep", "priority": true}\n', "Error: stdin, line 4: job 2 of 2: priority"),
    (b'[{"type": "sleep"},\n\n{"type": "sleep", "retries": 1000}]', "Error: stdin, line 3: job 2 of 2: retries"),
    (b"{}\n" * 10_001, "Error: stdin: more than 10000 jobs; submit them in parts"),
    (b"[" + b"{}," * 10_001 + b"{}]", "Error: stdin: more than 10000 jobs; submit them in parts"),
    (b"\xff\xfe{}", "Error: stdin: not UTF-8 text (byte 0)"),
    (b"[" * 100_000, "Error: stdin is nested more than 32 deep"),
    (b"[]", "Error: jobs: the list is empty"),
    (b'"sleep"', "Error: stdin, line 1: job 1 of 1: must be a mapping of submit arguments, not 'sleep'"),
    (b'{"type": "sleep"}\n{"type": "sleep", "params": {"tasks": -1}}',
     "Error: stdin, line 2: job 2 of 2: bad parameters for sleep: tasks"),
], ids=["json", "json-array", "extra", "long-number", "key-twice", "key-twice-nested", "line-of-job",
        "line-of-array-item", "too-many-lines", "too-many-items", "utf8", "deep", "empty", "not-a-mapping", "params"])
def test_cli_bad_input_is_one_line_exit_2_and_stores_nothing(run, home: Path, content: bytes,
                                                              message: str) -> None:
    before = job_count(home)
    result = run("submit-many", "-", input=content)
    assert result.exit_code == 2 and result.output.startswith(message), result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert job_count(home) == before


def test_cli_json_lines_end_at_newlines_only(run, home: Path) -> None:
    """U+2028, U+2029 and U+0085 may stand unescaped in a JSON string (json.dumps(..., ensure_ascii=False)
    writes them so): they do not end a line of the file."""
    names = ["a\u2028b", "c\u2029d", "e\x85f"]
    text = "\r\n".join(json.dumps({"type": "sleep", "name": "x", "params": {"tasks": 1, "fail_tasks": []},
                                   "case": None, "retries": 0}, ensure_ascii=False) for _ in names)
    result = run("submit-many", "-", input=text.encode())
    assert result.exit_code == 0, result.output
    assert len(result.stdout.split()) == 3


def test_python_limits_on_what_one_call_holds(jm: JobManager, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = job_count(home)
    with pytest.raises(BadParams, match="^job 1 of 1: parameters hold a number of more than 4300 digits"):
        jm.submit_many([{"type": "sleep", "params": {"tasks": 1, "note": 10**5000}}])
    monkeypatch.setattr(validate, "MAX_SUBMIT_MANY_BYTES", 1000)
    item = {"type": "sleep", "params": {"tasks": 1, "fail_tasks": [1] * 120}}
    with pytest.raises(BadParams, match=r"^the parameters of jobs 1 to 3 of 5 are \d+ bytes as JSON, at most 1000"):
        jm.submit_many([item] * 5)
    assert job_count(home) == before
    assert len(jm.submit_many([item] * 2)) == 2


def test_cli_files_it_cannot_read(run, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = job_count(home)
    for path, said in ((tmp_path / "missing.jsonl", "No such file or directory"), (tmp_path, "Is a directory")):
        result = run("submit-many", str(path))
        assert result.exit_code == 2 and result.output == f"Error: {path}: {said}\n", result.output
    monkeypatch.setattr(validate, "MAX_SUBMIT_MANY_BYTES", 1024 * 1024)
    big = tmp_path / "big.jsonl"
    big.write_text((json.dumps({"type": "sleep", "name": "x" * 100}) + "\n") * 20_000)
    result = run("submit-many", str(big))
    assert result.exit_code == 2 and result.output == f"Error: {big}: more than 1 MB; submit the jobs in parts\n"
    assert job_count(home) == before
