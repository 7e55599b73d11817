"""Live logs in the details panel (issue 17): the log of a running job follows (tail -f) with the tab's
auto-refresh off, a search box keeps only the matching lines, and events read newest first.

A real agent runs a sleep job whose tasks log one after another; Chromium watches the real dashboard.
"""

from __future__ import annotations

import re
from pathlib import Path

from jobmanager import JobManager

from .conftest import ARTIFACTS, Page
from .test_dashboard import click_row, dashboard, eventually  # noqa: F401 - fixture by name
from .test_operator_live import sign_in_with_enter


def done_tasks(text: str) -> set[int]:
    return {int(n) for n in re.findall(r"task (\d+): done", text)}


def test_the_log_follows_a_running_job_and_can_be_searched(home: Path, start_agent, dashboard, page: Page) -> None:  # noqa: F811
    start_agent("a1", 1)
    with JobManager(home, user="admin") as admin:
        job_id = admin.submit("sleep", {"tasks": 40, "seconds": 3}, name="Long import")  # 2 min on 1 worker
    server = dashboard()
    p = page.page
    p.set_viewport_size({"width": 1440, "height": 900})
    sign_in_with_enter(page, server.url)
    p.locator(".jm-header select").first.select_option(label="off")  # no auto-refresh: only the follow reads
    click_row(page, 0)
    details = p.locator(".jm-details:visible").first
    eventually(page, lambda: f"#{job_id}" in details.inner_text(), "the details")
    log = details.locator(".jm-log-follow")
    eventually(page, lambda: "sleeping" in log.inner_text(), "the running job's log", timeout=60)
    assert "following" in details.inner_text()
    seen = done_tasks(log.inner_text())
    # new lines arrive while the job runs, without a click and with the tab's refresh off
    eventually(page, lambda: len(done_tasks(log.inner_text())) >= len(seen) + 2, "the log to follow", timeout=60)

    # search: only the matching lines, the term marked, a count
    details.get_by_placeholder("search the log").fill("done")
    eventually(page, lambda: "lines match 'done'" in details.inner_text(), "the search count")
    shown = details.locator(".jm-log").last.inner_text()
    assert "sleeping" not in shown and "done" in shown
    assert details.locator(".jm-log mark").count() >= 2
    details.locator(".jm-log").last.scroll_into_view_if_needed()
    p.screenshot(path=str(ARTIFACTS / "live-log-1440.png"))
    details.get_by_placeholder("search the log").fill("")

    # events newest first: the first entry is later than the last (job submitted is at the bottom)
    items = details.locator(".jm-timeline li").all_inner_texts()
    assert len(items) >= 3 and "submitted" in items[-1] and "submitted" not in items[0], items
    times = [i.split()[0] for i in items]
    assert times == sorted(times, reverse=True), times
