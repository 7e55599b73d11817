"""The dashboard's models and views without a browser (the browser tests are in tests/browser)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from jobmanager import JobManager

widgets = pytest.importorskip("jobmanager.widgets")
from jobmanager.widgets import format as fmt  # noqa: E402
from jobmanager.widgets.app import Dashboard, JobManagerApp  # noqa: E402
from jobmanager.widgets.models import PAGE_SIZE, JobsModel, Messages, present_jobs  # noqa: E402


def test_formatting() -> None:
    now = 1_000_000.0
    assert fmt.relative(now - 3, now) == "just now"
    assert fmt.relative(now - 190, now) == "3 min ago"
    assert fmt.relative(now + 7200, now) == "in 2 h"
    assert fmt.duration(134) == "2 min 14 s" and fmt.duration(0.25) == "250 ms" and fmt.duration(None) == ""
    assert fmt.size(3 * 2**20) == "3.0 MB" and fmt.count(1204311) == "1,204,311"
    assert fmt.exact(0) == "1970-01-01 00:00:00 UTC"


def test_present_jobs_in_progress_and_completed(jm: JobManager) -> None:
    jm.submit("sleep", {"tasks": 2}, name="a", case="C1", priority=3)
    df, total = jm.grid(tab="in-progress")
    shown = present_jobs(df.assign(progress=0.5, agents="a1"), "in-progress")
    assert list(shown.columns) == ["Job", "Name", "State", "Progress", "Type", "Agent", "Queue", "Started",
                                   "Elapsed", "ETA", "Owner", "Case", "Priority"]
    assert shown.iloc[0]["State"] == "queued" and shown.iloc[0]["Started"] == "not yet"
    assert shown.iloc[0]["Case"] == "C1" and shown.iloc[0]["Priority"] == 3
    empty = present_jobs(pd.DataFrame(), "completed")
    assert list(empty.columns)[:6] == ["Job", "Name", "Result", "Tasks", "Failed", "Cancelled"]


def test_completed_grid_counts_failed_and_cancelled_tasks_apart() -> None:
    now = 1_000_000.0
    df = pd.DataFrame([{"id": 7, "name": "mixed", "type": "sleep", "state": "completed_with_errors", "owner": "o",
                        "case": None, "priority": 0, "tasks_total": 10, "tasks_succeeded": 6, "tasks_failed": 3,
                        "tasks_cancelled": 1, "created_at": now - 100, "started_at": now - 90,
                        "finished_at": now - 30, "duration_s": 60.0}])
    row = present_jobs(df, "completed", now).iloc[0]
    assert (row["Failed"], row["Cancelled"], row["Tasks"]) == (3, 1, "6 / 10 ok")


def test_model_filters_sort_and_paging(jm: JobManager) -> None:
    for i in range(PAGE_SIZE + 5):
        jm.submit("sleep", name=f"job {i:03d}", case="BIG" if i % 2 else None)
    m = JobsModel(jm, Messages(), "in-progress")
    m.refresh()
    assert m.total == PAGE_SIZE + 5 and len(m.rows) == PAGE_SIZE and m.page_label() == "1–100 of 105"
    m.set_page(2)
    assert len(m.rows) == 5 and m.page_label() == "101–105 of 105"
    m.set_page(99)  # clamps to the last page
    assert m.page == 2
    m.case = "BIG"
    m.set_page(1)
    assert m.total == 52
    m.search = "job 00"
    m.refresh()
    assert set(m.rows["name"]) == {"job 001", "job 003", "job 005", "job 007", "job 009"}
    assert m.sort_by("Name", desc=False) and list(m.rows["name"])[:2] == ["job 001", "job 003"]
    assert not m.sort_by("Progress")  # not sortable on the server: said, not crashed
    assert "cannot be sorted" in m.messages.message


def test_hostile_filter_values_are_just_strings(jm: JobManager) -> None:
    jm.submit("sleep", name="safe")
    m = JobsModel(jm, Messages(), "in-progress")
    m.search = "'; drop table jobs; --"
    m.refresh()
    assert m.total == 0 and m.messages.message == ""
    m.search = ""
    m.refresh()
    assert m.total == 1


def test_actions_report_one_line_and_keep_going(jm: JobManager) -> None:
    a = jm.submit("sleep", name="a")
    b = jm.submit("sleep", name="b")
    m = JobsModel(jm, Messages(), "in-progress")
    m.refresh()
    m.selected = [a, b]
    assert m.act("pause") == 2 and m.messages.message == "pause done for 2 jobs"
    m.selected = [a, b]
    jm.resume(a)
    assert m.act("resume") == 1
    assert m.messages.kind == "error" and "only a paused job can be resumed" in m.messages.message
    assert "\n" not in m.messages.message and "Traceback" not in m.messages.message
    m.selected = [a]
    m.act("priority", delta=1)
    assert jm.job(a).priority == 1


def test_refresh_keeps_selection_sort_and_page(jm: JobManager) -> None:
    ids = [jm.submit("sleep", name=f"j{i}") for i in range(3)]
    m = JobsModel(jm, Messages(), "in-progress")
    m.sort_by("Job", desc=False)
    m.selected = [ids[1]]
    jm.submit("sleep", name="newcomer")
    m.refresh()
    assert m.selected == [ids[1]] and m.sort == "id" and not m.desc and m.total == 4


def test_permissions_shape_what_is_offered(home: Path) -> None:
    admin = JobManager(home, user="admin")
    admin.add_user("ana", "password-123", groups=["analysts"])
    admin.add_user("oli", "password-123", groups=["operators"])
    admin.submit("sleep", name="visible")
    ana = Dashboard(JobManager.sign_in(home, "ana", "password-123"), on_sign_out=lambda: None)
    try:
        assert ana.titles == ["In Progress", "Completed", "Scheduled"]  # no view_agents: no Agents tab
        completed = ana.views[1]
        assert completed.buttons["retry"].disabled
        assert completed.buttons["retry"].tooltip == "needs the retry_tasks permission"
        assert ana.views[0].buttons["pause"].disabled and ana.views[2].buttons["run"].disabled
    finally:
        ana.close_dashboard()
    oli = Dashboard(JobManager.sign_in(home, "oli", "password-123"), on_sign_out=lambda: None)
    try:
        assert oli.titles == ["In Progress", "Completed", "Scheduled", "Agents"]
        assert not oli.views[1].buttons["retry"].disabled and not oli.views[0].buttons["pause"].disabled
        assert oli.tabs.titles[0] == "In Progress (1)"
    finally:
        oli.close_dashboard()


def test_sign_in_widget(home: Path) -> None:
    app = JobManagerApp(home)
    sign_in = app.children[1]
    sign_in.username.value, sign_in.password.value = "tester", "wrong"
    sign_in.submit()
    assert "wrong username or password" in sign_in.error.value and app.dashboard is None
    assert sign_in.password.value == ""  # never kept in the widget
    sign_in.password.value = "tester-password"
    sign_in.submit()
    assert app.dashboard is not None and app.dashboard.jm.user == "tester"
    app.dashboard.header.sign_out.click()
    assert app.dashboard is None and isinstance(app.children[1], type(sign_in))


def test_details_panel_and_schedules(jm: JobManager, start_agent) -> None:
    start_agent("a1")
    job_id = jm.submit("sleep", {"tasks": 2, "fail_tasks": [2]}, name="half")
    jm.wait(job_id, timeout=20)
    jm.schedule("nightly", "sleep", cron="0 2 * * *", tz="Europe/Berlin")
    d = Dashboard(jm, on_sign_out=lambda: None)
    try:
        completed = d.views[1]
        completed.refresh()
        completed._on_click({"row": 0})
        panel = completed.details
        assert "half" in panel.header.value and "completed with errors" in panel.header.value
        assert "failed on purpose" in panel.body.value and "task 2 → failed" in panel.body.value
        assert "sleeping" in panel.log_view.value
        panel.retry.click()
        assert d.messages.message == "retry queued"
        assert jm.wait(job_id, timeout=20).tasks_total == 2
        sched = d.views[2]
        sched.refresh()
        sched._show("nightly")
        assert "At 02:00 (Europe/Berlin)" in sched.detail.value
        sched.buttons["run"].click()
        assert d.messages.message.startswith("schedule nightly: job ")
        agents = d.views[3]
        agents.refresh()
        assert "a1" in agents.table.value and agents.pick.value == "a1"
        time.sleep(0.1)
    finally:
        d.close_dashboard()


def test_download_log_waits_for_a_log(jm: JobManager, start_agent) -> None:
    """A queued job that no task has started has no log: its Download log is greyed with the reason;
    once a task has run, the button works."""
    job_id = jm.submit("sleep", {"tasks": 1}, name="later")
    d = Dashboard(jm, on_sign_out=lambda: None)
    try:
        view = d.views[0]
        view.refresh()
        view._on_click({"row": 0})
        panel = view.details
        assert panel.job_id == job_id
        assert panel.log_button.disabled and panel.log_button.tooltip == "no log yet: no task has started"
        start_agent("a1")
        jm.wait(job_id, timeout=20)
        panel.refresh()
        assert not panel.log_button.disabled and panel.log_button.tooltip == "Download log"
    finally:
        d.close_dashboard()


def test_page_link_round_trip_and_hostile_values() -> None:
    from jobmanager.widgets.link import Link, parse

    choices = {"states": {"in-progress": ("queued", "running"), "completed": ("failed", "completed")},
               "types": {"sleep"}, "times": {"Any time", "Last hour"}}
    text = Link(tab="completed", job=42, filters={"state": "failed", "search": "a&b=c #1"}).encode()
    link, ignored = parse(text, **choices)
    assert (link.tab, link.job, link.filters, ignored) == ("completed", 42, {"state": "failed", "search": "a&b=c #1"},
                                                           [])
    link, ignored = parse("job=0&tab=x&state=failed&type=rm&time=1y&case=%00&foo=1", **choices)
    assert (link.job, link.tab, link.filters) == (None, None, {})
    assert len(ignored) == 7, ignored
    assert parse("job=" + "9" * 30, **choices)[0].job is None
    assert parse("&".join(f"k{i}=1" for i in range(50)), **choices)[1] == ["the whole link (not readable)"]
    assert parse("x" * 5000, **choices)[1][0].startswith("the whole link")


def test_log_search_marks_matching_lines_and_events_read_newest_first() -> None:
    from jobmanager.widgets.details import _timeline, log_html

    text = "task 1: sleeping\ntask 1: done\ntask 2: <b>sleeping</b>\n"
    shown = log_html(text, "SLEEPING", following=True)
    assert "2 of 3 lines match" in shown and "jm-log-follow" in shown
    assert "<mark>sleeping</mark>" in shown and "&lt;b&gt;<mark>sleeping</mark>" in shown and "done" not in shown
    assert "(no line matches)" in log_html(text, "nothing")
    events = [{"at": 100.0 + i, "kind": "job", "to_state": s, "agent": None, "actor": "a", "message": None,
               "seq": None} for i, s in enumerate(["queued", "running", "completed"])]
    order = _timeline(events)
    assert order.index("completed") < order.index("running") < order.index("queued")
