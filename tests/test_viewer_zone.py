"""The viewer's zone arrives over a widget comm: hostile until checked (widgets/format.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("ipywidgets")

from jobmanager.widgets import format as fmt  # noqa: E402

NOON_UTC = 1_767_268_800.0  # 2026-01-01 12:00:00 UTC


@pytest.fixture(autouse=True)
def _utc_again() -> Iterator[None]:
    yield
    fmt.set_viewer_zone("UTC")


def test_exact_times_use_the_viewers_zone_once_told() -> None:
    assert fmt.exact(NOON_UTC) == "2026-01-01 12:00:00 UTC"
    assert fmt.set_viewer_zone("Asia/Tokyo")
    assert fmt.exact(NOON_UTC) == "2026-01-01 21:00:00 JST"
    assert fmt.set_viewer_zone("America/New_York")
    assert fmt.exact(NOON_UTC, with_seconds=False) == "2026-01-01 07:00 EST"


@pytest.mark.parametrize("name", [
    "../../etc/passwd", "/etc/localtime", "Europe/../../../etc/passwd", "Not/AZone", "", "x" * 65,
    "Europe/Berlin\x00", "Europe/Berlin\n", 42, None, ["UTC"], "posixrules/../UTC",
])
def test_a_bad_zone_name_is_ignored(name: object) -> None:
    assert fmt.set_viewer_zone("Europe/Berlin")
    assert not fmt.set_viewer_zone(name)
    assert fmt.exact(NOON_UTC).endswith(" CET")  # unchanged


def test_the_app_takes_the_zone_from_its_hidden_box(tmp_path) -> None:
    from jobmanager import JobManager
    from jobmanager.widgets import JobManagerApp

    with JobManager.init(tmp_path / "home", admin_password="admin-password-1"):
        pass
    app = JobManagerApp(tmp_path / "home")
    app.browser_zone.value = "Australia/Lord_Howe"
    assert fmt.exact(NOON_UTC).endswith(" +11")  # Lord Howe in January: UTC+11
    app.browser_zone.value = "../../etc/passwd"  # a hostile comm message changes nothing
    assert fmt.exact(NOON_UTC).endswith(" +11")
