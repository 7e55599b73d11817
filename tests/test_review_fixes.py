"""Regressions found in review: schedule cases, schedule owners, re-run cells, self-declared lost agents."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jobmanager import JobManager, PermissionDenied
from jobmanager.schedules.schedules import fire_due


@pytest.fixture
def two_cases(home: Path) -> tuple[JobManager, JobManager, JobManager]:
    admin = JobManager(home, user="admin")
    for name, case in (("alice", "A"), ("bob", "B")):
        admin.add_group(f"g-{name}")
        for perm in ("view_all_jobs", "submit_jobs", "view_schedules", "manage_schedules"):
            admin.grant(f"g-{name}", perm)
        admin.add_case(f"g-{name}", case)
        admin.add_user(name, "password-123", groups=[f"g-{name}"])
    return admin, JobManager(home, user="alice"), JobManager(home, user="bob")


def test_a_schedule_of_another_case_cannot_be_taken_over_or_moved(two_cases) -> None:
    admin, alice, bob = two_cases
    bob.schedule("nightly-B", "sleep", every="1h", case="B")
    with pytest.raises(PermissionDenied):
        alice.schedule("nightly-B", "sleep", every="1m", case="A")
    assert admin.get_schedule("nightly-B")["owner"] == "bob"
    alice.schedule("sA", "sleep", every="1h", case="A")
    with pytest.raises(PermissionDenied):
        alice.edit_schedule("sA", case="B")
    assert admin.get_schedule("sA")["case_id"] == "A"


def test_rerunning_a_schedule_cell_keeps_its_planned_run(jm: JobManager) -> None:
    first = jm.schedule("tick", "sleep", every="1h")
    time.sleep(0.05)
    again = jm.schedule("tick", "sleep", {"tasks": 2}, every="1h")
    assert again["next_run_at"] == first["next_run_at"] and again["params"]["tasks"] == 2


def test_a_disabled_owner_fires_nothing(two_cases) -> None:
    admin, alice, _ = two_cases
    alice.schedule("sA", "sleep", every="1h", case="A")
    admin.store.schedules.update("sA", {"next_run_at": time.time() - 1}, actor="t", message="due")
    admin.disable_user("alice")
    fired = fire_due(admin.store, "agent-x")
    assert fired == [(None, [])] and admin.jobs().empty
    run = admin.store.schedules.runs("sA")[0]
    assert run["outcome"] == "error" and "disabled" in run["message"]


def test_an_agent_never_declares_itself_lost(jm: JobManager) -> None:
    jm.store.register_agent({"name": "slow", "host": "h", "pid": 4242, "workers": 1, "worker_type": "thread",
                             "version": "t", "interval": 0.1})
    assert jm.store.recover_lost("slow", now=time.time() + 60).lost == []
    assert jm.store.recover_lost("other", now=time.time() + 60).lost == ["slow"]
