"""Schedules: triggers, time zones and DST, exactly-once firing, misfires, sources, bad input."""

from __future__ import annotations

import multiprocessing
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobmanager import BadParams, InvalidState, JobManager, NotFound
from jobmanager.cli.main import cli
from jobmanager.schedules.schedules import fire_due
from jobmanager.schedules.triggers import Trigger, zone
from jobmanager.store.sqlite import SQLiteStore

from .backends import query_store
from .conftest import wait_for

BERLIN = zone("Europe/Berlin")


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def runs(trigger: Trigger, start: float, n: int) -> list[datetime]:
    out, t = [], start
    for _ in range(n):
        t = trigger.next_after(t)
        out.append(datetime.fromtimestamp(t, BERLIN))
    return out


def schedule_count(home: Path) -> int:
    return query_store(home, "SELECT count(*) FROM schedules")[0][0]


# -- triggers -------------------------------------------------------------------------------------------
def test_cron_trigger_in_its_zone() -> None:
    t = Trigger.parse(cron="0 2 * * 1-5", tz="Europe/Berlin", now=0)
    got = runs(t, utc(2026, 11, 27, 12), 2)  # a Friday afternoon
    assert [d.strftime("%a %H:%M %Z") for d in got] == ["Mon 02:00 CET", "Tue 02:00 CET"]
    assert t.describe() == "At 02:00, Monday through Friday (Europe/Berlin)"


def test_interval_and_once_triggers() -> None:
    t = Trigger.parse(every="15m", now=1000.0)
    assert t.next_after(1000.0) == 1900.0 and t.next_after(1900.0) == 2800.0 and t.next_after(2000) == 2800.0
    assert t.describe() == "Every 15 minutes"
    once = Trigger.parse(at="2030-01-02T09:30", tz="Europe/Berlin")
    assert once.next_after(0) == utc(2030, 1, 2, 8, 30)
    assert once.next_after(utc(2030, 1, 2, 8, 30)) is None
    assert once.describe() == "Once at 2030-01-02 09:30 (Europe/Berlin)"


def test_dst_spring_forward_neither_skips_nor_doubles() -> None:
    t = Trigger.parse(cron="30 2 * * *", tz="Europe/Berlin", now=0)
    got = runs(t, utc(2026, 3, 27, 12), 3)
    # 2026-03-29 02:30 does not exist in Berlin: the run happens once, right after the gap.
    assert [d.strftime("%m-%d %H:%M %Z") for d in got] == ["03-28 02:30 CET", "03-29 03:00 CEST",
                                                          "03-30 02:30 CEST"]


def test_dst_fall_back_runs_once() -> None:
    t = Trigger.parse(cron="30 2 * * *", tz="Europe/Berlin", now=0)
    got = runs(t, utc(2026, 10, 24, 12), 2)
    # 2026-10-25 02:30 happens twice in Berlin: one run, at the first.
    assert [d.strftime("%m-%d %H:%M %Z") for d in got] == ["10-25 02:30 CEST", "10-26 02:30 CET"]


def test_every_day_keeps_its_wall_clock_time_across_dst() -> None:
    t = Trigger.parse(every="1d", tz="Europe/Berlin", now=utc(2026, 10, 23, 7))  # 09:00 CEST
    got = runs(t, t.anchor, 4)
    assert [d.strftime("%m-%d %H:%M") for d in got] == ["10-24 09:00", "10-25 09:00", "10-26 09:00",
                                                       "10-27 09:00"]


@pytest.mark.parametrize("kwargs,message", [
    ({"cron": "61 * * * *"}, "invalid cron expression"),
    ({"cron": "* * *"}, "invalid cron expression"),
    ({"every": "0m"}, "invalid interval"),
    ({"every": "soon"}, "invalid interval"),
    ({"at": "2020-01-01T00:00"}, "in the past"),
    ({"at": "next tuesday"}, "invalid date-time"),
    ({"every": "1m", "tz": "Mars/Olympus"}, "unknown time zone"),
    ({"every": "1m", "cron": "* * * * *"}, "exactly one trigger"),
    ({}, "exactly one trigger"),
])
def test_bad_triggers(kwargs, message) -> None:
    with pytest.raises(BadParams, match=message):
        Trigger.parse(**kwargs)


# -- service actions and bad input ---------------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (dict(name="x", type="nope", every="1m"), "unknown job type 'nope'"),
    (dict(name="x", type="sleep", params={"tasks": 0}, every="1m"), "bad parameters for sleep"),
    (dict(name="x", type="sleep", cron="99 * * * *"), "invalid cron"),
    (dict(name="x", type="sleep", at="2001-01-01T00:00"), "in the past"),
    (dict(name="x", type="sleep", every="1m", misfire="sometimes"), "unknown misfire policy"),
    (dict(name="", type="sleep", every="1m"), "needs a name"),
])
def test_bad_schedules_are_refused_and_nothing_is_saved(jm: JobManager, home: Path, args, message) -> None:
    with pytest.raises(BadParams, match=message):
        jm.schedule(**args)
    assert schedule_count(home) == 0


