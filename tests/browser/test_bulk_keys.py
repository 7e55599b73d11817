"""Bulk actions, the pick column and the keyboard in the real dashboard in Chromium (issue 17).

A bulk retry of every failed job across pages retries every one of them; `/` ↑ ↓ Enter Esc work; a click on
a row's box picks it without opening its details. Screenshots of both job tabs with the box column and a
bulk confirmation at 1440x900 and 1024x768 land in test-artifacts/ (bulk-*.png).
"""

from __future__ import annotations

import re
from pathlib import Path

from jobmanager import JobManager

from ..conftest import wait_for as wait_until
from .conftest import ARTIFACTS, Page
from .test_dashboard import HEADER_H, ROW_H, dashboard, eventually, grid, open_tab  # noqa: F401 - fixture by name
from .test_operator_live import pager, sign_in_with_enter

PICK_X = 22  # the middle of the 44 px box column


def details_open(page: Page) -> bool:
    return page.page.locator(".jm-details:visible").count() > 0


def selected_label(page: Page) -> str:
    texts = page.page.get_by_text(re.compile(r"^\d+ selected$")).all_inner_texts()
    return texts[0] if texts else ""


def click_cell(page: Page, row: int, x: float) -> None:
    b = grid(page).bounding_box()
    page.page.mouse.click(b["x"] + x, b["y"] + HEADER_H + row * ROW_H + ROW_H / 2)


def test_bulk_retry_of_all_failed_jobs_across_pages(home: Path, dashboard, start_agent, page: Page) -> None:  # noqa: F811
    admin = JobManager(home, user="admin")
    ids = [admin.submit("sleep", {"tasks": 1, "seconds": 0, "steps": 1, "fail_tasks": [1]}, name=f"bad {i:03d}",
                        retries=0) for i in range(130)]
    done = admin.submit("sleep", {"tasks": 1, "seconds": 0, "steps": 1}, name="fine")
    agent = start_agent("a1", 8)
    wait_until(lambda: all(admin.store.get_job(i).state == "failed" for i in ids)
               and admin.store.get_job(done).state == "completed", timeout=120, what="130 failed jobs")
    agent.stop()  # the retried jobs then stay queued
    for i in range(3):
        admin.submit("sleep", {"tasks": 1}, name=f"waiting {i}")  # In Progress has rows too
    server = dashboard()
    p = page.page
    p.set_viewport_size({"width": 1440, "height": 900})
    sign_in_with_enter(page, server.url)
    # In Progress with its box column and a bulk confirmation, at both widths
    p.get_by_role("button", name="Pause all (3)").click()
    p.get_by_text("Pause 3 queued or running jobs in this tab (no filter)?").wait_for(timeout=15_000)
    p.screenshot(path=str(ARTIFACTS / "bulk-in-progress-1440.png"))
    p.set_viewport_size({"width": 1024, "height": 768})
    p.wait_for_timeout(600)
    p.screenshot(path=str(ARTIFACTS / "bulk-in-progress-1024.png"))
    p.get_by_role("button", name="Keep them").click()
    p.set_viewport_size({"width": 1440, "height": 900})

    open_tab(page, "Completed")
    eventually(page, lambda: "1–100 of 131" in pager(page), "a first page of 100 of the 131 finished jobs")
    retry_all = p.get_by_role("button", name="Retry all failed (130)")
    retry_all.wait_for(timeout=15_000)
    retry_all.click()
    question = p.get_by_text("Retry 130 failed jobs in this tab (no filter)?")
    question.wait_for(timeout=15_000)
    p.screenshot(path=str(ARTIFACTS / "bulk-completed-1440.png"))
    p.set_viewport_size({"width": 1024, "height": 768})
    p.wait_for_timeout(600)
    p.screenshot(path=str(ARTIFACTS / "bulk-completed-1024.png"))
    yes = p.get_by_role("button", name="Retry 130 jobs")
    b = yes.bounding_box()
    assert b is not None and b["x"] + b["width"] <= 1024, b  # the confirmation fits the narrow window
    yes.click()
    eventually(page, lambda: "retry queued for 130 of 130 jobs" in p.locator(".jm-message").first.inner_text(),
               "the bulk retry's message")
    assert all(admin.store.get_job(i).state == "queued" for i in ids)  # every one, not only the first page
    assert admin.store.get_job(done).state == "completed"
    eventually(page, lambda: "1–1 of 1" in pager(page), "only the completed job left in Completed")
    eventually(page, lambda: p.get_by_role("button", name="Retry all failed (0)").is_disabled(), "nothing to retry")


