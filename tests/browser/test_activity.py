"""The activity strip above the tabs, in the real dashboard in Chromium (issue 17): it shows what real agents
processed and failed, updates with the dashboard's refresh, collapses, and leaves the grid on the screen at
1440 and 1024 px."""

from __future__ import annotations

from pathlib import Path

import psutil

from jobmanager import JobManager

from .conftest import ARTIFACTS, Page
from .test_dashboard import dashboard, eventually  # noqa: F401 - fixture by name
from .test_operator_live import pager

#: the README's bound for one dashboard kernel (measured: see the README's Dashboard section)
KERNEL_RSS_LIMIT_MB = 300


def line(page: Page) -> str:
    return page.page.locator(".jm-activity-line").first.inner_text()


def bars(page: Page) -> int:
    """Bars with work in them, in both charts."""
    return page.page.locator(".jm-activity-chart rect[fill='#60a5fa']").count()


def grid_fits(page: Page, height: int) -> bool:
    """The grid and its pager are inside the window, with no page scroll needed to reach them."""
    grid = page.page.locator(".lm-DataGrid:visible").first.bounding_box()
    pager_box = page.page.locator(".jm-pager:visible").first.bounding_box()
    return grid is not None and pager_box is not None and pager_box["y"] + pager_box["height"] <= height


def test_activity_strip_shows_updates_collapses_and_keeps_the_grid_on_screen(
        home: Path, start_agent, dashboard, page: Page) -> None:  # noqa: F811
    start_agent("a1", 2)
    with JobManager(home, user="admin") as admin:
        first = admin.submit("sleep", {"tasks": 4, "fail_tasks": [2]}, name="first batch")
        assert admin.wait(first, timeout=60).state == "completed_with_errors"
        for n in range(30):  # enough rows to fill the grid's room
            admin.submit("sleep", {"tasks": 1}, name=f"filler {n}", priority=-1)
    server = dashboard()
    p = page.page
    p.set_viewport_size({"width": 1440, "height": 900})
    p.goto(f"{server.url}#tab=completed", timeout=90_000)  # the Completed tab, opened by the page's link
    p.get_by_placeholder("username").wait_for(timeout=90_000)
    p.get_by_placeholder("username").fill("tester")
    p.get_by_placeholder("password").fill("tester-password")
    p.get_by_placeholder("password").press("Enter")
    p.locator(".jm-pager:visible").first.wait_for(timeout=60_000)
    eventually(page, lambda: "processed" in line(page), "the activity line")
    eventually(page, lambda: "34 processed" in line(page) and "1 failed" in line(page), "the first counts")
    assert bars(page) >= 2  # a bar in the minute chart and one in the hour chart
    label = p.locator(".jm-activity-chart").first.get_attribute("aria-label") or ""
    assert "per minute, last hour: 34 processed, 1 failed" in label
    eventually(page, lambda: "of 31" in pager(page), "the completed jobs")
    # folded at first (the numbers' line only), so the grid keeps its 20 rows at 900 px; the button opens it
    assert not p.locator(".jm-activity-chart").first.is_visible()
    assert grid_fits(page, 900)
    p.screenshot(path=str(ARTIFACTS / "activity-collapsed-1440.png"))
    box = p.locator(".lm-DataGrid:visible").first
    height_folded = box.bounding_box()["height"]
    p.get_by_role("button", name="Activity").click()
    eventually(page, lambda: p.locator(".jm-activity-chart").first.is_visible(), "the charts to open")
    eventually(page, lambda: box.bounding_box()["height"] < height_folded - 40, "the grid to give up the room")
    canvas = p.locator(".lm-DataGrid:visible canvas").first  # (a DataGrid's canvas grows, it never shrinks)
    assert grid_fits(page, 900), "the activity strip pushed the grid off the screen at 1440x900"
    p.screenshot(path=str(ARTIFACTS / "activity-1440.png"))

    # it updates with the dashboard's refresh: more work, more counts
    with JobManager(home, user="admin") as admin:
        second = admin.submit("sleep", {"tasks": 3, "fail_tasks": [3]}, name="second batch")
        admin.wait(second, timeout=60)
    eventually(page, lambda: "37 processed" in line(page) and "2 failed" in line(page), "the counts to update")

    # counting one type or one agent
    p.locator(".jm-activity select").first.select_option(label="agent: a1")
    eventually(page, lambda: "agent a1" in p.locator(".jm-activity-label").first.inner_text(), "agent a1's charts")
    assert "37 processed" in line(page)  # a1 ran everything

    # folded again: one line, and the grid takes the room back (and draws the rows)
    height_open = box.bounding_box()["height"]
    p.get_by_role("button", name="Activity").click()
    eventually(page, lambda: not p.locator(".jm-activity-chart").first.is_visible(), "the charts to hide")
    eventually(page, lambda: box.bounding_box()["height"] > height_open + 40, "the grid to take the room back")
    eventually(page, lambda: canvas.bounding_box()["height"] >= box.bounding_box()["height"] - 40,
               "the grid to draw rows down to its new bottom")
    assert "37 processed" in line(page)
    p.get_by_role("button", name="Activity").click()
    eventually(page, lambda: p.locator(".jm-activity-chart").first.is_visible(), "the charts back")

    p.set_viewport_size({"width": 1024, "height": 768})
    eventually(page, lambda: grid_fits(page, 768), "the grid to fit at 1024x768")
    assert p.locator(".jm-activity-line").first.bounding_box()["width"] > 300
    p.screenshot(path=str(ARTIFACTS / "activity-1024.png"))

    # the page's kernel stays small after all of this (benchmarks/bench_kernel_memory.py: demo and 1M jobs)
    rss_mb = max(psutil.Process(pid).memory_info().rss for pid in server.kernel_pids()) / 2**20
    print(f"dashboard kernel RSS: {rss_mb:.0f} MB")
    assert rss_mb < KERNEL_RSS_LIMIT_MB