def test_schedule_actions(jm: JobManager) -> None:
    row = jm.schedule("nightly", "sleep", {"tasks": 2}, cron="0 2 * * *", tz="Europe/Berlin")
    assert row["source_kind"] == "code" and row["source_ref"].endswith(f"{Path(__file__).name}:"
                                                                       f"{row['source_ref'].rsplit(':', 1)[1]}")
    assert Path(__file__).name in row["source_ref"]
    again = jm.schedule("nightly", "sleep", {"tasks": 3}, cron="0 3 * * *", tz="Europe/Berlin")  # re-run: update
    assert again["id"] == row["id"] and again["params"]["tasks"] == 3
    with pytest.raises(InvalidState, match="already exists"):
        jm.create_schedule("nightly", "sleep", every="1m")
    edited = jm.edit_schedule("nightly", tz="UTC")
    assert edited["timezone"] == "UTC" and edited["trigger_value"] == "0 3 * * *"
    jm.disable_schedule("nightly")
    df = jm.schedules()
    assert list(df.name) == ["nightly"] and not df.enabled[0] and df.next_run[0] == ""
    jm.enable_schedule("nightly")
    assert jm.schedules().enabled[0]
    job_id = jm.run_schedule_now("nightly")
    job = jm.job(job_id)
    assert job.name == "nightly" and job.tasks_total == 3 and job.schedule_id == row["id"]
    detail = jm.get_schedule("nightly")
    assert detail["last_job_id"] == job_id and detail["runs"][0]["outcome"] == "run-now"
    assert detail["description"] == "At 03:00 (UTC)"
    jm.delete_schedule("nightly")
    with pytest.raises(NotFound):
        jm.get_schedule("nightly")
    assert jm.job(job_id).state == "queued"  # its jobs stay


def test_notebook_source_is_recorded(jm: JobManager, monkeypatch) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", "/srv/notebooks/reports.ipynb")
    row = jm.schedule("from-notebook", "sleep", every="1h")
    assert (row["source_kind"], row["source_ref"]) == ("notebook", "/srv/notebooks/reports.ipynb")


# -- firing -----------------------------------------------------------------------------------------------
def make_due(store: SQLiteStore, name: str, due: float) -> None:
    store.schedules.update(name, {"next_run_at": due}, actor="t", message="test")


def test_fire_due_creates_one_job_and_moves_on(jm: JobManager) -> None:
    jm.schedule("s", "sleep", every="10m")
    store = jm.store
    now = time.time()
    make_due(store, "s", now - 1)
    fired = fire_due(store, "a1", now=now)
    assert len(fired) == 1 and fired[0][0] is not None
    assert fire_due(store, "a1", now=now) == []  # nothing due any more
    row = store.schedules.get("s")
    assert row["next_run_at"] > now and row["last_job_id"] == fired[0][0]


@pytest.mark.parametrize("policy,expect_job", [("run_once", True), ("skip", False)])
def test_misfire_policies_after_downtime(jm: JobManager, policy: str, expect_job: bool) -> None:
    jm.schedule("s", "sleep", every="10m", misfire=policy)
    now = time.time()
    make_due(jm.store, "s", now - 3 * 3600)  # 18 runs were missed
    fired = fire_due(jm.store, "a1", now=now)
    assert len(fired) == 1  # never a burst
    assert (fired[0][0] is not None) == expect_job
    runs_ = jm.store.schedules.runs("s")
    assert [r["outcome"] for r in runs_] == (["fired"] if expect_job else ["skipped"])
    assert jm.store.schedules.get("s")["next_run_at"] > now
    assert len(jm.jobs()) == int(expect_job)


def test_disabled_schedule_does_not_fire(jm: JobManager) -> None:
    jm.schedule("s", "sleep", every="10m", enabled=False)
    make_due(jm.store, "s", time.time() - 5)
    assert fire_due(jm.store, "a1") == [] and jm.jobs().empty


def _race(path: str, now: float, out) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "support"))
    from jobmanager import jobtypes

    jobtypes.discover()
    from jobmanager.home import Home
    from jobmanager.store import open_store

    store = open_store(Home.open(path))  # the home's store, SQLite or PostgreSQL
    out.put(sum(1 for job_id, _ in fire_due(store, "racer", now=now) if job_id))


def test_exactly_once_with_agents_racing(jm: JobManager) -> None:
    for i in range(5):
        jm.schedule(f"s{i}", "sleep", every="10m")
    now = time.time()
    for i in range(5):
        make_due(jm.store, f"s{i}", now - 1)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(jm.home.path), now, out)) for _ in range(4)]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(10)
    assert total == 5 and len(jm.jobs()) == 5


