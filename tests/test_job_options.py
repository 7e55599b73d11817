"""A job's options (queue, time limits, losses, re-run safety): from the type, overridden per job or
schedule, checked with one line, stored on the job row; and migration 2, which added them, on a store
that holds version-1 rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobmanager import JobManager
from jobmanager.cli.main import cli
from jobmanager.errors import BadParams
from jobmanager.store import sql as sql_store
from jobmanager.store.base import SCHEMA_VERSION, JobStore
from jobmanager.store.schema import statements
from jobmanager.store.sqlite import SQLiteStore

from .backends import back_to_version_1
from .test_store_contract import store  # noqa: F401  (the two-backend store fixture)


def test_a_job_carries_its_types_options_and_the_overrides(jm: JobManager) -> None:
    plain = jm.job(jm.submit("sleep", {"tasks": 1, "seconds": 0}))
    assert (plain.queue, plain.soft_limit, plain.hard_limit, plain.max_losses, plain.rerun_safe) == (
        "default", None, None, 3, True)
    job = jm.job(jm.submit("sleep", {"tasks": 1, "seconds": 0}, queue="pdf.big-1", soft_limit=5, hard_limit=7.5))
    assert (job.queue, job.soft_limit, job.hard_limit) == ("pdf.big-1", 5.0, 7.5)
    assert job.tasks[0].losses == 0 and job.tasks[0].waiting is None


@pytest.mark.parametrize(("options", "message"), [
    ({"queue": "Bad Queue"}, "not a queue name"),
    ({"queue": "x" * 65}, "at most 64"),
    ({"queue": "../etc"}, "not a queue name"),
    ({"soft_limit": -1}, "soft time limit must be a number"),
    ({"soft_limit": 0}, "more than 0"),
    ({"hard_limit": float("nan")}, "hard time limit must be a number"),
    ({"hard_limit": 10 * 86400}, "hard time limit must be a number"),
    ({"soft_limit": 10, "hard_limit": 5}, "shorter than the soft one"),
    ({"soft_limit": True}, "soft time limit must be a number"),
])
def test_bad_options_are_refused_and_nothing_is_stored(jm: JobManager, options: dict, message: str) -> None:
    before = len(jm.jobs())
    with pytest.raises(BadParams, match=message):
        jm.submit("sleep", {"tasks": 1}, **options)
    assert len(jm.jobs()) == before


@pytest.mark.parametrize("args", [
    ["--queue", "a b"], ["--soft-limit", "-1"], ["--hard-limit", "nan"], ["--soft-limit", "10", "--hard-limit", "5"],
])
def test_the_cli_refuses_bad_options_with_one_line(home: Path, args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["--home", str(home), "--user", "tester", "submit", "sleep", *args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    with JobManager(home, user="tester") as jm:
        assert jm.jobs().empty


def test_the_cli_stores_the_options(home: Path) -> None:
    result = CliRunner().invoke(cli, ["--home", str(home), "--user", "tester", "submit", "sleep", "--queue", "pdf",
                                      "--soft-limit", "2", "--hard-limit", "3"])
    assert result.exit_code == 0, result.output
    with JobManager(home, user="tester") as jm:
        job = jm.job(int(result.output.strip()))
    assert (job.queue, job.soft_limit, job.hard_limit) == ("pdf", 2.0, 3.0)


def test_a_schedule_keeps_only_its_overrides_and_its_jobs_get_them(jm: JobManager) -> None:
    jm.create_schedule("nightly", "sleep", {"tasks": 1, "seconds": 0}, cron="0 2 * * *",
                       options={"queue": "night", "hard_limit": 60})
    assert jm.get_schedule("nightly")["options"] == {"queue": "night", "hard_limit": 60.0}
    job = jm.job(jm.run_schedule_now("nightly"))
    assert (job.queue, job.hard_limit, job.soft_limit) == ("night", 60.0, None)
    jm.edit_schedule("nightly", options={"hard_limit": None, "soft_limit": 30})
    assert jm.get_schedule("nightly")["options"] == {"queue": "night", "soft_limit": 30.0}
    with pytest.raises(BadParams, match="unknown job options: colour"):
        jm.edit_schedule("nightly", options={"colour": "red"})
    with pytest.raises(BadParams, match="not a queue name"):
        jm.create_schedule("bad", "sleep", {"tasks": 1}, cron="0 2 * * *", options={"queue": "A;B"})
    assert list(jm.schedules()["name"]) == ["nightly"]


def test_migration_2_keeps_version_1_rows(store, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """A store written by the first release (version 1) moves to the current version in one step; its
    jobs, tasks and schedules read back with the new options' defaults."""
    with store._tx() as c:  # back to version 1: what the first release's store looked like
        back_to_version_1(c)
        c.execute("INSERT INTO jobs (type, name, params, owner, state, tasks_total, created_at, updated_at)"
                  " VALUES ('sleep', 'old', '{}', 'ana', 'queued', 1, 1, 1)")
        c.execute("INSERT INTO tasks (job_id, seq, name, params, state) VALUES (1, 1, 't', '{}', 'queued')")
    assert store.schema_version() == 1
    assert store.migrate() == (1, SCHEMA_VERSION)
    job = store.get_job(1, with_tasks=True)
    assert (job.queue, job.max_losses, job.rerun_safe, job.notify, job.tasks[0].losses) == ("default", 3, True, [], 0)
    assert statements(2, store.dialect)  # the version-2 statements exist for this backend


