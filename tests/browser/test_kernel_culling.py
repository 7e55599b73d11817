"""Every page view starts a kernel; the kernel goes away when no browser is connected to it any more."""

from __future__ import annotations

import time

from .conftest import open_dashboard, wait_for

CULL_AFTER = 4.0  # the test server's --cull-after (the default is 60 s); the culler runs every second


def test_kernel_of_a_closed_page_is_culled(start_dashboard, page) -> None:
    # tick=True: the kernel sends a comm message every second, so Jupyter's idle culler alone would never
    # see it idle; the server must cull it because nobody is connected.
    server = start_dashboard(tick=True, cull_after=CULL_AFTER)
    kernel_id = open_dashboard(page, server)
    page.page.get_by_text("tick 2").wait_for(timeout=20_000)
    assert len(server.kernel_pids()) == 1
    model = server.kernel_model(kernel_id)
    assert model["connections"] >= 1
    # closing without beforeunload is a killed browser or a lost network: Voila's shutdown beacon never comes
    page.page.close(run_before_unload=False)
    took = wait_for(lambda: server.kernel_status(kernel_id) == 404, CULL_AFTER + 20, "the kernel to be culled")
    wait_for(lambda: not server.kernel_pids(), 15, "the kernel process to exit")
    assert took >= CULL_AFTER - 1, f"culled after {took:.1f} s, before the {CULL_AFTER} s grace"
    print(f"kernel culled {took:.1f} s after the page closed (cull-after {CULL_AFTER} s)")


def test_kernel_of_an_open_page_is_kept(start_dashboard, page) -> None:
    server = start_dashboard(cull_after=CULL_AFTER)
    kernel_id = open_dashboard(page, server)
    time.sleep(CULL_AFTER * 2.5)  # idle, but connected
    assert server.kernel_status(kernel_id) == 200
    page.page.get_by_role("button", name="Click").click()
    page.page.get_by_text("clicks: 1").wait_for(timeout=20_000)


def test_beforeunload_shuts_the_kernel_down_at_once(start_dashboard, page) -> None:
    server = start_dashboard(cull_after=60)
    kernel_id = open_dashboard(page, server)
    page.page.close(run_before_unload=True)  # a normal tab close: Voila's page sends its shutdown beacon
    took = wait_for(lambda: server.kernel_status(kernel_id) == 404, 20, "the kernel to be shut down")
    print(f"kernel shut down {took:.1f} s after a normal page close")
