"""The dashboard's layout at the two widths operators use (issue 17, "Layout").

The real dashboard in Chromium at 1440x900 and 1024x768: the grid uses the page's height (100 rows are
not squeezed into a fixed box with empty page below), Name and State stay in view at 1024 px, the filter
bar wraps inside the page, the Scheduled table shows its rows without scrollbars of its own, code blocks
are single-spaced and relative times carry the exact time on hover. Screenshots of every tab at both
widths land in test-artifacts/ (layout-<tab>-<width>.png).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from jobmanager import JobManager

from .conftest import ARTIFACTS, Page
from .test_dashboard import HEADER_H, ROW_H, click_row, dashboard, eventually, grid, open_tab  # noqa: F401
from .test_operator_live import sign_in_with_enter

TABS = ("In Progress", "Completed", "Scheduled", "Agents")


def fill(home: Path) -> None:
    with JobManager(home, user="admin") as admin:
        for i in range(120):  # no agent runs: they stay queued (In Progress holds 120, one page shows 100)
            admin.submit("sleep", {"tasks": 1, "seconds": 1}, name=f"queued job {i:03d}")
        admin.demo_data(jobs=150, days=2, seed=7)  # a finished history for Completed
        admin.schedule("nightly archive", "sleep", {"tasks": 1}, cron="0 2 * * *", tz="Europe/Berlin")
        admin.schedule("every quarter hour", "sleep", {"tasks": 1}, every="15m")


def shoot_every_tab(page: Page, width: int, height: int) -> None:
    p = page.page
    p.set_viewport_size({"width": width, "height": height})
    for tab in TABS:
        open_tab(page, tab)
        p.wait_for_timeout(600)
        p.screenshot(path=str(ARTIFACTS / f"layout-{tab.lower().replace(' ', '-')}-{width}.png"))
    open_tab(page, "In Progress")


def overflow_x(page: Page) -> int:
    """How far the page is wider than the window (a horizontal page scrollbar), in px."""
    return int(page.page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


def box(locator: Any) -> dict[str, float]:
    b = locator.bounding_box()
    assert b is not None
    return b


def test_layout_at_1440_and_1024(home: Path, dashboard, page: Page) -> None:  # noqa: F811
    fill(home)
    server = dashboard()
    p = page.page
    p.set_viewport_size({"width": 1440, "height": 900})
    sign_in_with_enter(page, server.url)
    eventually(page, lambda: "1–100 of " in p.locator(".jm-pager:visible").first.inner_text(), "a full page")

    # 1440x900: the grid reaches down the page; it is not a 440 px box over 370 px of nothing
    eventually(page, lambda: box(grid(page))["height"] > 500, "the grid to use the page's height")
    g = box(grid(page))
    pager = box(p.locator(".jm-pager:visible").first)
    assert (g["height"] - HEADER_H) / ROW_H >= 20, g  # at least 20 of the 100 rows in view
    assert 900 - (pager["y"] + pager["height"]) < 90, (g, pager)  # little page left empty below the pager
    assert overflow_x(page) <= 0
    shoot_every_tab(page, 1440, 900)

    # 1024x768: Name and State are the first columns after the job number (the grid cannot pin columns)
    p.set_viewport_size({"width": 1024, "height": 768})
    p.wait_for_timeout(800)
    g = box(grid(page))
    assert g["x"] + g["width"] <= 1024
    assert g["width"] >= 60 + 210 + 110, g  # Job, Name and State fit without scrolling sideways
    # the filter bar wraps inside the page: every filter and button is within the window, none hidden
    for control in p.locator(".jm-toolbar:visible").first.locator("input, select, button").all():
        b = box(control)
        assert b["x"] >= 0 and b["x"] + b["width"] <= 1024 + 0.5, b
    assert overflow_x(page) <= 0
    header = box(p.locator(".jm-header").first)
    sign_out = box(p.get_by_role("button", name="Sign out"))
    assert sign_out["x"] + sign_out["width"] <= header["x"] + header["width"] + 0.5  # the header wraps, not clips
    shoot_every_tab(page, 1024, 768)

    # the Scheduled table: both schedules in view, no box of its own with two scrollbars
    open_tab(page, "Scheduled")
    s = box(grid(page))
    assert s["height"] >= HEADER_H + 2 * ROW_H + 14, s
    open_tab(page, "In Progress")

    # details: the exact time on hover of a relative time; the parameters block is single-spaced
    p.set_viewport_size({"width": 1440, "height": 900})
    p.wait_for_timeout(500)
    click_row(page, 0)
    details = p.locator(".jm-details:visible").first
    details.get_by_text("created").first.wait_for(timeout=30_000)
    created = details.locator(".jm-time").first
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+", created.get_attribute("title") or ""), \
        created.get_attribute("title")
    details.get_by_text("Parameters").click()
    block = details.locator("pre.jm-log").last
    block.wait_for(timeout=10_000)
    style = block.evaluate("e => [parseFloat(getComputedStyle(e).lineHeight), "
                           "parseFloat(getComputedStyle(e).fontSize)]")
    assert style[0] <= 1.5 * style[1], style  # single-spaced (ipywidgets' HTML gives every line 28 px)
    # with the details open the grid makes room for them, and the panel starts within the window
    eventually(page, lambda: box(grid(page))["height"] < 0.45 * 900 + 1, "the grid to make room for the details")
    assert box(details)["y"] < 900
    p.screenshot(path=str(ARTIFACTS / "layout-details-1440.png"), full_page=True)
