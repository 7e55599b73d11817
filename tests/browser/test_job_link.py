"""A link per job (issue 17): the page's URL carries the open tab, job and filters.

The real dashboard in Chromium: a pasted link opens that job (in its tab, with the link's filters) right
after sign-in; clicking around rewrites the address bar; a hostile link is ignored with one notice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from jobmanager import JobManager

from .conftest import ARTIFACTS, Page
from .test_dashboard import click_row, dashboard, eventually  # noqa: F401 - fixture by name


def sign_in_with_enter(page: Page, url: str) -> None:
    """Sign in as tester (Enter); the page may open on any tab, so wait for the visible one's pager."""
    p = page.page
    p.goto(url, timeout=90_000)
    p.get_by_placeholder("username").wait_for(timeout=90_000)
    p.get_by_placeholder("username").fill("tester")
    p.get_by_placeholder("password").fill("tester-password")
    p.get_by_placeholder("password").press("Enter")
    p.locator(".jm-pager:visible").first.wait_for(timeout=60_000)


def href(p: Any) -> str:
    """The address bar now (``page.url`` lags: it changes only when Playwright gets to dispatch events)."""
    return str(p.evaluate("location.href"))


def selected_tab(page: Page) -> str:
    return page.page.locator(".lm-TabBar-tab.lm-mod-current").first.inner_text()


def test_a_pasted_link_opens_that_job_after_sign_in(home: Path, dashboard, page: Page) -> None:  # noqa: F811
    with JobManager(home, user="admin") as admin:
        admin.submit("sleep", {"tasks": 1}, name="still queued")
        admin.demo_data(jobs=60, days=1, seed=3)
        df, _ = admin.grid(tab="completed", state="completed_with_errors", page_size=5)
    target = df.iloc[-1]
    job_id, name = int(target["id"]), str(target["name"])
    server = dashboard()
    p = page.page
    p.set_viewport_size({"width": 1440, "height": 900})

    # a colleague's link: Completed, jobs completed with errors whose name matches, job <id> open
    link = f"#tab=completed&job={job_id}&state=completed_with_errors&search={quote(name)}"
    sign_in_with_enter(page, server.url + link)
    details = p.locator(".jm-details:visible").first
    eventually(page, lambda: f"#{job_id}" in details.inner_text(), "the linked job's details", timeout=30)
    assert name in details.inner_text()
    assert selected_tab(page).startswith("Completed")
    assert p.get_by_placeholder("search name or error…").last.input_value() == name
    assert p.locator(".jm-message-error").count() == 0
    p.screenshot(path=str(ARTIFACTS / "job-link-opened.png"))

    # clicking around rewrites the link: close the details, open the In Progress tab, click its job
    details.get_by_role("button").filter(has=p.locator(".fa-times")).click()
    eventually(page, lambda: "job=" not in href(p), "the link to drop the closed job")
    assert "tab=completed" in href(p) and "state=completed_with_errors" in href(p)
    p.locator(".lm-TabBar-tab", has_text="In Progress").click()
    eventually(page, lambda: "tab=" not in href(p), "the link to follow the tab")
    click_row(page, 0)
    eventually(page, lambda: "job=" in href(p), "the link to carry the clicked job")
    shared = href(p)

    # the rewritten link, pasted into a fresh browser, opens the same job
    other = p.context.browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    try:
        fresh = Page(other, [], [])
        sign_in_with_enter(fresh, shared)
        opened = other.locator(".jm-details:visible").first
        eventually(fresh, lambda: "still queued" in opened.inner_text(), "the shared link's job", timeout=30)
    finally:
        other.context.close()


def test_a_hostile_link_is_ignored_with_a_notice(home: Path, dashboard, page: Page) -> None:  # noqa: F811
    with JobManager(home, user="admin") as admin:
        admin.submit("sleep", {"tasks": 1}, name="a job")
    server = dashboard()
    p = page.page
    evil = ("job=999999&tab=..%2F..%2Fetc&state=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E&search=%00&"
            "sort=rm%20-rf&job=2")
    dialogs: list[str] = []
    p.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in_with_enter(page, f"{server.url}#{evil}")
    notice = p.locator(".jm-message").first
    notice.wait_for(timeout=30_000)
    text = notice.inner_text()
    assert text.startswith("Ignored from the link:"), text
    for part in ("tab '../../etc'", "a second 'job'", "'sort'", "search filter", "job 999999"):
        assert part in text, (part, text)
    assert p.locator(".jm-details:visible").count() == 0  # nothing opened
    assert selected_tab(page).startswith("In Progress")
    assert p.locator("img[src=x]").count() == 0 and not dialogs  # the text stayed text
    p.screenshot(path=str(ARTIFACTS / "job-link-hostile.png"))