def test_keys_and_the_pick_column(home: Path, dashboard, page: Page) -> None:  # noqa: F811
    admin = JobManager(home, user="admin")
    for name in ("k0", "k1", "k2"):
        admin.submit("sleep", {"tasks": 1}, name=name)  # no agent: queued, newest (k2) first
    server = dashboard()
    p = page.page
    p.set_viewport_size({"width": 1440, "height": 900})
    sign_in_with_enter(page, server.url)
    eventually(page, lambda: "1–3 of 3" in pager(page), "three rows")

    # the box column picks rows without opening their details
    click_cell(page, 0, PICK_X)
    eventually(page, lambda: selected_label(page) == "1 selected", "one picked")
    click_cell(page, 2, PICK_X)
    eventually(page, lambda: selected_label(page) == "2 selected", "two picked")
    p.wait_for_timeout(800)
    assert not details_open(page)
    click_cell(page, 0, PICK_X)  # again: unpicked, the other stays
    eventually(page, lambda: selected_label(page) == "1 selected", "one left picked")
    b = grid(page).bounding_box()
    p.mouse.click(b["x"] + PICK_X, b["y"] + HEADER_H / 2)  # the header box: the whole page
    eventually(page, lambda: selected_label(page) == "3 selected", "the page picked")
    p.wait_for_timeout(500)
    assert not details_open(page) and "sorted by Created ↓" in pager(page)  # it neither opened nor sorted
    p.get_by_role("button", name="Cancel…").click()
    p.get_by_text(re.compile(r"Cancel job \d+ \(k2\), job \d+ \(k1\) and job \d+ \(k0\)\?")).wait_for(timeout=10_000)
    p.screenshot(path=str(ARTIFACTS / "bulk-picked-cancel-1440.png"))
    p.get_by_role("button", name="Keep running").click()
    p.get_by_role("button", name="Keep running").wait_for(state="detached", timeout=10_000)
    p.wait_for_timeout(300)  # the confirmation's line is gone: the grid moved back up
    b = grid(page).bounding_box()
    p.mouse.click(b["x"] + PICK_X, b["y"] + HEADER_H / 2)
    eventually(page, lambda: selected_label(page) == "", "the page cleared")

    # `/` focuses the search box (with a visible focus ring); Esc leaves it
    p.locator(".jm-title").first.click()
    p.keyboard.press("/")
    eventually(page, lambda: p.evaluate("document.activeElement.closest('.jm-search') !== null"), "search focused")
    ring = p.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert ring == "solid", ring
    p.keyboard.press("Escape")
    eventually(page, lambda: p.evaluate("document.activeElement.closest('.jm-search') === null"), "search left")

    # ↓ ↓ ↑ move the highlighted row; Enter opens its details; Esc closes them
    p.keyboard.press("ArrowDown")
    eventually(page, lambda: selected_label(page) == "1 selected", "the first row highlighted")
    p.keyboard.press("ArrowDown")
    p.wait_for_timeout(400)
    p.keyboard.press("Enter")
    eventually(page, lambda: details_open(page) and "k1" in p.locator(".jm-details:visible").first.inner_text(),
               "the second row's details (k1)")
    p.screenshot(path=str(ARTIFACTS / "bulk-keys-details-1440.png"))
    p.keyboard.press("Escape")
    eventually(page, lambda: not details_open(page), "details closed by Esc")
    assert selected_label(page) == "1 selected"
    p.keyboard.press("ArrowUp")
    p.wait_for_timeout(400)
    p.keyboard.press("Enter")
    eventually(page, lambda: details_open(page) and "k2" in p.locator(".jm-details:visible").first.inner_text(),
               "the first row's details (k2)")
    p.keyboard.press("Escape")
    eventually(page, lambda: not details_open(page), "closed again")
