"""The job tabs' bulk buttons, pick column, keys and paused Elapsed, without a browser (issue 17).

The browser half is tests/browser/test_bulk_keys.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from jobmanager import JobManager

from .conftest import wait_for

pytest.importorskip("jobmanager.widgets")
from jobmanager.widgets.app import Dashboard, JobManagerApp  # noqa: E402
from jobmanager.widgets.jobs_view import ALL_PICKED, PICK, PICKED, JobsTab  # noqa: E402
from jobmanager.widgets.keyboard import page_key  # noqa: E402
from jobmanager.widgets.models import present_jobs  # noqa: E402


@pytest.fixture
def dash(jm: JobManager) -> Iterator[Dashboard]:
    d = Dashboard(jm, on_sign_out=lambda: None)
    yield d
    d.close_dashboard()


def confirm_text(view: JobsTab) -> str:
    return " ".join(getattr(c, "value", "") or getattr(c, "description", "") for c in view.confirm.children)


def press(view: JobsTab, description: str) -> None:
    button = next(c for c in view.confirm.children if getattr(c, "description", None) == description)
    button.click()


def test_bulk_pause_and_cancel_every_matching_job_across_pages(jm: JobManager, dash: Dashboard) -> None:
    ids = [jm.submit("sleep", {"tasks": 1}, name=f"batch {i:03d}") for i in range(105)]
    other = jm.submit("sleep", {"tasks": 1}, name="another")
    view = dash.views[0]
    view.refresh()
    assert len(view.model.rows) == 100  # one page of 100; the bulk action reaches all 106
    assert view.bulk_buttons["cancel"].description == "Cancel all matching (106)"
    assert view.bulk_buttons["pause"].description == "Pause all (106)"
    assert view.bulk_buttons["resume"].disabled and view.bulk_buttons["resume"].tooltip == \
        "no paused jobs match these filters"
    view.search.value = "batch"
    view.time_range.value = "Last 24 h"
    assert view.bulk_buttons["pause"].description == "Pause all (105)"
    view.bulk_buttons["pause"].click()
    assert confirm_text(view).startswith(
        "<b>Pause 105 queued or running jobs matching search “batch”, last 24 h?</b> Pause 105 jobs Keep them")
    press(view, "Pause 105 jobs")
    assert view.confirm.children == ()
    assert {jm.job(i).state for i in ids} == {"paused"} and jm.job(other).state == "queued"
    assert dash.messages.message == "paused for 105 of 105 jobs (in-progress: search 'batch', created since " \
        + dash.messages.message.split("created since ")[1]
    assert view.bulk_buttons["resume"].description == "Resume all (105)"
    view.search.value = ""
    view.bulk_buttons["cancel"].click()
    assert "Cancel 106 jobs matching last 24 h?" in confirm_text(view)
    press(view, "Keep them")  # nothing happens
    assert view.confirm.children == () and jm.job(other).state == "queued"
    view.time_range.value = "Any time"
    view.bulk_buttons["cancel"].click()
    assert "Cancel 106 jobs in this tab (no filter)?" in confirm_text(view)
    press(view, "Cancel 106 jobs")
    assert {jm.job(i).state for i in [*ids, other]} == {"cancelled"}
    assert view.bulk_buttons["cancel"].description == "Cancel all matching (0)" and view.bulk_buttons["cancel"].disabled
    audit = JobManager(jm.home, user="admin").audit_log(50)
    assert list(audit[audit.action.str.startswith("bulk_")].action) == ["bulk_cancel", "bulk_pause"]


def test_retry_all_failed_names_count_and_filter(jm: JobManager, dash: Dashboard, start_agent) -> None:
    bad = [jm.submit("sleep", {"tasks": 1, "seconds": 0, "steps": 1, "fail_tasks": [1]}, name=f"bad {i}", retries=0)
           for i in range(3)]
    good = jm.submit("sleep", {"tasks": 1, "seconds": 0, "steps": 1}, name="good")
    agent = start_agent("a1", 4)
    wait_for(lambda: all(jm.job(i).state in ("failed", "completed") for i in [*bad, good]), 60, "jobs finished")
    agent.stop()
    view = dash.views[1]
    view.refresh()
    assert view.bulk_buttons["retry"].description == "Retry all failed (3)" and not view.bulk_buttons["retry"].disabled
    view.type.value = "sleep"
    view.bulk_buttons["retry"].click()
    assert "Retry 3 failed jobs matching type sleep?" in confirm_text(view)
    press(view, "Retry 3 jobs")
    assert {jm.job(i).state for i in bad} == {"queued"} and jm.job(good).state == "completed"
    assert dash.messages.message == "retry queued for 3 of 3 jobs (completed: type sleep)"


def test_bulk_buttons_say_which_permission_is_missing(home: Path) -> None:
    admin = JobManager(home, user="admin")
    admin.add_user("ana", "password-123", groups=["analysts"])
    admin.submit("sleep", {"tasks": 1}, name="visible")
    d = Dashboard(JobManager.sign_in(home, "ana", "password-123"), on_sign_out=lambda: None)
    try:
        progress, completed = d.views[0], d.views[1]
        for action in ("cancel", "pause", "resume"):
            button = progress.bulk_buttons[action]
            assert button.disabled and button.tooltip == "needs the manage_jobs permission", action
        assert completed.bulk_buttons["retry"].disabled
        assert completed.bulk_buttons["retry"].tooltip == "needs the retry_tasks permission"
        progress.ask_bulk("cancel")  # a forged click on the disabled button does nothing
        assert progress.confirm.children == ()
    finally:
        d.close_dashboard()


def test_pick_column_toggles_rows_without_opening_details(jm: JobManager, dash: Dashboard) -> None:
    ids = [jm.submit("sleep", {"tasks": 1}, name=f"row {i}") for i in range(3)]
    view = dash.views[0]
    view.refresh()
    rows = [int(i) for i in view.model.rows["id"]]  # newest first
    assert list(view.grid.data.columns)[:3] == [PICK, "Job", "Name"]
    assert view.grid.column_widths[PICK] == 44
    view._on_click({"region": "body", "column": PICK, "row": 1, "primary_key_row": 1})
    view._on_click({"region": "body", "column": PICK, "row": 2, "primary_key_row": 2})
    assert view.model.selected == [rows[1], rows[2]] and view.details.job_id is None
    assert list(view.grid.data[PICK]) == [PICK, PICKED, PICKED]
    assert view.selection_label.value == '<span class="jm-muted">2 selected</span>'
    view._on_click({"region": "body", "column": PICK, "row": 1, "primary_key_row": 1})  # again: unpicked
    assert view.model.selected == [rows[2]] and list(view.grid.data[PICK]) == [PICK, PICK, PICKED]
    # the grid's own selection of the clicked row (it arrives with the click) does not replace the picks
    view._on_click({"region": "body", "column": PICK, "row": 0, "primary_key_row": 0})
    view._on_selection({"new": [{"r1": 0, "c1": 0, "r2": 0, "c2": 13}]})
    assert sorted(view.model.selected) == sorted([rows[0], rows[2]])
    # the header box picks the whole page, then clears it
    view._on_click({"region": "column-header", "column": PICK, "row": None, "primary_key_row": None})
    assert sorted(view.model.selected) == sorted(ids) and list(view.grid.data.columns)[0] == ALL_PICKED
    view._on_click({"region": "column-header", "column": ALL_PICKED, "row": None, "primary_key_row": None})
    assert view.model.selected == [] and list(view.grid.data.columns)[0] == PICK
    assert view.model.sort == "created_at"  # the box column never sorts
    # a click on the row itself opens its details
    view._on_click({"region": "body", "column": "Name", "row": 1, "primary_key_row": 1})
    assert view.details.job_id == rows[1]


def test_single_cancel_confirmation_names_the_jobs(jm: JobManager, dash: Dashboard) -> None:
    a = jm.submit("sleep", {"tasks": 1}, name="Q3 binders")
    b = jm.submit("sleep", {"tasks": 1}, name="nightly <b>")
    view = dash.views[0]
    view.refresh()
    view.model.selected = [a, b]
    view.buttons["cancel"].click()
    text = confirm_text(view)
    assert f"Cancel job {a} (Q3 binders) and job {b} (nightly &lt;b&gt;)?" in text and "Cancel 2 jobs" in text
    press(view, "Cancel 2 jobs")
    assert jm.job(a).state == jm.job(b).state == "cancelled"
    many = [jm.submit("sleep", {"tasks": 1}, name=f"m{i}") for i in range(5)]
    view.refresh()
    view.model.selected = many
    view.buttons["cancel"].click()
    assert f"Cancel job {many[0]} (m0), job {many[1]} (m1), job {many[2]} (m2) and 2 more?" in confirm_text(view)


def test_keys_move_the_highlight_open_and_close_details(home: Path) -> None:
    with JobManager(home, user="tester") as jm:
        ids = [jm.submit("sleep", {"tasks": 1}, name=f"k{i}") for i in range(3)]
    app = JobManagerApp(home, user="tester")
    try:
        assert app.dashboard is not None
        view = app.dashboard.views[0]
        rows = [int(i) for i in view.model.rows["id"]]
        assert sorted(rows) == sorted(ids)
        app.key_box.value = "down 1"
        assert view.model.selected == [rows[0]]
        app.key_box.value = "down 2"
        app.key_box.value = "down 3"
        app.key_box.value = "down 4"  # stays on the last row
        assert view.model.selected == [rows[2]]
        app.key_box.value = "up 5"
        assert view.model.selected == [rows[1]] and view.grid.selections[0]["r1"] == 1
        assert view.details.job_id is None
        app.key_box.value = "enter 6"
        assert view.details.job_id == rows[1] and view.details.layout.display is None
        app.key_box.value = "escape 7"
        assert view.details.job_id is None and view.details.layout.display == "none"
        # hostile text from the comm: ignored, nothing moves, nothing raises
        for value in ("down", "DOWN 8", "down 9\n", "down  10", "delete 11", "down 1" + "0" * 30, "x" * 5000,
                      "enter 12; import os", "down -1", "down ١٢"):
            app.key_box.value = value
            assert view.model.selected == [rows[1]] and view.details.job_id is None, value
    finally:
        if app.dashboard is not None:
            app.dashboard.close_dashboard()


def test_page_key_accepts_only_its_four_keys() -> None:
    assert [page_key(f"{k} 3") for k in ("up", "down", "enter", "escape")] == ["up", "down", "enter", "escape"]
    for value in (None, 3, b"down 1", ["down 1"], "down", "down 1 2", "Down 1", " down 1", "tab 1", "down 9999999999"):
        assert page_key(value) is None, value


def test_a_paused_jobs_elapsed_stops() -> None:
    now = 1_000_000.0
    base = {"id": 1, "name": "p", "type": "sleep", "state": "paused", "owner": "o", "case": None, "priority": 0,
            "started_at": pd.Timestamp(now - 300, unit="s"), "progress": 0.5, "agents": "", "waiting": ""}
    paused = pd.DataFrame([{**base, "paused_s": 0.0, "paused_since": now - 240}])
    assert present_jobs(paused, "in-progress", now).iloc[0]["Elapsed"] == "1 min 0 s"
    assert present_jobs(paused, "in-progress", now + 3600).iloc[0]["Elapsed"] == "1 min 0 s"  # an hour later: still
    resumed = pd.DataFrame([{**base, "state": "running", "paused_s": 240.0, "paused_since": None}])
    assert present_jobs(resumed, "in-progress", now).iloc[0]["Elapsed"] == "1 min 0 s"  # the pause is not counted
    assert present_jobs(resumed, "in-progress", now + 60).iloc[0]["Elapsed"] == "2 min 0 s"


def test_the_store_reports_pauses_for_elapsed(jm: JobManager, start_agent) -> None:
    import time

    start_agent("a1", 1)
    job = jm.submit("sleep", {"tasks": 3, "seconds": 3, "steps": 3}, name="long")
    wait_for(lambda: jm.job(job).state == "running", 30, "running")
    jm.pause(job)
    info = jm.live([job])[job]
    assert info["paused_since"] is not None and info["paused_s"] == 0.0
    started = jm.job(job).started_at
    assert started is not None and info["paused_since"] >= started
    time.sleep(0.6)
    jm.resume(job)
    info = jm.live([job])[job]
    assert info["paused_since"] is None and info["paused_s"] >= 0.5
    # a job paused before it ever started: no Elapsed to stop, nothing counted
    queued = jm.submit("sleep", {"tasks": 1}, name="later", priority=-5)
    jm.pause(queued)
    assert jm.live([queued])[queued]["paused_s"] == 0.0
    jm.cancel(job)
