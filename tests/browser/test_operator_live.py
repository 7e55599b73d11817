"""What an operator who keeps the dashboard open all day relies on (issue 17, "Broken").

Each test drives the real dashboard (notebooks/dashboard.ipynb under ``jobmanager dashboard``) in Chromium:
Enter signs in; a header click sorts and selects nothing; tab counts are the tab's totals and follow an
action at once; the page says it is disconnected within 10 s of the server dying; the browser tab is
titled Job Manager.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import psutil

from jobmanager import JobManager

from .conftest import ARTIFACTS, Page
from .test_dashboard import HEADER_H, ROW_H, dashboard, eventually, grid, open_tab  # noqa: F401 - fixture by name


def sign_in_with_enter(page: Page, url: str, user: str = "tester", password: str = "tester-password") -> None:
    p = page.page
    p.goto(url, timeout=90_000)
    p.get_by_placeholder("username").wait_for(timeout=90_000)
    p.get_by_placeholder("username").fill(user)
    p.get_by_placeholder("password").fill(password)
    p.get_by_placeholder("password").press("Enter")  # no click on "Sign in"
    p.get_by_text("sorted by").first.wait_for(timeout=60_000)


def pager(page: Page) -> str:
    return page.page.locator(".jm-pager:visible").first.inner_text()


def tab_titles(page: Page) -> list[str]:
    return [t.strip() for t in page.page.locator(".lm-TabBar-tab").all_inner_texts()]


def test_enter_signs_in_and_the_tab_is_titled_job_manager(home: Path, dashboard, page: Page) -> None:  # noqa: F811
    server = dashboard()
    sign_in_with_enter(page, server.url)
    assert page.page.title() == "Job Manager"
    # a wrong password with Enter: the error line, still on the sign-in form
    other = page.page.context.new_page()
    try:
        other.goto(server.url, timeout=90_000)
        other.get_by_placeholder("username").wait_for(timeout=90_000)
        other.get_by_placeholder("username").fill("tester")
        other.get_by_placeholder("password").fill("wrong")
        other.get_by_placeholder("password").press("Enter")
        other.locator(".jm-message-error").wait_for(timeout=30_000)
        assert other.get_by_placeholder("username").is_visible()
    finally:
        other.close()


def test_enter_saves_the_schedule_form(home: Path, dashboard, page: Page) -> None:  # noqa: F811
    admin = JobManager(home, user="admin")
    server = dashboard()
    sign_in_with_enter(page, server.url)
    p = page.page
    open_tab(page, "Scheduled")
    p.get_by_role("button", name="New").first.click()
    form = p.locator(".jm-details:visible").filter(has_text="Schedule").first
    form.locator("input").first.fill("typed then Enter")
    trigger = form.get_by_placeholder("0 2 * * 1-5  |  15m  |  2026-12-01T09:00")
    trigger.fill("0 3 * * *")
    trigger.press("Enter")
    eventually(page, lambda: "typed then Enter" in set(admin.schedules().name), "schedule saved by Enter")
    eventually(page, lambda: "Scheduled (1)" in tab_titles(page), "the Scheduled count")


def test_header_click_sorts_and_selects_nothing(home: Path, dashboard, page: Page) -> None:  # noqa: F811
    admin = JobManager(home, user="admin")
    for name in ("bravo", "alpha", "charlie"):
        admin.submit("sleep", {"tasks": 1}, name=name)  # no agent: they stay queued, In Progress
    server = dashboard()
    sign_in_with_enter(page, server.url)
    p = page.page
    box = grid(page).bounding_box()
    name_header = (box["x"] + 60 + 60, box["y"] + HEADER_H / 2)  # Job is 60 px wide; the middle of Name

    p.mouse.click(*name_header)
    eventually(page, lambda: "sorted by Name ↑" in pager(page), "sorted A→Z")
    details = p.locator(".jm-details:visible")
    assert not any(n in " ".join(details.all_inner_texts()) for n in ("alpha", "bravo", "charlie")), "details opened"
    assert p.get_by_text(re.compile(r"^\d+ selected$")).count() == 0
    # the first row is now "alpha": a click on it opens alpha's details (and only then is a job selected)
    p.mouse.click(box["x"] + 150, box["y"] + HEADER_H + ROW_H / 2)
    eventually(page, lambda: "alpha" in p.locator(".jm-details:visible").first.inner_text(), "alpha's details")
    # a second header click: descending, the arrow turns, the selection stays one job
    p.mouse.click(*name_header)
    eventually(page, lambda: "sorted by Name ↓" in pager(page), "sorted Z→A")
    eventually(page, lambda: p.get_by_text("1 selected").count() == 1, "still the one job selected")
    assert p.get_by_text("3 selected").count() == 0
    p.get_by_role("button", name="Cancel…").click()
    confirm = p.get_by_role("button", name=re.compile(r"^Cancel \d+ jobs?$"))
    confirm.wait_for(timeout=15_000)
    assert confirm.inner_text().strip() == "Cancel 1 job"  # not "Cancel 3 jobs"
    p.get_by_role("button", name="Keep running").click()


def test_tab_counts_are_totals_and_follow_actions(home: Path, dashboard, start_agent, page: Page) -> None:  # noqa: F811
    admin = JobManager(home, user="admin")
    agent = start_agent("a1", 2)
    ids = [admin.submit("sleep", {"tasks": 2, "fail_tasks": [2]}, name=f"flaky {i}") for i in range(4)]
    for job_id in ids:
        admin.wait(job_id, timeout=60)
    agent.stop()  # the retried jobs then stay queued: the counts must move because of the action alone
    admin.schedule("to delete", "sleep", {"tasks": 1}, cron="0 2 * * *", tz="UTC")
    server = dashboard()
    sign_in_with_enter(page, server.url)
    p = page.page
    eventually(page, lambda: "Completed (4)" in tab_titles(page), "Completed (4)")
    open_tab(page, "Completed")
    search = p.locator("input[placeholder='search name or error…']:visible")
    search.fill("flaky 1")
    search.press("Enter")
    eventually(page, lambda: "1–1 of 1" in pager(page), "filtered to one")
    assert "Completed (4)" in tab_titles(page)  # the tab's total, not the filtered view
    search.fill("")
    search.press("Enter")
    eventually(page, lambda: "1–4 of 4" in pager(page), "filter cleared")
    # select every row (click, shift-click) and retry: the counts move at once (the next full refresh
    # of every tab is 15 s away, so only the action's own recount can move them within 3 s)
    box = grid(page).bounding_box()
    p.mouse.click(box["x"] + 150, box["y"] + HEADER_H + ROW_H / 2)
    p.keyboard.down("Shift")
    p.mouse.click(box["x"] + 150, box["y"] + HEADER_H + 3 * ROW_H + ROW_H / 2)
    p.keyboard.up("Shift")
    eventually(page, lambda: p.get_by_text("4 selected").count() == 1, "4 selected")
    p.get_by_role("button", name="Retry failed tasks").first.click()
    eventually(page, lambda: "retry queued for 4 jobs" in p.locator(".jm-message").first.inner_text(), "retried")
    assert all(admin.job(i).state == "queued" for i in ids)
    eventually(page, lambda: {"In Progress (4)", "Completed (0)"} <= set(tab_titles(page)),
               "In Progress (4), Completed (0) right after the retry", timeout=3)
    # a deleted schedule leaves the count at once
    open_tab(page, "Scheduled")
    p.mouse.click(grid(page).bounding_box()["x"] + 100, grid(page).bounding_box()["y"] + HEADER_H + ROW_H / 2)
    p.get_by_role("button", name="Delete…").first.click()
    p.get_by_role("button", name="Delete to delete").click()
    eventually(page, lambda: "Scheduled (0)" in tab_titles(page), "Scheduled (0) after the delete", timeout=5)


def test_server_gone_shows_disconnected_within_10_s(home: Path, dashboard, page: Page) -> None:  # noqa: F811
    admin = JobManager(home, user="admin")
    admin.submit("sleep", {"tasks": 1}, name="waiting")
    server = dashboard()
    sign_in_with_enter(page, server.url)
    p = page.page
    banner = p.locator("#jm-offline")
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        assert not banner.is_visible(), "disconnected while the server is up"
        p.wait_for_timeout(500)
    # the server and its kernels die (SIGKILL: no goodbye on the websocket)
    kernels = server.kernel_pids()
    os.killpg(server.proc.pid, signal.SIGKILL)
    for pid in kernels:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    killed = time.monotonic()
    banner.wait_for(state="visible", timeout=10_000)
    took = time.monotonic() - killed
    assert took < 10, took
    text = banner.inner_text()
    assert "Disconnected" in text and "not updating" in text
    first = int(re.search(r"from (\d+) s ago", text).group(1))
    eventually(page, lambda: int(re.search(r"from (\d+) s ago", banner.inner_text()).group(1)) >= first + 2,
               "the data's age counting up in the browser", timeout=10)
    app = p.locator(".jm-app").first
    assert app.evaluate("e => getComputedStyle(e).pointerEvents") == "none"  # controls are inert and greyed
    assert float(app.evaluate("e => getComputedStyle(e).opacity")) < 0.6
    assert p.get_by_role("button", name="Reload").is_visible()
    p.screenshot(path=str(ARTIFACTS / "disconnected.png"), full_page=True)
