"""Issue 12, items 1 and 6: a schedule runs as the user who last changed it, re-checked at every run.

The attack: a user scoped to case A edited the administrator's export_report schedule to select case B's
rows and ran it; the job ran with the administrator's rights. Now editing (or replacing, or enabling) a
schedule makes it run as you, its jobs are yours, and the rights of the user it runs as are read again at
every scheduled run and at "Run now". Creating, editing, enabling and running one also need the submit
rights for its job type.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from jobmanager import JobManager, PermissionDenied
from jobmanager.cli.main import cli
from jobmanager.schedules.schedules import fire_due

from .backends import query_store
from .conftest import wait_for

CASE_A_PERMISSIONS = ("view_all_jobs", "submit_jobs", "view_schedules", "manage_schedules", "download_outputs")


def job_count(home: Path) -> int:
    return query_store(home, "SELECT count(*) FROM jobs")[0][0]


@pytest.fixture
def world(home: Path) -> dict[str, Any]:
    """admin; alice, scoped to case A; jobs in cases A and B; the admin's export schedule in case A."""
    admin = JobManager(home, user="admin")
    admin.add_group("case-a")
    for perm in CASE_A_PERMISSIONS:
        admin.grant("case-a", perm)
    admin.add_case("case-a", "A")
    admin.add_user("alice", "password-123", groups=["case-a"])
    admin.submit("sleep", {"tasks": 1}, name="a-job", case="A")
    admin.submit("sleep", {"tasks": 1}, name="secret-b-job", case="B")
    admin.schedule("weekly-export", "export_report", {"query": "SELECT name, case_id FROM jobs", "name": "report"},
                   cron="0 6 * * 1", case="A")
    return {"admin": admin, "alice": JobManager(home, user="alice")}


def edit_to_read_case_b(alice: JobManager) -> None:
    alice.edit_schedule("weekly-export", params={"query": "SELECT name, case_id FROM jobs WHERE case_id = 'B'",
                                                 "name": "report"})


def assert_reads_nothing_of_case_b(jm: JobManager, job_id: int) -> None:
    """The run either was refused as alice or produced a report without case B's rows."""
    job = jm.wait(job_id, timeout=90)
    if job.state == "completed":
        report = pd.read_csv(jm.open_artifact(job_id, "report.csv"))
        assert "secret-b-job" not in set(report.get("name", [])) and "B" not in set(report.get("case_id", []))
    else:  # refused as alice (a history without case-scoped SQL refuses her any free SQL)
        assert job.state == "failed" and "PermissionDenied" in (job.tasks[0].error or ""), job.tasks[0].error
    assert "secret-b-job" not in jm.log(job_id)


# -- item 6 --------------------------------------------------------------------------------------------------
def test_editing_the_admins_schedule_makes_it_run_as_you_through_a_real_agent(
        world: dict[str, Any], home: Path, start_agent) -> None:
    admin, alice = world["admin"], world["alice"]
    assert admin.get_schedule("weekly-export")["runs_as"] == "admin"
    edit_to_read_case_b(alice)
    row = admin.get_schedule("weekly-export")
    assert row["runs_as"] == row["owner"] == "alice"
    listed = admin.schedules().set_index("name")
    assert listed.loc["weekly-export", "runs_as"] == "alice"
    shown = CliRunner().invoke(cli, ["--home", str(home), "--user", "admin", "schedule", "show", "weekly-export"])
    assert "runs as alice" in shown.output

    admin.store.schedules.update("weekly-export", {"next_run_at": time.time() - 1}, actor="test", message="due")
    start_agent("a1")  # fires it: the agent's scheduler, not the test, decides who the job runs as
    fired = wait_for(lambda: admin.store.schedules.get("weekly-export")["last_job_id"], timeout=30,
                     what="the agent fires the schedule")
    job = admin.job(int(fired))  # type: ignore[arg-type]
    assert job.owner == "alice" and job.case == "A"
    assert_reads_nothing_of_case_b(admin, job.id)


def test_run_now_after_the_edit_runs_as_the_editor_whoever_clicks(world: dict[str, Any], home: Path) -> None:
    admin, alice = world["admin"], world["alice"]
    edit_to_read_case_b(alice)
    for who in (alice, admin):  # the admin clicking "Run now" does not lend the run their rights
        job_id = who.run_schedule_now("weekly-export")
        assert admin.job(job_id).owner == "alice"


