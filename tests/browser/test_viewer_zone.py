"""Exact times on hover read in the viewer's own time zone: the dashboard page tells the app the
browser's zone (Intl), and the kernel checks the name before it uses it (issue 16)."""

from __future__ import annotations

from pathlib import Path

from jobmanager import JobManager

from .conftest import Page
from .test_dashboard import click_row, dashboard, eventually, open_tab, sign_in  # noqa: F401  (fixture)


def test_next_run_hover_is_in_the_browsers_zone(home: Path, dashboard, browser) -> None:  # noqa: F811
    admin = JobManager(home, user="admin")
    admin.schedule("nightly", "sleep", {"tasks": 1}, cron="0 2 * * *", tz="Europe/Berlin")
    server = dashboard()
    context = browser.new_context(viewport={"width": 1440, "height": 900}, timezone_id="Asia/Tokyo")
    try:
        page = Page(context.new_page(), [], [])
        sign_in(page, server, "tester", "tester-password")
        open_tab(page, "Scheduled")
        click_row(page, 0)
        hover = page.page.locator(".jm-details:visible span[title]", has_text="in ")
        eventually(page, lambda: hover.count() > 0 and hover.first.get_attribute("title").endswith(" JST"),
                   "next run's exact time in the browser's zone (JST)")
        title = hover.first.get_attribute("title")
        # 02:00 in Berlin is 10:00 in Tokyo (9 h ahead in winter, 7 h in summer)
        assert title[11:16] in ("10:00", "09:00"), title
    finally:
        context.close()
