"""Bulk actions over every job matching the grid's filters (issue 17; the rule is jobmanager/bulk.py).

Real SQLite stores and real agents. The filters come from a browser, so they are forged here too:
unknown keys, wrong types, SQL-ish values. Permission and case scoping hold job by job, the cap refuses
the whole call, and one audit row names the action, the filter and the count.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jobmanager import BadParams, JobManager, PermissionDenied
from jobmanager.bulk import MAX_BULK

from .conftest import wait_for


def failed_jobs(jm: JobManager, start_agent, n: int, **submit) -> list[int]:
    """``n`` finished jobs whose only task failed (a real agent ran them)."""
    ids = [jm.submit("sleep", {"tasks": 1, "seconds": 0, "steps": 1, "fail_tasks": [1]}, name=f"bad {i:03d}",
                     retries=0, **submit) for i in range(n)]
    agent = start_agent("bulk-a", 8)
    wait_for(lambda: all(j.state == "failed" for j in jm.store.list_jobs(limit=100_000) if j.id in set(ids)),
             timeout=120, what=f"{n} jobs failed")
    agent.stop()  # retried jobs then stay queued: what the bulk action did is what the test sees
    return ids


def audit(home: Path, action: str) -> list[dict]:
    with JobManager(home, user="admin") as admin:
        df = admin.audit_log(5000)
    return [r for r in df.to_dict("records") if r["action"] == action]


def test_retry_all_failed_across_pages_retries_every_one(jm: JobManager, home: Path, start_agent) -> None:
    ids = failed_jobs(jm, start_agent, 130)  # more than one grid page (100)
    ok = jm.submit("sleep", {"tasks": 1}, name="not failed")  # queued: not in the Completed tab at all
    assert jm.count_matching("completed", "retry") == 130
    assert jm.matching_jobs("completed", "retry") == sorted(ids)
    assert jm.count_matching("completed", "retry", search="bad 00") == 10
    result = jm.bulk("retry", "completed", {})
    assert (result.matched, result.done, result.errors) == (130, 130, [])
    assert all(jm.job(i).state == "queued" for i in ids) and jm.job(ok).state == "queued"
    assert jm.count_matching("completed", "retry") == 0
    rows = audit(home, "bulk_retry")
    assert len(rows) == 1, rows  # one row for the bulk call, none per job
    assert rows[0]["actor"] == "tester" and rows[0]["target"] == "completed: no filter"
    assert rows[0]["detail"] == "retry 130 of 130 matching jobs"
    assert not [r for r in audit(home, "retry")]
    # each job's own history names who retried it
    assert any(e["actor"] == "tester" for e in jm.store.events(ids[0]) if e["to_state"] == "queued")


def test_bulk_follows_the_filter_and_the_actions_states(jm: JobManager, home: Path) -> None:
    a = [jm.submit("sleep", {"tasks": 1}, name=f"alpha {i}", case="C1") for i in range(3)]
    b = [jm.submit("sleep", {"tasks": 1}, name=f"beta {i}") for i in range(2)]
    r = jm.bulk("pause", "in-progress", {"case": "C1"})
    assert (r.matched, r.done) == (3, 3) and r.job_ids == a
    assert {jm.job(i).state for i in a} == {"paused"} and {jm.job(i).state for i in b} == {"queued"}
    assert jm.count_matching("in-progress", "pause") == 2  # the paused ones cannot be paused again
    assert jm.count_matching("in-progress", "resume") == 3
    assert jm.bulk("resume", "in-progress", {"search": "alpha"}).done == 3
    r = jm.bulk("cancel", "in-progress", {"search": "beta", "state": "queued"})
    assert (r.matched, r.done) == (2, 2) and {jm.job(i).state for i in b} == {"cancelled"}
    assert "cancelled for 2 of 2 jobs (in-progress: state queued, search 'beta')" == r.summary()
    # a state of the other tab, or one the action does not apply to, matches nothing (and does nothing)
    assert jm.bulk("cancel", "in-progress", {"state": "failed"}).matched == 0
    assert jm.bulk("resume", "in-progress", {"state": "queued"}).matched == 0
    assert {jm.job(i).state for i in a} == {"queued"}


@pytest.mark.parametrize("filters, words", [
    ({"sql": "1"}, "unknown filter 'sql'"),
    ({"tab": "completed"}, "unknown filter 'tab'"),
    ({"scope": {"all": True}}, "unknown filter 'scope'"),
    ({1: "x"}, "unknown filter 1"),
    ("state=failed", "filters must be a mapping"),
    (["state"], "filters must be a mapping"),
    ({"state": "failed' OR 1=1 --"}, "unknown state"),
    ({"state": ["failed", 3]}, "unknown state 3"),
    ({"state": {"$ne": 1}}, "a state or a list of states"),
    ({"case": "C1\x00"}, "filter case"),
    ({"owner": ["a", "b"]}, "filter owner"),
    ({"search": "x" * 5000}, "filter search"),
    ({"since": True}, "expected a time"),
    ({"since": float("nan")}, "is not a time"),
    ({"since": 1e300}, "is not a time"),
    ({"since": "yesterday-ish"}, "is not a time"),
    ({"time_field": "created_at; DROP TABLE jobs"}, "time_field"),
])
def test_forged_filters_are_refused_with_one_line(jm: JobManager, filters, words: str) -> None:
    job = jm.submit("sleep", {"tasks": 1}, name="stays")
    calls = [lambda: jm.bulk("cancel", "in-progress", filters)]
    if isinstance(filters, dict) and all(isinstance(k, str) and k != "tab" for k in filters):  # the button's N
        calls += [lambda: jm.count_matching("in-progress", "cancel", **filters),
                  lambda: jm.matching_jobs("in-progress", **filters)]
    for call in calls:
        with pytest.raises(BadParams) as info:
            call()
        assert words in str(info.value) and "\n" not in str(info.value) and len(str(info.value)) < 300
    assert jm.job(job).state == "queued"


def test_sql_ish_values_are_only_values(jm: JobManager) -> None:
    job = jm.submit("sleep", {"tasks": 1}, name="plain")
    for search in ("%", "_", "'; DROP TABLE jobs; --", "\" OR 1=1 --", "plain' OR '1'='1"):
        assert jm.bulk("cancel", "in-progress", {"search": search}).matched == 0, search
    assert jm.bulk("cancel", "in-progress", {"owner": "x') OR ('1'='1"}).matched == 0
    assert jm.bulk("cancel", "in-progress", {"type": "x' OR '1'='1", "case": "' OR case_id IS NULL --"}).matched == 0
    assert jm.job(job).state == "queued" and jm.count_matching("in-progress", "cancel") == 1


def test_unknown_actions_and_tabs_are_refused(jm: JobManager) -> None:
    for action, tab, words in (("delete", "in-progress", "unknown bulk action 'delete'"),
                               ("set_priority", "in-progress", "unknown bulk action"),
                               ("__class__", "in-progress", "unknown bulk action"),
                               (None, "in-progress", "unknown bulk action None"),
                               ("cancel", "agents", "unknown tab 'agents'"),
                               ("cancel", ["completed"], "unknown tab")):
        with pytest.raises(BadParams, match=words):
            jm.bulk(action, tab, {})  # type: ignore[arg-type]


def test_permission_and_case_scoping_hold_job_by_job(home: Path) -> None:
    admin = JobManager(home, user="admin")
    admin.add_group("c1-ops")
    for perm in ("view_all_jobs", "manage_jobs"):
        admin.grant("c1-ops", perm)
    admin.add_case("c1-ops", "C1")
    admin.add_user("cleo", "password-123", groups=["c1-ops"])
    admin.add_user("ana", "password-123", groups=["analysts"])
    mine = [admin.submit("sleep", {"tasks": 1}, name=f"c1 {i}", case="C1") for i in range(2)]
    open_job = admin.submit("sleep", {"tasks": 1}, name="no case")  # no case: every viewer sees it
    hidden = [admin.submit("sleep", {"tasks": 1}, name=f"c2 {i}", case="C2") for i in range(3)]
    cleo = JobManager(home, user="cleo")
    assert cleo.count_matching("in-progress", "cancel") == 3
    # a filter naming a case cleo may not see matches nothing; it never reaches those jobs
    assert cleo.bulk("cancel", "in-progress", {"case": "C2"}).matched == 0
    r = cleo.bulk("cancel", "in-progress", {})
    assert (r.matched, r.done) == (3, 3) and sorted(r.job_ids) == sorted([*mine, open_job])
    assert all(admin.job(i).state == "queued" for i in hidden)
    # no manage_jobs: refused once, nothing done, the refusal in the audit trail
    ana = JobManager(home, user="ana")
    assert ana.matching_jobs("completed") == [open_job]  # analysts hold no case: only the job without one
    with pytest.raises(PermissionDenied, match="needs the manage_jobs permission"):
        ana.bulk("cancel", "in-progress", {})
    with pytest.raises(PermissionDenied, match="needs the retry_tasks permission"):
        ana.bulk("retry", "completed", {})
    assert all(admin.job(i).state == "queued" for i in hidden)
    refused = [r for r in admin.audit_log(500).to_dict("records") if r["actor"] == "ana" and not r["allowed"]]
    assert [r["action"] for r in refused] == ["bulk", "bulk"], refused


def test_more_than_the_cap_refuses_the_whole_call(jm: JobManager, home: Path) -> None:
    ids = [jm.submit("sleep", {"tasks": 1}, name=f"many {i}") for i in range(MAX_BULK + 5)]
    started = time.monotonic()
    with pytest.raises(BadParams) as info:
        jm.bulk("pause", "in-progress", {})
    text = str(info.value)
    assert text.startswith("1,005 jobs match; a bulk action takes at most 1,000 at once") and "\n" not in text
    assert time.monotonic() - started < 10
    assert jm.job(ids[0]).state == "queued" and jm.job(ids[-1]).state == "queued"  # nothing done
    rows = audit(home, "bulk_pause")
    assert len(rows) == 1 and rows[0]["detail"].startswith("failed: 1,005 jobs match")
    assert len(jm.matching_jobs("in-progress", "pause")) == MAX_BULK + 1  # capped read
    r = jm.bulk("pause", "in-progress", {"search": "many 1"})  # narrowed: 1, 10-19, 100-199, 1000-1004
    assert r.matched == r.done == 1 + 10 + 100 + 5


def test_a_job_that_moved_on_is_named_and_the_others_go_on(jm: JobManager, home: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, c = (jm.submit("sleep", {"tasks": 1}, name=n) for n in ("one", "two", "three"))
    assert jm.matching_jobs("in-progress", "pause") == [a, b, c]
    jm.pause(a)  # paused before the click: no longer matches, not counted
    pause = jm.engine.pause

    def racing(job_id: int, actor: str) -> None:
        if job_id == b:  # another operator pauses b between the read and the action
            jm.store.pause_job(b, "other")
        pause(job_id, actor)

    monkeypatch.setattr(jm.engine, "pause", racing)
    r = jm.bulk("pause", "in-progress", {})
    assert (r.matched, r.done, r.job_ids) == (2, 1, [c])
    assert r.errors == [f"job {b}: job {b} is paused; only a queued or running job can be paused"]
    assert r.summary().startswith("paused for 1 of 2 jobs (in-progress: no filter); job ")
    rows = audit(home, "bulk_pause")
    assert rows[0]["target"] == "in-progress: no filter"
    assert rows[0]["detail"].startswith("pause 1 of 2 matching jobs; 1 failed, first: job ")