def test_a_user_who_lost_the_right_since_their_edit_gets_no_run(world: dict[str, Any], home: Path) -> None:
    admin, alice = world["admin"], world["alice"]
    edit_to_read_case_b(alice)
    admin.revoke("case-a", "submit_jobs")
    jobs_before = job_count(home)
    admin.store.schedules.update("weekly-export", {"next_run_at": time.time() - 1}, actor="test", message="due")
    assert fire_due(admin.store, "agent-x") == [(None, [])]
    run = admin.store.schedules.runs("weekly-export")[0]
    assert run["outcome"] == "error" and "runs as 'alice'" in run["message"] and "submit_jobs" in run["message"]
    with pytest.raises(PermissionDenied, match="runs as 'alice', who may no longer submit export_report jobs"):
        admin.run_schedule_now("weekly-export")  # the admin may, but the schedule runs as alice
    result = CliRunner().invoke(cli, ["--home", str(home), "--user", "admin", "schedule", "run-now", "weekly-export"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "runs as 'alice'" in result.output
    assert job_count(home) == jobs_before
    audit = admin.audit_log(50)
    assert not audit[(audit.action == "run_schedule_now") & (~audit.allowed)].empty

    admin.grant("case-a", "submit_jobs")  # also: a disabled user fires nothing
    admin.disable_user("alice")
    admin.store.schedules.update("weekly-export", {"next_run_at": time.time() - 1}, actor="test", message="due")
    fire_due(admin.store, "agent-x")
    assert "disabled" in admin.store.schedules.runs("weekly-export")[0]["message"]
    assert job_count(home) == jobs_before


def test_a_lost_run_notebooks_permission_stops_notebook_runs(home: Path, tmp_path: Path) -> None:
    admin = JobManager(home, user="admin")
    admin.add_group("nb")
    for perm in ("submit_jobs", "run_notebooks", "view_schedules", "manage_schedules"):
        admin.grant("nb", perm)
    admin.add_case("nb", "*")
    admin.add_user("nora", "password-123", groups=["nb"])
    nora = JobManager(home, user="nora")
    nb = tmp_path / "n.ipynb"
    nb.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    nora.schedule("nb-sched", "notebook", {"notebook": str(nb)}, every="1h")
    admin.revoke("nb", "run_notebooks")
    admin.store.schedules.update("nb-sched", {"next_run_at": time.time() - 1}, actor="test", message="due")
    fire_due(admin.store, "agent-x")
    run = admin.store.schedules.runs("nb-sched")[0]
    assert run["outcome"] == "error" and "run_notebooks" in run["message"]
    with pytest.raises(PermissionDenied, match="run_notebooks"):
        nora.run_schedule_now("nb-sched")
    assert job_count(home) == 0


# -- item 1: schedule changes need the submit rights for their type --------------------------------------------
def test_schedule_changes_need_submit_rights_for_the_type(home: Path) -> None:
    admin = JobManager(home, user="admin")
    admin.add_group("planners")  # may manage schedules, may not submit
    for perm in ("view_all_jobs", "view_schedules", "manage_schedules"):
        admin.grant("planners", perm)
    admin.add_case("planners", "*")
    admin.add_user("pat", "password-123", groups=["planners"])
    pat = JobManager(home, user="pat")
    admin.schedule("tick", "sleep", {"tasks": 1}, every="1h")
    admin.disable_schedule("tick")
    before = admin.store.schedules.get("tick")
    calls = {
        "create": lambda: pat.create_schedule("mine", "sleep", {"tasks": 1}, every="1h"),
        "declare": lambda: pat.schedule("tick", "sleep", {"tasks": 9}, every="1h"),
        "edit": lambda: pat.edit_schedule("tick", params={"tasks": 9}),
        "enable": lambda: pat.enable_schedule("tick"),
        "run now": lambda: pat.run_schedule_now("tick"),
    }
    for what, call in calls.items():
        with pytest.raises(PermissionDenied, match="needs the submit_jobs permission") as err:
            call()
        assert "\n" not in str(err.value), what
    assert admin.store.schedules.get("tick") == before and job_count(home) == 0
    assert [s["name"] for s in admin.store.schedules.list_all()] == ["tick"]
    pat.delete_schedule("tick")  # removing one starts nothing: manage_schedules is enough


def test_enabling_a_schedule_makes_it_run_as_you(world: dict[str, Any]) -> None:
    admin, alice = world["admin"], world["alice"]
    admin.disable_schedule("weekly-export")
    assert admin.get_schedule("weekly-export")["runs_as"] == "admin"  # disabling starts nothing: no take-over
    alice.enable_schedule("weekly-export")
    row = admin.get_schedule("weekly-export")
    assert row["enabled"] and row["runs_as"] == "alice"


def test_schedules_file_needs_submit_rights_and_keeps_who_it_runs_as(home: Path, start_agent) -> None:
    (home / "schedules.toml").write_text(
        '[[schedule]]\nname = "file-nb"\ntype = "notebook"\nevery = "1h"\nparams = { notebook = "x.ipynb" }\n')
    admin = JobManager(home, user="admin")
    admin.add_user("oli", "password-123", groups=["operators"])
    with pytest.raises(PermissionDenied, match="run_notebooks"):
        JobManager(home, user="oli").sync_schedules_file()
    assert admin.store.schedules.list_all() == []
    admin.sync_schedules_file()
    start_agent("a1")  # agents load the file at start-up: an unchanged declaration keeps who it runs as
    assert admin.get_schedule("file-nb")["runs_as"] == "admin"
