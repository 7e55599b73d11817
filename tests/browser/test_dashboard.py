"""The real dashboard in a real Chromium against a real Voila server and real agents.

Sign in, see each tab with its rows, sort and filter, pause and resume, retry a failed
task and watch it succeed, download a log and a PDF, run a schedule now, see a killed
agent turn lost, and find no way to retry as a user without the permission.
Screenshots of each tab land in test-artifacts/.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jobmanager import JobManager

from ..conftest import wait_for as wait_until
from .conftest import ARTIFACTS, DashboardServer, Page, free_port, http_status

DOCS = Path(__file__).resolve().parents[2] / "jobmanager" / "demo_documents"
ROW_H, HEADER_H = 26, 20


@pytest.fixture
def dashboard(home: Path, tmp_path: Path) -> Iterator[Callable[[], DashboardServer]]:
    """``jobmanager dashboard`` serving the real notebooks/dashboard.ipynb."""
    servers: list[DashboardServer] = []

    def start() -> DashboardServer:
        port = free_port()
        log = tmp_path / f"dashboard-{port}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobmanager", "--home", str(home), "dashboard", "--port", str(port),
             "--no-browser"], stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        server = DashboardServer(home, port, proc, log)
        servers.append(server)
        wait_until(lambda: proc.poll() is None and _answers(server), timeout=60, what="dashboard answering")
        return server

    yield start
    for server in servers:
        server.stop()


def _answers(server: DashboardServer) -> bool:
    try:
        return http_status(f"{server.url}voila/files/ping") == 403
    except OSError:
        return False


def sign_in(page: Page, server: DashboardServer, user: str, password: str) -> None:
    p = page.page
    p.goto(server.url, timeout=90_000)
    p.get_by_placeholder("username").wait_for(timeout=90_000)
    p.get_by_placeholder("username").fill(user)
    p.get_by_placeholder("password").fill(password)
    p.get_by_role("button", name="Sign in").click()
    p.get_by_text("sorted by").first.wait_for(timeout=60_000)


def open_tab(page: Page, name: str) -> None:
    page.page.locator(".lm-TabBar-tab", has_text=name).click()
    time.sleep(0.8)


def grid(page: Page):
    return page.page.locator(".lm-DataGrid:visible").first


def click_row(page: Page, row: int, x: float = 150) -> None:
    box = grid(page).bounding_box()
    page.page.mouse.click(box["x"] + x, box["y"] + HEADER_H + row * ROW_H + ROW_H / 2)


def details_text(page: Page) -> str:
    return page.page.locator(".jm-details:visible").first.inner_text()


def eventually(page: Page, check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # the element is being redrawn
            pass
        time.sleep(0.3)
    page.page.screenshot(path=str(ARTIFACTS / f"failed-{what.replace(' ', '-')}.png"), full_page=True)
    raise AssertionError(f"timed out waiting for {what}")


def test_operator_day(home: Path, start_agent, dashboard, page: Page, browser) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    admin = JobManager(home, user="admin")
    admin.add_user("viewer", "viewer-password", groups=["analysts"])
    victim = start_agent("doomed", 1)
    start_agent("a1", 2)
    flaky = admin.submit("sleep", {"tasks": 3, "fail_tasks": [2], "fail_attempts": 1}, name="Flaky import")
    import shutil

    docs = shutil.copytree(DOCS, home.parent / "docs")  # inputs come from the allowed folders only
    pdf = admin.submit("print_to_pdf", {"documents": [str(docs / "welcome.txt"), str(docs / "release-notes.md")]},
                       name="Welcome pack")
    admin.wait(flaky, timeout=60)
    admin.wait(pdf, timeout=60)
    long_job = admin.submit("sleep", {"tasks": 40, "seconds": 30, "steps": 30}, name="Quarterly archive",
                            priority=-1)  # leaves room for the retry later
    admin.schedule("nightly", "sleep", {"tasks": 1}, cron="0 2 * * *", tz="Europe/Berlin")
    server = dashboard()
    p = page.page

    # -- sign in; each tab with its count ------------------------------------------------------
    sign_in(page, server, "tester", "tester-password")
    eventually(page, lambda: p.get_by_text("In Progress (1)").count() > 0, "In Progress count")
    assert p.get_by_text("Completed (2)").count() and p.get_by_text("Scheduled (1)").count()
    p.screenshot(path=str(ARTIFACTS / "dashboard-in-progress.png"), full_page=True)

    # -- pause and resume the running job from its details ------------------------------------------
    click_row(page, 0)
    eventually(page, lambda: "Quarterly archive" in details_text(page), "details of the running job")
    p.get_by_role("button", name="Pause").first.click()  # not "Pause all matching (N)"
    eventually(page, lambda: admin.job(long_job).state == "paused", "job paused")
    p.get_by_role("button", name="Resume").first.click()
    eventually(page, lambda: admin.job(long_job).state == "running", "job resumed")
    eventually(page, lambda: "resume done for 1 job" in p.locator(".jm-message").first.inner_text(), "message")

    # -- Completed: filter, sort, retry a failed task and watch it succeed ---------------------------------
    open_tab(page, "Completed")
    search = p.locator("input[placeholder='search name or error…']:visible")
    search.fill("Flaky")
    p.keyboard.press("Enter")
    eventually(page, lambda: "1–1 of 1" in p.locator(".jm-pager:visible").first.inner_text(), "filtered to one job")
    assert p.get_by_text("Completed (2)").count()  # the tab's title counts the tab, not the filtered view
    search.fill("")
    p.keyboard.press("Enter")
    eventually(page, lambda: "1–2 of 2" in p.locator(".jm-pager:visible").first.inner_text(), "filter cleared")
    box = grid(page).bounding_box()
    p.mouse.click(box["x"] + 44 + 60 + 210 - 8, box["y"] + 10)  # the Name column's menu (after the box column)
    p.get_by_text("Sort Ascending").click()
    eventually(page, lambda: "sorted by Name ↑" in p.get_by_text("sorted by").last.inner_text(), "sorted by name")
    click_row(page, 0)  # "Flaky import" < "Welcome pack"
    eventually(page, lambda: "Flaky import" in details_text(page), "details of the flaky job")
    assert "failed on purpose" in details_text(page)
    p.screenshot(path=str(ARTIFACTS / "dashboard-completed.png"), full_page=True)
    details = p.locator(".jm-details:visible").first
    details.get_by_role("button", name="Retry failed tasks").click()
    eventually(page, lambda: admin.job(flaky).state == "completed", "retried job completed", timeout=60)
    eventually(page, lambda: "completed ·" in details_text(page) or "· completed" in details_text(page)
               or "3 ok / 0 failed" in details_text(page), "details show the retried job completed", timeout=30)

    # -- downloads: the log and the PDF ----------------------------------------------------------------------
    details.get_by_role("button", name="Download log").click()
    link = p.locator(f"a[data-jm-download='job-{flaky}.log']")
    link.wait_for(timeout=30_000)
    with p.expect_download() as info:
        link.click()
    saved = Path(info.value.path())
    assert info.value.suggested_filename == f"job-{flaky}.log"
    assert "task 2: sleeping" in saved.read_text() and saved.read_text() == admin.log(flaky)
    click_row(page, 1)
    eventually(page, lambda: "Welcome pack" in details_text(page), "details of the PDF job")
    with p.expect_download() as info:
        p.locator("a[data-jm-download='merged.pdf']").click()
    assert info.value.suggested_filename == "merged.pdf"
    from pypdf import PdfReader

    reader = PdfReader(info.value.path())
    assert len(reader.pages) >= 3 and "welcome" in " ".join(pg.extract_text() for pg in reader.pages).lower()

    # -- Scheduled: run now ----------------------------------------------------------------------------------------
    open_tab(page, "Scheduled")
    click_row(page, 0)
    eventually(page, lambda: "At 02:00 (Europe/Berlin)" in p.locator(".jm-details:visible").first.inner_text(),
               "schedule details")
    p.get_by_role("button", name="Run now").first.click()
    eventually(page, lambda: "schedule nightly: job" in p.locator(".jm-message").first.inner_text(), "run now")
    assert any(j.name == "nightly" for j in admin.store.list_jobs())
    p.screenshot(path=str(ARTIFACTS / "dashboard-scheduled.png"), full_page=True)

    # -- Agents: a killed agent turns lost -----------------------------------------------------------------------
    open_tab(page, "Agents")
    victim.kill()
    eventually(page, lambda: "lost" in p.locator(".jm-table:visible").first.inner_text(), "agent lost", timeout=40)
    # the header's count is drawn after the table, in the same refresh: a moment later in the browser
    eventually(page, lambda: p.get_by_text("1 lost").count() > 0, "the header's lost count", timeout=10)
    p.screenshot(path=str(ARTIFACTS / "dashboard-agents.png"), full_page=True)

    # -- a user without retry permission finds no way to retry -----------------------------------------------------
    other = browser.new_context(viewport={"width": 1366, "height": 768})
    try:
        viewer = Page(other.new_page(), [], [])
        sign_in(viewer, server, "viewer", "viewer-password")
        assert viewer.page.locator(".lm-TabBar-tab", has_text="Agents").count() == 0
        open_tab(viewer, "Completed")
        retry = viewer.page.get_by_role("button", name="Retry failed tasks").first
        assert retry.is_disabled() and retry.get_attribute("title") == "needs the retry_tasks permission"
        viewer.page.screenshot(path=str(ARTIFACTS / "dashboard-viewer.png"), full_page=True)
    finally:
        other.close()
    outside = [u for u in page.requests if not u.startswith(("http://127.0.0.1", "data:", "blob:"))]
    assert outside == []