def test_run_key_refuses_a_second_firing_of_the_same_due_time(jm: JobManager) -> None:
    jm.schedule("s", "sleep", every="10m")
    due = time.time() - 1
    make_due(jm.store, "s", due)
    assert len(fire_due(jm.store, "a1")) == 1
    make_due(jm.store, "s", due)  # someone puts the same due time back
    assert fire_due(jm.store, "a2") == [] and len(jm.jobs()) == 1


def test_recurring_schedule_fires_real_jobs_with_two_agents(jm: JobManager, start_agent) -> None:
    start_agent("a1")
    start_agent("a2")
    jm.schedule("tick", "sleep", {"tasks": 1}, every="1s")
    wait_for(lambda: len(jm.jobs(state="completed")) >= 4, timeout=30, what="4 scheduled jobs completed")
    jm.disable_schedule("tick")
    runs_ = jm.store.schedules.runs("tick", limit=100)
    dues = [r["due_at"] for r in runs_]
    assert len(dues) == len(set(dues)) and all(r["job_id"] for r in runs_)
    jobs = jm.jobs(limit=1000)
    assert len(jobs) == len(runs_) and set(jobs.name) == {"tick"}


# -- the schedules file ----------------------------------------------------------------------------------------
SCHEDULES_TOML = """\
# nightly work
[[schedule]]
name = "nightly"
type = "sleep"
cron = "0 2 * * 1-5"
tz = "Europe/Berlin"
params = { tasks = 2 }

[[schedule]]
name = "hourly"
type = "sleep"
every = "1h"
"""


def test_schedules_file_is_synced_with_file_and_line(jm: JobManager, home: Path) -> None:
    (home / "schedules.toml").write_text(SCHEDULES_TOML)
    assert jm.sync_schedules_file() == {"declared": 2, "created": 2, "updated": 0, "removed": 0}
    rows = {r["name"]: r for r in jm.store.schedules.list_all()}
    assert rows["nightly"]["source_ref"].endswith("schedules.toml:2")
    assert rows["hourly"]["source_ref"].endswith("schedules.toml:9")
    assert jm.sync_schedules_file()["updated"] == 0  # idempotent; next runs kept
    (home / "schedules.toml").write_text(SCHEDULES_TOML.split("[[schedule]]\nname = \"hourly\"")[0])
    assert jm.sync_schedules_file()["removed"] == 1
    assert [r["name"] for r in jm.store.schedules.list_all()] == ["nightly"]


def test_bad_schedules_file_changes_nothing(jm: JobManager, home: Path) -> None:
    (home / "schedules.toml").write_text(SCHEDULES_TOML + '\n[[schedule]]\nname = "bad"\ntype = "sleep"\n'
                                         'cron = "77 * * * *"\n')
    with pytest.raises(BadParams, match=r"schedules.toml:14: invalid cron expression"):
        jm.sync_schedules_file()
    assert schedule_count(home) == 0


def test_agent_loads_the_schedules_file_at_start_up(jm: JobManager, home: Path, start_agent) -> None:
    (home / "schedules.toml").write_text(SCHEDULES_TOML)
    start_agent("a1")
    assert sorted(jm.schedules().name) == ["hourly", "nightly"]