def _task_indexes(s: JobStore) -> set[str]:
    if isinstance(s, SQLiteStore):
        rows = s._fetchall("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks'"
                               " AND sql IS NOT NULL")
    else:
        rows = s._fetchall("SELECT indexname AS name FROM pg_indexes WHERE tablename = 'tasks'"
                           " AND schemaname = current_schema() AND indexdef LIKE 'CREATE INDEX%'")
    return {r["name"] for r in rows}


def test_migration_4_replaces_the_two_agent_indexes_by_one_of_held_tasks(store) -> None:  # noqa: F811
    """A version-3 store had tasks_agent (agent, state) and, on SQLite, tasks_agent_job (agent, job_id); version
    4 has one partial index of the tasks an agent holds or held, and a reopened SQLite store (whose repair
    runs version 1's statements again) does not bring the old ones back. An agent's running tasks and the
    jobs it ran are still found through an index."""
    with store._tx() as c:
        c.execute("DROP INDEX IF EXISTS tasks_held")
        c.execute("CREATE INDEX tasks_agent ON tasks (agent, state)")
        if isinstance(store, SQLiteStore):
            c.execute("CREATE INDEX tasks_agent_job ON tasks (agent, job_id)")
        c.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    assert store.migrate() == (3, SCHEMA_VERSION)
    assert _task_indexes(store) == {"tasks_state", "tasks_held"}
    if isinstance(store, SQLiteStore):
        with store._tx() as c:  # what a store made before version 1 had its job counters looks like
            c.execute("DROP TRIGGER job_counts_update")
        store.initialize(create=False)  # the repair
        assert _task_indexes(store) == {"tasks_state", "tasks_held"}
        for query in ("SELECT id FROM tasks WHERE state = 'running' AND agent = ?",
                      "SELECT id FROM jobs WHERE id IN (SELECT job_id FROM tasks WHERE agent = ?)"):
            plan = " ".join(r[3] for r in store._fetchall(f"EXPLAIN QUERY PLAN {query}", ("a1",)))
            assert "INDEX tasks_held" in plan, plan


