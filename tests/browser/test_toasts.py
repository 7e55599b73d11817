"""Messages that clear themselves and never push the layout; a filtered-empty grid offers Clear filters.

The real dashboard in Chromium (issue 17): an action's message appears as a toast over the page's bottom right corner
(the tabs do not move), and is gone again within its time; filters that match nothing say so, with a
button that clears them.
"""

from __future__ import annotations

import time
from pathlib import Path

from jobmanager import JobManager

from .conftest import ARTIFACTS, Page
from .test_dashboard import click_row, dashboard, eventually  # noqa: F401 - fixture by name
from .test_operator_live import pager, sign_in_with_enter


def tabs_top(page: Page) -> float:
    box = page.page.locator(".lm-TabBar").first.bounding_box()
    assert box is not None
    return box["y"]


def test_toasts_clear_themselves_and_filters_that_match_nothing_say_so(home: Path, dashboard, page: Page) -> None:  # noqa: F811
    with JobManager(home, user="admin") as admin:
        admin.submit("sleep", {"tasks": 1}, name="the only job")
    server = dashboard()
    p = page.page
    p.set_viewport_size({"width": 1440, "height": 900})
    sign_in_with_enter(page, server.url)
    eventually(page, lambda: "1–1 of 1" in pager(page), "the job")
    before = tabs_top(page)

    # an action's message: a toast over the corner; the tabs stay where they were; then it goes away
    click_row(page, 0)
    p.get_by_role("button", name="Pause").first.click()
    toast = p.locator(".jm-toast")
    eventually(page, lambda: "pause done for 1 job" in toast.first.inner_text(), "the toast")
    shown_at = time.monotonic()
    assert abs(tabs_top(page) - before) < 1, "the message pushed the layout"
    box = toast.first.bounding_box()
    assert box is not None and box["y"] + box["height"] > 900 - 60 and box["x"] + box["width"] > 1440 - 60  # corner
    assert toast.first.get_attribute("role") == "status"
    p.screenshot(path=str(ARTIFACTS / "toast-1440.png"))
    eventually(page, lambda: toast.count() == 0, "the toast to clear itself", timeout=30)
    assert time.monotonic() - shown_at > 5  # it stayed long enough to read
    assert abs(tabs_top(page) - before) < 1

    # filters that match nothing: the words and a Clear filters button that brings the rows back
    search = p.get_by_placeholder("search name or error…").first
    search.fill("no such job anywhere")
    search.press("Enter")
    empty = p.locator(".jm-empty:visible").first
    eventually(page, lambda: "No jobs match these filters." in empty.inner_text(), "the filtered-empty words")
    p.screenshot(path=str(ARTIFACTS / "filtered-empty-1440.png"))
    empty.get_by_role("button", name="Clear filters").click()
    eventually(page, lambda: "1–1 of 1" in pager(page), "the rows back after Clear filters")
    assert search.input_value() == ""
    assert p.locator(".jm-empty:visible").count() == 0
