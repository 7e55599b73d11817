"""A raw client of the dashboard server without a browser: load the page over HTTP, talk to its kernel's
websocket in the v1 protocol (what Voila's page speaks), and craft the frames an attacker would send."""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import websocket
from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1, serialize_msg_to_ws_v1

V1 = "v1.kernel.websocket.jupyter.org"


@dataclass
class PageSession:
    """One browser's view of the page: its kernel id and its cookies."""

    kernel_id: str
    jar: http.cookiejar.CookieJar
    set_cookies: list[str]
    html: str

    @property
    def cookie(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.jar)

    def value(self, name: str) -> str:
        return next(c.value or "" for c in self.jar if c.name == name)


def load_page(base_url: str, timeout: float = 90) -> PageSession:
    """GET the dashboard page as a fresh browser would (its own cookie jar); wait until it is fully rendered."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(base_url, timeout=timeout) as resp:
        set_cookies = resp.headers.get_all("Set-Cookie") or []
        html = resp.read().decode()
    match = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.S)
    assert match, html[:2000]
    return PageSession(json.loads(match.group(1))["kernelId"], jar, set_cookies, html)


def request(url: str, method: str = "GET", cookie: str = "", data: bytes | None = None,
            headers: dict[str, str] | None = None) -> int:
    """The HTTP status of one request (no cookie jar: exactly the Cookie header given)."""
    all_headers = {**({"Cookie": cookie} if cookie else {}), **(headers or {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=all_headers),
                                    timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def connect(port: int, kernel_id: str, cookie: str = "", protocols: list[str] | None = None,
            timeout: float = 20) -> websocket.WebSocket | int:
    """Open the kernel websocket; the HTTP status instead when the server refuses the handshake."""
    url = f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4()}"
    kwargs: dict[str, Any] = {"origin": f"http://127.0.0.1:{port}", "timeout": timeout}
    if cookie:
        kwargs["cookie"] = cookie
    if protocols:
        kwargs["subprotocols"] = protocols
    try:
        return websocket.create_connection(url, **kwargs)
    except websocket.WebSocketBadStatusException as exc:
        return exc.status_code


def message(msg_type: str, content: dict, buffers: list[bytes] | None = None) -> dict:
    return {
        "header": {"msg_id": uuid.uuid4().hex, "username": "intruder", "session": uuid.uuid4().hex,
                   "msg_type": msg_type, "version": "5.3", "date": datetime.now(UTC).isoformat()},
        "parent_header": {}, "metadata": {}, "content": content, "buffers": buffers or [],
    }


def v1_frame(msg: dict, channel: str = "shell") -> bytes:
    """``msg`` as the v1 binary frame Voila's page sends (buffers appended as extra parts)."""
    parts = [json.dumps(msg[k]).encode() for k in ("header", "parent_header", "metadata", "content")]
    return serialize_msg_to_ws_v1([*parts, *msg.get("buffers", [])], channel)


def read_v1(frame: bytes) -> dict:
    """One v1 frame from the server as a dict (channel, msg_type, header, parent_header, content, raw)."""
    channel, parts = deserialize_msg_from_ws_v1(frame)
    header = json.loads(parts[0])
    return {"channel": channel, "msg_type": header["msg_type"], "header": header,
            "parent_header": json.loads(parts[1]), "content": json.loads(parts[3]), "raw": frame}

