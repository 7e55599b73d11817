"""Issue 12, items 3, 4 and 13: attacks on a real ``jobmanager dashboard`` (Voila) server.

3. One websocket frame froze the server: a v1 frame sent without negotiating the v1 subprotocol.
4. A kernel id alone (it is in URLs and was in the log) attached to a signed-in user's session.
13. Cookies without SameSite; tracebacks with server paths sent to the browser for a bad comm message;
    a NUL in a download URL and ``/logout`` answered 500; expired download links still served.

The attacks use a raw client (tests/browser/ws_client.py); the real page in Chromium must still work.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import websocket

from jobmanager.dashboard import downloads

from .conftest import DashboardServer, open_dashboard, wait_for
from .ws_client import V1, connect, load_page, message, read_v1, request, v1_frame


def _rss_mb(server: DashboardServer) -> float:
    return psutil.Process(server.proc.pid).memory_info().rss / 2**20


def _answer_time(server: DashboardServer, limit: float = 2.0) -> float:
    """Seconds the server takes to answer a plain HTTP request; fails beyond ``limit``."""
    start = time.monotonic()
    try:
        status = request(f"{server.url}voila/static/voila.js")
    except OSError as exc:
        pytest.fail(f"the server did not answer HTTP within 10 s after the frame: {exc!r}")
    took = time.monotonic() - start
    assert status == 200 and took < limit, f"HTTP answered {status} after {took:.1f} s"
    return took


def _comm_update(comm_id: str, state: object, buffers: list[bytes] | None = None) -> dict:
    data = {"method": "update", "state": state, "buffer_paths": [["value"]] if buffers else []}
    return message("comm_msg", {"comm_id": comm_id, "data": data}, buffers)


def _closed(ws: websocket.WebSocket, within: float = 10) -> int | None:
    """Read until the server closes the socket; return its close code (None: closed without a code)."""
    ws.settimeout(within)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            opcode, data = ws.recv_data(control_frame=True)
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            return None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big") if len(data) >= 2 else None
    pytest.fail("the server kept the socket open")


# --- item 3: one frame must not freeze the server --------------------------------------------------------

def test_v1_frame_without_the_subprotocol_is_refused_and_the_server_keeps_answering(start_dashboard) -> None:
    server = start_dashboard()
    session = load_page(server.url)
    before = _rss_mb(server)
    ws = connect(server.port, session.kernel_id, session.cookie)  # no subprotocol: Voila's "legacy" parser
    if not isinstance(ws, int):  # the old server accepted it; send the frame that froze it
        ws.send_binary(v1_frame(_comm_update("x", {}, [b"\0" * 16])))
        ws.close()
    time.sleep(2)
    took = _answer_time(server)
    grew = _rss_mb(server) - before
    print(f"after the frame: HTTP answered in {took * 1000:.0f} ms, RSS {grew:+.1f} MB")
    assert grew < 20, f"the server grew by {grew:.0f} MB after one frame"
    assert ws == 400, "a kernel websocket without the v1 subprotocol was accepted"


@pytest.mark.parametrize("frame", [
    pytest.param((10**12).to_bytes(8, "little") + b"\0" * 64, id="huge-part-count"),
    pytest.param((7).to_bytes(8, "little") + (10**9).to_bytes(8, "little") * 7 + b"x", id="offsets-outside"),
    pytest.param(b"\x01\x02", id="short"),
    pytest.param("{\"channel\": \"shell\"}", id="text-frame"),
])
def test_malformed_v1_frames_close_the_socket(start_dashboard, frame: bytes | str) -> None:
    server = start_dashboard()
    session = load_page(server.url)
    before = _rss_mb(server)
    ws = connect(server.port, session.kernel_id, session.cookie, [V1])
    assert not isinstance(ws, int), f"the page's own websocket was refused ({ws})"
    if isinstance(frame, bytes):
        ws.send_binary(frame)
    else:
        ws.send(frame)
    assert _closed(ws) == 1007
    took = _answer_time(server)
    grew = _rss_mb(server) - before
    print(f"after the frame: HTTP answered in {took * 1000:.0f} ms, RSS {grew:+.1f} MB")
    assert grew < 20
    assert "Closing a dashboard websocket: a malformed message" in server.output()
    assert "Traceback" not in server.output()
    # the page's kernel is fine: a new connection still gets its kernel_info_reply
    ws = connect(server.port, session.kernel_id, session.cookie, [V1])
    info = message("kernel_info_request", {})
    ws.send_binary(v1_frame(info))
    _wait_reply(ws, info, "kernel_info_reply")
    ws.close()


def test_oversized_frame_closes_the_socket_unread(start_dashboard) -> None:
    server = start_dashboard()
    session = load_page(server.url)
    before = _rss_mb(server)
    ws = connect(server.port, session.kernel_id, session.cookie, [V1])
    big = _comm_update("x", {}, [b"\0" * (2 * 1024 * 1024)])  # the cap is 1 MiB (tornado's default: 10)
    try:
        ws.send_binary(v1_frame(big))
    except (BrokenPipeError, ConnectionResetError, websocket.WebSocketConnectionClosedException):
        pass  # the server may close before the client finished writing
    else:
        assert _closed(ws) in (1009, None)
    _answer_time(server)
    assert _rss_mb(server) - before < 20


# --- item 4: a kernel id alone reaches nobody's session ----------------------------------------------------

def test_kernel_needs_the_cookie_of_the_browser_that_opened_its_page(start_dashboard) -> None:
    server = start_dashboard()
    victim = load_page(server.url)
    intruder = load_page(server.url)  # another browser: its own page, its own cookie
    assert victim.value("jobmanager-browser") != intruder.value("jobmanager-browser")
    base = f"{server.url}api/kernels/{victim.kernel_id}"
    for cookie in ("", intruder.cookie):
        assert connect(server.port, victim.kernel_id, cookie, [V1]) == 403
        assert request(base, cookie=cookie) == 403
        assert request(base, "DELETE", cookie=cookie) == 403
        form = f"_xsrf={intruder.value('_xsrf')}".encode()
        assert request(f"{server.url}voila/api/shutdown/{victim.kernel_id}", "POST", cookie=cookie, data=form,
                       headers={"Content-Type": "application/x-www-form-urlencoded"}) == 403
    # a forged cookie value (not signed by the server) does not pass either
    forged = victim.cookie.replace(victim.value("jobmanager-browser"), "A" * 43)
    assert connect(server.port, victim.kernel_id, forged, [V1]) == 403
    # the victim's own browser still reaches its kernel, and it is still alive
    assert request(base, cookie=victim.cookie) == 200
    ws = connect(server.port, victim.kernel_id, victim.cookie, [V1])
    assert not isinstance(ws, int)
    ws.close()
    assert request(f"{server.url}api/kernels/{intruder.kernel_id}", cookie=intruder.cookie) == 200
    assert request(f"{server.url}api/kernels", cookie=victim.cookie) == 404  # no kernel list
    # kernel ids (and session ids) are not in the server's log
    log = server.output()
    for kernel_id in (victim.kernel_id, intruder.kernel_id):
        assert kernel_id not in log
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", log), log


def test_real_page_still_works_with_its_cookie(start_dashboard, page, browser) -> None:
    server = start_dashboard()
    kernel_id = open_dashboard(page, server)
    pg = page.page
    pg.get_by_role("button", name="Click").click()
    pg.get_by_text("clicks: 1").wait_for(timeout=20_000)
    cookies = {c["name"]: c for c in pg.context.cookies(server.url)}
    assert {"jobmanager-browser", "_xsrf"} <= set(cookies)
    assert all(c["sameSite"] == "Strict" for c in cookies.values()), cookies
    assert all(c["httpOnly"] for name, c in cookies.items() if name != "_xsrf"), cookies
    # a second tab of the same browser gets its own kernel and works too; the first keeps working
    second = pg.context.new_page()
    second.goto(server.url, timeout=60_000)
    second.get_by_role("button", name="Click").click()
    second.get_by_text("clicks: 1").wait_for(timeout=30_000)
    pg.get_by_role("button", name="Click").click()
    pg.get_by_text("clicks: 2").wait_for(timeout=20_000)
    # another browser (a fresh context, no cookie) cannot use the first page's kernel id
    other = browser.new_context()
    try:
        status = other.request.get(f"{server.url}api/kernels/{kernel_id}").status
    finally:
        other.close()
    assert status == 403
    # the page's own shutdown beacon still works (it carries the cookie)
    second.close(run_before_unload=True)
    pg.close(run_before_unload=True)
    wait_for(lambda: server.kernel_status(kernel_id) == 404, 20, "the beacon to shut the kernel down")


# --- item 13 -------------------------------------------------------------------------------------------------

def test_every_cookie_is_samesite_strict(start_dashboard) -> None:
    server = start_dashboard()
    session = load_page(server.url)
    assert len(session.set_cookies) >= 2, session.set_cookies
    for header in session.set_cookies:
        attrs = [a.strip().lower() for a in header.split(";")]
        assert "samesite=strict" in attrs, header
        if not header.startswith("_xsrf="):  # the page's beacon script reads _xsrf
            assert "httponly" in attrs, header


def _wait_reply(ws: websocket.WebSocket, sent: dict, reply_type: str, timeout: float = 20) -> dict:
    ws.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = read_v1(ws.recv())
        if msg["parent_header"].get("msg_id") == sent["header"]["msg_id"] and msg["msg_type"] == reply_type:
            return msg
    pytest.fail(f"no {reply_type}")


def test_malformed_widget_updates_send_no_traceback(start_dashboard, tmp_path: Path) -> None:
    server = start_dashboard()
    session = load_page(server.url)
    ws = connect(server.port, session.kernel_id, session.cookie, [V1])
    assert not isinstance(ws, int)
    info = message("comm_info_request", {"target_name": "jupyter.widget"})
    ws.send_binary(v1_frame(info))
    comms = list(_wait_reply(ws, info, "comm_info_reply")["content"]["comms"])
    assert comms, "the page has widgets"
    bad = []
    for comm_id in comms:
        bad += [
            _comm_update(comm_id, {"description": 5, "value": {"x": 1}, "layout": "IPY_MODEL_nope"}),
            message("comm_msg", {"comm_id": comm_id, "data": {"method": "update"}}),  # no state
            message("comm_msg", {"comm_id": comm_id, "data": "not a dict"}),
            message("comm_msg", {"comm_id": comm_id, "data": {"method": "no-such-method"}}),
            _comm_update(comm_id, {"value": None}, [b"\xff" * 8]),
        ]
    bad.append(message("comm_open", {"comm_id": "c1", "target_name": "jupyter.widget", "data": {"state": 1}}))
    bad.append(message("comm_open", {"comm_id": "c2", "target_name": "nope", "data": {}}))
    for msg in bad:
        ws.send_binary(v1_frame(msg))
    # collect everything the kernel sends back for a while
    received = []
    ws.settimeout(1)
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        try:
            received.append(read_v1(ws.recv()))
        except websocket.WebSocketTimeoutException:
            continue
    ws.close()
    text = "\n".join(json.dumps(m["content"]) for m in received)
    assert "Traceback" not in text and 'File \\"' not in text and "site-packages" not in text, text[:3000]
    assert ".py" not in text, text[:3000]  # no source paths at all
    for m in received:
        if m["msg_type"] == "error":  # at most one line: "TypeError: ..."
            assert len(m["content"]["traceback"]) <= 1 and "\n" not in "".join(m["content"]["traceback"]), m
        if m["msg_type"] == "stream":
            assert m["content"]["text"].strip().count("\n") == 0, m["content"]["text"]
    # the server's log says what happened, one line per bad message
    wait_for(lambda: "[dashboard kernel]" in server.output(), 10, "the kernel's one-line log")
    assert "Traceback" not in server.output()
    # the page still works
    ws = connect(server.port, session.kernel_id, session.cookie, [V1])
    info = message("kernel_info_request", {})
    ws.send_binary(v1_frame(info))
    _wait_reply(ws, info, "kernel_info_reply")
    ws.close()


def test_nul_in_a_download_url_and_logout_are_not_500(start_dashboard) -> None:
    server = start_dashboard()
    token = "a" * 43
    for path in (f"voila/files/downloads/{token}/x%00y", f"voila/files/downloads/{token}/%00",
                 f"voila/files/downloads/{token}/a%0ab", "logout", "login"):
        status = request(server.url + path)
        assert status in (400, 403, 404), (path, status)
    assert "Traceback" not in server.output()
    assert "Uncaught exception" not in server.output()


def test_expired_download_is_refused_before_the_cleanup_pass(start_dashboard, tmp_path: Path) -> None:
    server = start_dashboard()
    src = tmp_path / "report.txt"
    src.write_text("secret report\n")
    # published as a dashboard kernel does (the server's downloads folder), served by the real server
    url = server.url + downloads.publish(src, "report.txt", folder=server.home / "dashboard" / "downloads")
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == b"secret report\n"
    token = url.split("/")[-2]
    folder = server.home / "dashboard" / "downloads" / token
    past = time.time() - downloads.EXPIRY_SECONDS - 5
    os.utime(folder, (past, past))
    assert request(url, "HEAD") == 404
    assert request(url) == 404
    assert not folder.exists()
    assert src.read_text() == "secret report\n"