@pytest.mark.sqlite_only
def test_the_schedules_file_is_saved_all_or_nothing(jm: JobManager, home: Path) -> None:
    """A store error on the second schedule leaves the first unsaved too (one transaction)."""
    import sqlite3

    con = sqlite3.connect(home / "store.db")
    con.execute("CREATE TRIGGER refuse_hourly BEFORE INSERT ON schedules WHEN NEW.name = 'hourly' "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    con.commit()
    (home / "schedules.toml").write_text(SCHEDULES_TOML)
    with pytest.raises(Exception, match="refused by the test"):
        jm.sync_schedules_file()
    assert list(jm.schedules().name) == []  # not even "nightly", which came first
    con.execute("DROP TRIGGER refuse_hourly")
    con.commit()
    con.close()
    assert jm.sync_schedules_file()["created"] == 2


# -- CLI ----------------------------------------------------------------------------------------------------------
def test_schedule_cli(home: Path) -> None:
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli, ["--home", str(home), "--user", "tester", *args], catch_exceptions=False)

    result = run("schedule", "add", "report", "sleep", "--cron", "0 6 * * *", "--tz", "Europe/Berlin",
                 "-p", "tasks=2")
    assert result.exit_code == 0 and "created; next run" in result.output
    assert "report" in run("schedule", "list").output
    import json

    listed = json.loads(run("schedule", "list", "--json").output)
    assert listed[0]["name"] == "report" and listed[0]["source_kind"] == "cli"
    shown = json.loads(run("schedule", "show", "report", "--json").output)
    assert shown["description"] == "At 06:00 (Europe/Berlin)" and shown["params"]["tasks"] == 2
    assert run("schedule", "edit", "report", "--every", "2h").exit_code == 0
    assert run("schedule", "disable", "report").exit_code == 0
    assert run("schedule", "enable", "report").exit_code == 0
    out = run("schedule", "run-now", "report").output
    assert "(job 1)" in out
    for args, message in [
        (["schedule", "add", "report", "sleep", "--every", "1m"], "already exists"),
        (["schedule", "add", "x", "sleep", "--cron", "bad cron"], "invalid cron"),
        (["schedule", "add", "x", "nope", "--every", "1m"], "unknown job type"),
        (["schedule", "add", "x", "sleep", "--at", "2001-01-01T00:00"], "in the past"),
        (["schedule", "add", "x", "sleep", "--every", "1m", "-p", "tasks=-2"], "bad parameters"),
        (["schedule", "show", "ghost"], "no schedule 'ghost'"),
        (["schedule", "delete", "ghost"], "no schedule 'ghost'"),
    ]:
        before = schedule_count(home)
        result = run(*args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert schedule_count(home) == before
    assert run("schedule", "delete", "report").exit_code == 0
    assert run("schedule", "list").output.strip() == "(none)"


# -- the Scheduled tab: next run in the schedule's zone, the form's live preview (no browser) --------------
def test_scheduled_tab_shows_next_run_in_its_zone_with_relative_time(jm: JobManager) -> None:
    pytest.importorskip("jobmanager.widgets")
    from jobmanager.widgets.schedules_view import SchedulesTab, present_schedules

    jm.schedule("berlin", "sleep", cron="0 2 * * *", tz="Europe/Berlin")
    jm.schedule("utc", "sleep", every="15m")
    df = jm.schedules().set_index("name")
    nxt = df.loc["berlin", "next_run_at"].timestamp()
    local = datetime.fromtimestamp(nxt, BERLIN)
    assert df.loc["berlin", "next_run"] == f"{local:%Y-%m-%d} 02:00 {local:%Z} (Europe/Berlin)"
    assert df.loc["utc", "next_run"].endswith(" UTC")  # the zone's own name once, not "UTC (UTC)"
    shown = present_schedules(df.reset_index(), now=nxt - 26 * 60).set_index("Name")
    assert shown.loc["berlin", "Next run"] == f"in 26 min · {df.loc['berlin', 'next_run']}"
    html = SchedulesTab._next_run_html({"next_run_at": nxt, "enabled": True, "timezone": "Europe/Berlin"},
                                       now=nxt - 26 * 60)
    exact = datetime.fromtimestamp(nxt, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"title='{exact}'" in html and "in 26 min · " in html and "(Europe/Berlin)" in html


def test_schedule_form_previews_next_five_runs_as_you_type(jm: JobManager) -> None:
    pytest.importorskip("jobmanager.widgets")
    from jobmanager.widgets.models import Messages
    from jobmanager.widgets.schedules_view import SchedulesTab

    tab = SchedulesTab(jm, Messages(), {"manage_schedules"})
    form = tab.form
    form.open_form()
    form.tz.value = "America/New_York"
    form.trigger.value = "15,45 * * * *"
    m = form.model
    assert m.error == "" and m.description == "At 15 and 45 minutes past the hour (America/New_York)"
    assert len(m.runs) == 5 and all("(America/New_York)" in r and " · in " in r for r in m.runs)
    assert "next runs:" in form.preview.value and m.runs[0].split(" · ")[0] in form.preview.value
    form.trigger.value = "* * 30 2 *"  # a bad expression shows its one line instead
    assert m.runs == [] and m.error == "cron expression '* * 30 2 *' never fires: no date matches it"
    assert "never fires" in form.preview.value and "next runs" not in form.preview.value
    form.kind.value = "every"
    form.trigger.value = "15m"
    assert m.description == "Every 15 minutes" and len(m.runs) == 5
    form.trigger.value = ""
    assert form.preview.value == ""
    assert jm.store.schedules.list_all() == []  # previewing saves nothing


def test_preview_schedule_service_call(jm: JobManager) -> None:
    p = jm.preview_schedule(cron="@daily", tz="Europe/Berlin", count=3)
    assert p["description"] == "At 00:00 (Europe/Berlin)" and len(p["runs"]) == 3
    assert all(label.endswith("00:00 CET (Europe/Berlin)") or label.endswith("00:00 CEST (Europe/Berlin)")
               for label in p["labels"])
    with pytest.raises(BadParams, match="@reboot is not a schedule"):
        jm.preview_schedule(cron="@reboot")
