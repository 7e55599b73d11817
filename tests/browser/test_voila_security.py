"""The dashboard page: local only, and its kernel's websocket carries widget messages but not code."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from .conftest import http_status, open_dashboard, screenshot, wait_for
from .ws_client import V1, connect, load_page, message, read_v1, v1_frame


def test_page_is_self_contained(start_dashboard, page, tmp_path: Path) -> None:
    server = start_dashboard()
    open_dashboard(page, server)
    pg = page.page
    pg.get_by_role("button", name="Click").click()
    pg.get_by_text("clicks: 1").wait_for(timeout=20_000)  # the comm round trip works
    # the button's Font Awesome icon comes from the fonts Voila serves itself
    pg.wait_for_function("document.fonts.check('900 16px \"Font Awesome 5 Free\"')", timeout=20_000)
    assert pg.locator("button i.fa-check").count() == 1
    pg.wait_for_timeout(1000)  # late requests (lazy chunks, fonts)
    screenshot(page, "dashboard_page")

    foreign = [url for url in page.requests
               if not url.startswith(("data:", "blob:")) and urlsplit(url).hostname != "127.0.0.1"]
    assert not foreign, f"the page asked other hosts: {foreign}"
    assert any(u.endswith(".woff2") or u.endswith(".woff") for u in page.requests), "no font was loaded"
    csp_errors = [m for m in page.console if "Content Security Policy" in m]
    assert not csp_errors, csp_errors


def test_page_headers(start_dashboard, page) -> None:
    server = start_dashboard()
    resp = page.page.goto(server.url)
    headers = resp.all_headers()
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-content-type-options"] == "nosniff"


def test_kernel_websocket_runs_no_code(start_dashboard, tmp_path: Path) -> None:
    server = start_dashboard()
    session = load_page(server.url)  # the page's own cookie: the websocket answers its owner only
    marker = tmp_path / "pwned.txt"
    ws = connect(server.port, session.kernel_id, session.cookie, [V1])
    assert not isinstance(ws, int), f"refused: {ws}"
    try:
        code = f"open({str(marker)!r}, 'w').write('executed')"
        ws.send_binary(v1_frame(message("execute_request", {
            "code": code, "silent": False, "store_history": False, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True})))
        # the control channel is filtered the same way
        ws.send_binary(v1_frame(message("execute_request", {"code": code, "silent": True}), channel="control"))
        info = message("kernel_info_request", {})
        ws.send_binary(v1_frame(info))
        deadline = time.monotonic() + 20
        replies: list[str] = []
        while time.monotonic() < deadline:
            msg = read_v1(ws.recv())
            replies.append(msg["msg_type"])
            if msg["parent_header"].get("msg_id") == info["header"]["msg_id"] \
                    and msg["msg_type"] == "kernel_info_reply":
                break
        else:
            pytest.fail(f"no kernel_info_reply on the websocket (got {replies})")
        assert "execute_reply" not in replies and "execute_input" not in replies
    finally:
        ws.close()
    time.sleep(2)
    assert not marker.exists(), "an execute_request sent over the dashboard's websocket ran"
    assert "which is not allowed. Ignoring" in server.output()


def test_binds_loopback_only(start_dashboard) -> None:
    server = start_dashboard()
    listening = [c for c in psutil.Process(server.proc.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening, "the server listens nowhere?"
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}
    assert {c.laddr.port for c in listening} == {server.port}


def test_only_the_base_url_starts_a_kernel(start_dashboard) -> None:
    server = start_dashboard()
    for path in ("favicon.ico", "dashboard.ipynb", "anything/else", "voila/render/dashboard.ipynb"):
        assert http_status(server.url + path) == 404, path
    assert server.kernel_pids() == set()
    assert http_status(server.url) == 200
    wait_for(lambda: len(server.kernel_pids()) == 1, 20, "the page's kernel")
