"""A refresh updates the grid in place: the scroll position, the selection and the sort survive it."""

from __future__ import annotations

import time
from pathlib import Path

from jobmanager import JobManager

from .conftest import ARTIFACTS, Page
from .test_dashboard import dashboard, grid, sign_in  # noqa: F401 - the fixture is used by name


def thumb_offset(page: Page) -> float:
    return page.page.evaluate(
        """() => { const g = [...document.querySelectorAll('.lm-DataGrid')].find(e => e.offsetParent);
                   const t = g.querySelector('.lm-ScrollBar[data-orientation="vertical"] .lm-ScrollBar-thumb');
                   return t ? t.getBoundingClientRect().top - g.getBoundingClientRect().top : -1; }""")


def test_scroll_and_selection_survive_a_refresh(home: Path, dashboard, page: Page) -> None:  # noqa: F811
    admin = JobManager(home, user="admin")
    for i in range(60):
        admin.submit("sleep", {"tasks": 1}, name=f"waiting {i:02d}")
    server = dashboard()
    sign_in(page, server, "tester", "tester-password")
    box = grid(page).bounding_box()
    page.page.mouse.click(box["x"] + 150, box["y"] + 20 + 13)  # select the first row
    page.page.mouse.move(box["x"] + 300, box["y"] + 200)
    page.page.mouse.wheel(0, 700)
    time.sleep(1.0)
    before = thumb_offset(page)
    assert before > 5, "the grid did not scroll"
    page.page.locator("button[title='Refresh now']:visible").first.click()
    time.sleep(2.5)
    after = thumb_offset(page)
    page.page.screenshot(path=str(ARTIFACTS / "refresh-in-place.png"), full_page=True)
    assert abs(after - before) < 2, (before, after)
    assert page.page.get_by_text("1 selected").count() == 1
    assert page.page.get_by_text("sorted by Created ↓").first.is_visible()
