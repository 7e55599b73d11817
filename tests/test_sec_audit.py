"""Issue 12, item 12: the audit trail says how an action ended, and refusals never tell whether a job exists.

- An action that passed the permission check and then failed (bad parameters, wrong state) is recorded
  as "failed: <reason>", never as done; one that failed the input checks before any permission check
  leaves no row claiming it happened.
- A refusal for a job without a case no longer says it "belongs to a case": a user who may not see a job
  hears "no job N you may see", the same words (and error) as for a job that does not exist.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from jobmanager import BadParams, InvalidState, JobManager, NotFound, PermissionDenied
from jobmanager.cli.main import cli

from .backends import query_store, sqlite_only


def audit_rows(home: Path, actor: str) -> list[dict]:
    with JobManager(home, user="admin") as admin:
        df = admin.audit_log(1000)
    return df[df.actor == actor].sort_values("id").to_dict("records")


def test_a_validation_failure_after_the_check_is_audited_as_failed(jm: JobManager, home: Path) -> None:
    with pytest.raises(BadParams, match="bad parameters for sleep"):
        jm.submit("sleep", {"tasks": 0})
    ok = jm.submit("sleep", {"tasks": 1})
    rows = [r for r in audit_rows(home, "tester") if r["action"] == "submit"]
    assert len(rows) == 2
    assert rows[0]["detail"].startswith("failed: bad parameters for sleep: tasks"), rows[0]
    assert rows[1]["detail"] == "needs submit_jobs"  # the one that was done
    jm.cancel(ok)
    with pytest.raises(InvalidState):
        jm.pause(ok)  # a cancelled job cannot be paused: allowed, then failed
    pauses = [r for r in audit_rows(home, "tester") if r["action"] == "pause"]
    assert len(pauses) == 1 and pauses[0]["detail"].startswith("failed: ") and str(ok) == pauses[0]["target"]


def test_input_refused_before_the_check_leaves_no_row_that_says_done(jm: JobManager, home: Path) -> None:
    before = len(audit_rows(home, "tester"))
    for call in (lambda: jm.submit("sleep", retries=10**6), lambda: jm.submit("sleep", name="x" * 10**6),
                 lambda: jm.pause("abc")):
        with pytest.raises(BadParams):
            call()
    assert len(audit_rows(home, "tester")) == before


def test_cli_validation_failure_is_audited_as_failed(home: Path) -> None:
    result = CliRunner().invoke(cli, ["--home", str(home), "--user", "cli-user", "submit", "sleep", "-p", "tasks=0"])
    assert result.exit_code == 2
    rows = [r for r in audit_rows(home, "cli-user") if r["action"] == "submit"]
    assert len(rows) == 1 and rows[0]["interface"] == "cli" and rows[0]["detail"].startswith("failed: bad param")


@pytest.fixture
def sam(home: Path) -> JobManager:
    """A user who sees only their own jobs and may manage and retry them."""
    with JobManager(home, user="admin") as admin:
        admin.add_group("solo")
        for perm in ("view_own_jobs", "submit_jobs", "manage_jobs", "retry_tasks", "download_logs"):
            admin.grant("solo", perm)
        admin.add_user("sam", "password-123", groups=["solo"])
    return JobManager(home, user="sam")


def test_no_case_refusal_reads_as_no_such_job(home: Path, sam: JobManager) -> None:
    with JobManager(home, user="admin") as admin:
        other = admin.submit("sleep", name="no case")  # a job without a case, not sam's
        missing = other + 1000
    for call in (sam.job, sam.pause, sam.cancel, sam.log, sam.retry):
        texts = []
        for job_id in (other, missing):
            with pytest.raises(NotFound) as info:  # the same error for both (also a PermissionDenied)
                call(job_id)
            assert isinstance(info.value, PermissionDenied)
            texts.append(str(info.value))
        assert texts == [f"no job {other} you may see", f"no job {missing} you may see"], texts
        assert not any("belongs to a case" in t for t in texts)
    with JobManager(home, user="admin") as admin:
        assert admin.job(other).state == "queued"
        with pytest.raises(NotFound, match=f"^no job {missing}$"):  # who sees every job is told plainly
            admin.job(missing)
    refused = [r for r in audit_rows(home, "sam") if not r["allowed"]]
    assert {r["detail"] for r in refused if r["target"] == str(other)} == {f"no job {other} you may see"}
    assert {r["action"] for r in refused} >= {"job", "pause", "cancel", "log", "retry"}


def test_no_case_refusal_through_the_cli(home: Path, sam: JobManager) -> None:
    with JobManager(home, user="admin") as admin:
        other = admin.submit("sleep")
    outputs = []
    for job_id in (other, other + 1000):
        result = CliRunner().invoke(cli, ["--home", str(home), "--user", "sam", "pause", str(job_id)])
        assert result.exit_code == 2 and "Traceback" not in result.output
        outputs.append(result.output.replace(str(job_id), "N"))
    assert outputs[0] == outputs[1] == "Error: no job N you may see\n"


def test_a_visible_job_refusal_names_the_missing_permission(home: Path, sam: JobManager) -> None:
    with JobManager(home, user="admin") as admin:
        admin.add_group("viewers")
        admin.grant("viewers", "view_all_jobs")
        admin.add_user("vera", "password-123", groups=["viewers"])
        job = admin.submit("sleep")
    vera = JobManager(home, user="vera")
    assert vera.job(job).id == job
    with pytest.raises(PermissionDenied, match=f"^vera may not manage job {job}: needs the manage_jobs permission$"):
        vera.pause(job)
    rows = [r for r in audit_rows(home, "vera") if r["action"] == "pause"]
    assert len(rows) == 1 and not rows[0]["allowed"] and "needs the manage_jobs permission" in rows[0]["detail"]


def test_a_submit_and_its_audit_row_are_one_transaction(jm: JobManager, home: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18: the submit's audit row is written by the transaction that stores the job, so the two land
    together or not at all (and a submit takes the store's write lock once, not twice).

    - A transaction that fails after the job's rows were inserted leaves neither the job nor a row saying it
      was done; the call's end records it as failed.
    - A job whose audit row cannot be written is not stored either.
    - An interruption after the commit (Ctrl-C during the queue write) leaves the one row that says it was
      done, not a second one saying it failed: the job is stored."""
    from jobmanager.engine.engine import Engine
    from jobmanager.store.audit import AuditTrail
    from jobmanager.store.sql import SqlStore

    def counts() -> tuple[int, int]:
        return (query_store(home, "SELECT count(*) FROM jobs")[0][0],
                query_store(home, "SELECT count(*) FROM tasks")[0][0])

    def submits() -> list[tuple[str, str]]:
        return [(r["action"], r["detail"]) for r in audit_rows(home, "tester")
                if r["action"] in ("submit", "submit_many")]

    before = counts()
    insert = SqlStore._insert_job

    def insert_then_fail(self: SqlStore, c: object, **job: object) -> object:
        insert(self, c, **job)  # type: ignore[arg-type]
        raise RuntimeError("the disk caught fire")

    with monkeypatch.context() as patch:
        patch.setattr(SqlStore, "_insert_job", insert_then_fail)
        with pytest.raises(RuntimeError, match="caught fire"):
            jm.submit("sleep", {"tasks": 2})
        with pytest.raises(RuntimeError, match="caught fire"):
            jm.submit_many([{"type": "sleep", "params": {"tasks": 1}}] * 3)
    assert counts() == before  # rolled back: no job, no task
    assert submits() == [("submit", "failed: the disk caught fire"), ("submit_many", "failed: the disk caught fire")]

    write = AuditTrail.write

    def refuse_done_rows(c: object, records: list) -> None:  # the "failed" row at the call's end still lands
        if any(r[6] == "needs submit_jobs" for r in records):
            raise RuntimeError("the audit table is full")
        write(c, records)  # type: ignore[arg-type]

    with monkeypatch.context() as patch:
        patch.setattr(AuditTrail, "write", staticmethod(refuse_done_rows))
        with pytest.raises(RuntimeError, match="audit table is full"):
            jm.submit("sleep", {"tasks": 2})
    assert counts() == before  # no job without its audit row
    assert submits()[-1] == ("submit", "failed: the audit table is full")

    with monkeypatch.context() as patch:
        patch.setattr(Engine, "_send", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            jm.submit("sleep", {"tasks": 1}, name="interrupted")
    assert counts()[0] == before[0] + 1  # stored before the interruption; an agent's sweep sends its messages
    assert submits()[-1] == ("submit", "needs submit_jobs") and len(submits()) == 4

    job = jm.submit("sleep", {"tasks": 1}, name="kept")
    ids = jm.submit_many([{"type": "sleep", "params": {"tasks": 1}}] * 2)
    assert submits()[-2:] == [("submit", "needs submit_jobs"), ("submit_many", "2 jobs")]
    assert jm.job(job).name == "kept" and len(ids) == 2


@sqlite_only
def test_a_submit_takes_the_sqlite_write_lock_once(jm: JobManager) -> None:
    """The job, its tasks, its events and its audit row in one BEGIN IMMEDIATE ... COMMIT (issue 18: a
    second write transaction for the audit row waited for a busy agent's lock as long as the first)."""
    jm.submit("sleep", {"tasks": 1})  # the connection and the user's grants are warm
    statements: list[str] = []
    conn = jm.store._conn()
    conn.set_trace_callback(statements.append)
    try:
        jm.submit("sleep", {"tasks": 3})
    finally:
        conn.set_trace_callback(None)
    writes = [i for i, s in enumerate(statements) if s.startswith("BEGIN IMMEDIATE")]
    assert len(writes) == 1, statements
    commit = statements.index("COMMIT", writes[0])
    inside = statements[writes[0]:commit]
    assert any(s.startswith("INSERT INTO jobs") for s in inside)
    assert any(s.startswith("INSERT INTO audit") for s in inside), inside