def test_jobmanager_migrate_moves_an_old_sqlite_home_forward(tmp_path: Path) -> None:
    """What an operator does after upgrading: `jobmanager migrate` on a home whose SQLite store is at
    version 1 (it used to answer "no SQLite migration from version 1"); it keeps the rows, and says so."""
    assert CliRunner().invoke(cli, ["--home", str(tmp_path / "h"), "init"]).exit_code == 0
    s = SQLiteStore(tmp_path / "h" / "store.db")
    with s._tx() as c:
        back_to_version_1(c)
        c.execute("INSERT INTO jobs (type, name, params, owner, state, tasks_total, created_at, updated_at)"
                  " VALUES ('sleep', 'kept', '{}', 'ana', 'queued', 1, 1, 1)")
    s.close()
    run = CliRunner().invoke(cli, ["--home", str(tmp_path / "h"), "migrate"])
    assert run.exit_code == 0, run.output
    assert run.output.strip() == f"store schema version {SCHEMA_VERSION} (migrated from 1)"
    again = CliRunner().invoke(cli, ["--home", str(tmp_path / "h"), "migrate"])
    assert again.output.strip() == f"store schema version {SCHEMA_VERSION} (already current)"
    s = SQLiteStore(tmp_path / "h" / "store.db")
    assert s.schema_version() == SCHEMA_VERSION and s.get_job(1).name == "kept"
    s.close()


def test_a_new_sqlite_store_is_at_the_latest_version(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s.db", create=True)
    assert s.schema_version() == sql_store.SCHEMA_VERSION
    assert json.loads(json.dumps(s.schedules.list_all())) == []
    s.close()


def test_schedule_commands_take_the_job_options(home: Path) -> None:
    def run(*args: str):
        return CliRunner().invoke(cli, ["--home", str(home), "--user", "tester", "schedule", *args])

    made = run("add", "nightly", "sleep", "--cron", "0 2 * * *", "--queue", "night", "--hard-limit", "90",
               "--notify", "failed:mailto:ops@example.org")
    assert made.exit_code == 0, made.output
    shown = run("show", "nightly").output
    assert "job options hard_limit 90, queue night" in shown and "notify failed:mailto:ops@example.org" in shown
    assert run("edit", "nightly", "--soft-limit", "30").exit_code == 0
    with JobManager(home, user="tester") as jm:
        assert jm.get_schedule("nightly")["options"] == {
            "queue": "night", "hard_limit": 90.0, "soft_limit": 30.0,
            "notify": [{"on": ["failed"], "to": "mailto:ops@example.org"}]}
    for bad in (["--queue", "Not OK"], ["--notify", "failed:file:///etc/passwd"], ["--soft-limit", "100"]):
        result = run("edit", "nightly", *bad)
        assert result.exit_code == 2 and "Traceback" not in result.output, (bad, result.output)
    with JobManager(home, user="tester") as jm:
        assert jm.get_schedule("nightly")["options"]["soft_limit"] == 30.0


def test_the_dashboard_shows_queue_waiting_limits_and_losses(jm: JobManager) -> None:
    from jobmanager.widgets.details import _engine_line, _task_rows
    from jobmanager.widgets.models import present_jobs

    job_id = jm.submit("sleep", {"tasks": 2, "seconds": 0}, queue="pdf", soft_limit=30, hard_limit=60,
                       notify=[{"on": ["failed"], "to": "mailto:ops@example.org"}])
    job = jm.job(job_id)
    line = _engine_line(job)
    assert "queue pdf" in line and "soft limit" in line and "hard limit" in line and "up to 3 times" in line
    assert "failed → mailto:ops@example.org" in line
    job.tasks[0].losses, job.tasks[0].waiting = 2, "waiting: 2/2 sleep running (limit pdf)"
    rows = _task_rows(job)
    assert "lost 2/3" in rows and "waiting: 2/2 sleep running" in rows
    df = jm.jobs(tab="in-progress").assign(progress=0.0, agents="", waiting="waiting: 1/1 sleep running")
    shown = present_jobs(df, "in-progress")
    assert shown.loc[0, "Queue"] == "pdf · waiting: 1/1 sleep running"
