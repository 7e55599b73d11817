"""The standalone Voila server of ``jobmanager dashboard``, hardened; run as ``python -m jobmanager.dashboard.voila``.

This module imports Voila; :mod:`jobmanager.dashboard.server` (which the CLI imports) does not, and starts
this one with the settings it computed. What it changes in Voila 0.5.13's standalone app:

* Kernels of closed pages go away. Voila's page asks the server to shut its kernel down from a
  ``beforeunload`` beacon, which never comes when the browser crashes, is killed or loses the network.
  Jupyter's idle culler does not help either: a dashboard that refreshes itself sends ``comm_msg`` on
  IOPub, which counts as activity, so the kernel never looks idle. :class:`DashboardKernelManager` also
  shuts a kernel down once it has had no websocket connection for ``cull_disconnected_timeout`` seconds.
* Only the page at the base URL renders the notebook (Voila maps every path to it, each request starting
  a kernel), and at most ``max_kernels`` kernels run at once. The page sets the ``_xsrf`` cookie its
  shutdown beacon needs (see :class:`PageHandler`); ``?template=`` cannot swap the template.
* ``/voila/files/`` serves downloads as attachments (no HTML of a job's output rendered in the
  dashboard's origin), uncached, with the file name in ``Content-Disposition``.
* ``voila.py``/``voila.json`` in the working directory are not read (only Jupyter's config dirs).
* Each kernel belongs to the browser whose page started it. The page sets :data:`BROWSER_COOKIE` (a
  signed random token, HttpOnly, SameSite=Strict; one per browser, so tabs share it) and the kernel
  manager records the token of the page that started each kernel. The kernel websocket, ``/api/kernels/<id>``
  and the shutdown beacon answer 403 without the owner's cookie: a kernel id alone (it shows in URLs)
  no longer reaches anyone's session. Kernel and session ids are blanked out of the server log.
* The kernel websocket speaks only the ``v1.kernel.websocket.jupyter.org`` subprotocol (the page's own),
  every frame is checked before jupyter_server parses it, and frames above
  :data:`~jobmanager.dashboard.server.MAX_MESSAGE_BYTES` close the socket. Voila 0.5.13 read a v1 frame
  sent without the subprotocol as the legacy format: its first bytes became a part count of ~10^8, and
  one frame froze the server while its memory grew by GBs.
* Cookies are SameSite=Strict (``_xsrf`` stays readable by the page's beacon script; the rest are
  HttpOnly); ``/login`` and ``/logout`` (Jupyter's, unused: the sign-in is in the app) are gone.
* Every kernel loads :mod:`jobmanager.dashboard.kernel`: errors from the browser's widget messages reach
  the browser as one line at most, never a traceback with the server's paths.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import os
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import tornado.web
from jupyter_core.paths import jupyter_config_path
from jupyter_server.services.kernels.handlers import KernelHandler
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets import Float, Int, Unicode, default
from voila.app import Voila
from voila.shutdown_kernel_handler import VoilaShutdownKernelHandler
from voila.static_file_handler import AllowListFileHandler
from voila.tornado.handler import TornadoVoilaHandler
from voila.tornado.kernel_websocket_handler import VoilaKernelWebsocketHandler

from jobmanager.dashboard import downloads
from jobmanager.dashboard.server import MAX_MESSAGE_BYTES, SECURITY_HEADERS, TEMPLATE

#: the cookie that ties kernels to the browser whose page started them (a signed random token)
BROWSER_COOKIE = "jobmanager-browser"
#: the only kernel websocket subprotocol accepted (the one Voila's page asks for)
WS_PROTOCOL = "v1.kernel.websocket.jupyter.org"
#: at most this many buffers in one message from the browser (widget updates carry a handful)
MAX_BUFFERS = 64
#: seconds a kernel whose page has not connected yet is kept at least (kernel start, rendering, page load)
FIRST_CONNECT_GRACE = 30.0
#: the browser token of the page being served, read by the kernel manager when the page starts a kernel
_page_browser: contextvars.ContextVar[str | None] = contextvars.ContextVar("jobmanager_page_browser", default=None)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


def _redacted(match: re.Match[str]) -> str:
    return "id:" + hashlib.sha256(match.group(0).lower().encode()).hexdigest()[:8]


class RedactIds(logging.Filter):
    """Replace kernel and session ids (UUIDs) in log records by a short hash: same id, same hash.

    A kernel id was enough to take over its page's session; the cookie check makes it worthless alone,
    and the log no longer hands it out either.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record: leave it to the handler
            return True
        if _UUID.search(message):
            record.msg = _UUID.sub(_redacted, message)
            record.args = None
        return True


def redact_logs() -> None:
    """Put :class:`RedactIds` on every log handler of the process (and the last-resort handler)."""
    loggers = [logging.getLogger(), *(lg for lg in logging.root.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    handlers = {h for lg in loggers for h in lg.handlers}
    if logging.lastResort is not None:
        handlers.add(logging.lastResort)
    for handler in handlers:
        if not any(isinstance(f, RedactIds) for f in handler.filters):
            handler.addFilter(RedactIds())


class DashboardKernelManager(AsyncMappingKernelManager):
    """Jupyter's kernel manager, plus culling of kernels no browser is connected to.

    Not for Voila's ``preheat_kernel``: pooled kernels have no connection and would be culled.
    """

    cull_disconnected_timeout = Float(
        60.0, config=True,
        help="Shut a kernel down after this many seconds without any websocket connection (0: never).")
    max_kernels = Int(32, config=True, help="Refuse to start more kernels than this (0: no limit).")
    downloads_dir = Unicode("", config=True, help="Delete expired download tokens here at every culling pass.")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # kernel id -> time.monotonic() since when it has had no connection
        self._unconnected_since: dict[str, float] = {}
        self._ever_connected: set[str] = set()
        # kernel id -> the browser token of the page that started it
        self._owners: dict[str, str] = {}

    # jupyter_server types AsyncMappingKernelManager.start_kernel as sync (def (*Any, **Any) -> str); it is a coroutine
    async def start_kernel(self, *args: Any, **kwargs: Any) -> str:  # type: ignore[override]
        if self.max_kernels and len(self._kernels) >= self.max_kernels:
            raise tornado.web.HTTPError(503, "too many dashboard sessions; try again later")
        # every dashboard kernel loads the extension that keeps tracebacks out of the browser
        kwargs["extra_arguments"] = [*kwargs.get("extra_arguments", []),
                                     "--IPKernelApp.extensions=['jobmanager.dashboard.kernel']"]
        kernel_id = await super().start_kernel(*args, **kwargs)
        self._unconnected_since[kernel_id] = time.monotonic()
        owner = _page_browser.get()
        if owner:
            self._owners[kernel_id] = owner
        return kernel_id

    def owned_by(self, kernel_id: str, token: str | None) -> bool:
        """True when ``token`` is the browser token of the page that started the kernel."""
        owner = self._owners.get(kernel_id)
        if not owner or not token:
            return False
        return hmac.compare_digest(owner, token)

    def notify_connect(self, kernel_id: str) -> None:
        super().notify_connect(kernel_id)
        self._unconnected_since.pop(kernel_id, None)
        self._ever_connected.add(kernel_id)

    def notify_disconnect(self, kernel_id: str) -> None:
        super().notify_disconnect(kernel_id)
        if kernel_id in self._kernels and not self._kernel_connections.get(kernel_id, 0):
            self._unconnected_since[kernel_id] = time.monotonic()

    async def cull_kernels(self) -> None:
        if self.downloads_dir:
            downloads.clean_expired(Path(self.downloads_dir))
        for kernel_id in set(self._unconnected_since) - set(self._kernels):
            del self._unconnected_since[kernel_id]
        self._ever_connected &= set(self._kernels)
        for kernel_id in set(self._owners) - set(self._kernels):
            del self._owners[kernel_id]
        await super().cull_kernels()

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        # Jupyter's idle culler only for kernels a page has connected to: before that, the kernel is
        # starting (which, on a loaded machine, takes longer than a short cull timeout) or rendering.
        if kernel_id in self._ever_connected:
            await super().cull_kernel_if_idle(kernel_id)
        if kernel_id not in self._kernels or not self.cull_disconnected_timeout:
            return
        since = self._unconnected_since.get(kernel_id)
        if since is None or self._kernel_connections.get(kernel_id, 0):
            return
        kernel = self._kernels[kernel_id]
        # A kernel that never had a connection and is starting or busy is still working for its page.
        if kernel_id not in self._ever_connected and getattr(kernel, "execution_state", None) in ("busy", "starting"):
            return
        gone = time.monotonic() - since
        limit = self.cull_disconnected_timeout
        if kernel_id not in self._ever_connected:  # its page may still be loading in a slow browser
            limit = max(limit, FIRST_CONNECT_GRACE)
        if gone > limit:
            self.log.info("Culling a kernel: no browser connected for %.0f s", gone)
            await self.shutdown_kernel(kernel_id)


class DownloadFileHandler(AllowListFileHandler):
    """Voila's allowlisted ``/voila/files/`` handler, serving every file as an attachment."""

    def set_extra_headers(self, path: str) -> None:
        name = path.rsplit("/", 1)[-1]
        ascii_name = name.encode("ascii", "replace").decode("ascii").replace('"', "_").replace("?", "_")
        self.set_header("Content-Disposition", f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}")
        self.set_header("Content-Security-Policy", "sandbox; default-src 'none'")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "no-referrer")

    def compute_etag(self) -> str | None:
        return None

    async def get(self, path: str, include_body: bool = True) -> None:
        # A control character (NUL made os.path raise: a 500) is never in a published name.
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
            raise tornado.web.HTTPError(404)
        # Expired tokens are refused at once, not only after the next clean-up pass removed them.
        token = path.split("/")[1] if path.startswith("downloads/") and path.count("/") >= 2 else ""
        if _TOKEN.fullmatch(token):
            folder = Path(self.root) / "downloads" / token
            if downloads.expired(folder):
                downloads.clean_expired(folder.parent)
                raise tornado.web.HTTPError(404)
        await super().get(path, include_body)  # (HEAD comes here too)


def browser_token(handler: tornado.web.RequestHandler) -> str | None:
    """The browser token of the request's :data:`BROWSER_COOKIE`, None without a valid (signed) one."""
    value = handler.get_signed_cookie(BROWSER_COOKIE, max_age_days=31)
    token = value.decode("ascii", "replace") if value else None
    return token if token and _TOKEN.fullmatch(token) else None


class KernelOwnerCheck:
    """Mixin for handlers whose URL names a kernel: 403 unless the request has the owner's cookie."""

    def check_kernel_owner(self) -> None:
        handler: Any = self
        kernel_id = handler.path_kwargs.get("kernel_id") or (handler.path_args[0] if handler.path_args else "")
        manager = handler.kernel_manager
        if kernel_id not in manager:  # gone (or never was): as Jupyter answers
            raise tornado.web.HTTPError(404, "no such kernel")
        if not (isinstance(manager, DashboardKernelManager) and manager.owned_by(kernel_id, browser_token(handler))):
            raise tornado.web.HTTPError(403, "this dashboard session belongs to another browser")


class OwnedKernelHandler(KernelOwnerCheck, KernelHandler):
    """``/api/kernels/<id>`` (the page reads its kernel's model): the owner's browser only."""

    # jupyter_server's APIHandler.prepare is async over a base typed as sync and carries this same ignore
    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        self.check_kernel_owner()


class OwnedShutdownHandler(KernelOwnerCheck, VoilaShutdownKernelHandler):
    """The page's shutdown beacon: the owner's browser only."""

    async def prepare(self) -> None:
        await super().prepare()
        self.check_kernel_owner()


def v1_frame_ok(frame: bytes) -> bool:
    """True when ``frame`` is a well-formed v1 kernel websocket message (checked before jupyter_server parses it).

    Layout: 8-byte little-endian count n, n offsets (8 bytes each), then channel, header, parent header,
    metadata, content and buffers between consecutive offsets.
    """
    if len(frame) < 8:
        return False
    count = int.from_bytes(frame[:8], "little")
    if not 6 <= count <= 6 + MAX_BUFFERS or len(frame) < 8 * (count + 1):
        return False
    offsets = [int.from_bytes(frame[8 * (i + 1): 8 * (i + 2)], "little") for i in range(count)]
    if offsets[0] != 8 * (count + 1) or offsets[-1] != len(frame):
        return False
    return all(a <= b for a, b in zip(offsets, offsets[1:], strict=False))


class DashboardKernelWebsocketHandler(KernelOwnerCheck, VoilaKernelWebsocketHandler):
    """The kernel websocket: the owner's browser only, the v1 subprotocol only, checked frames only."""

    async def prepare(self, *args: Any, **kwargs: Any) -> None:
        await super().prepare(*args, **kwargs)
        self.check_kernel_owner()
        offered = [p.strip() for p in self.request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if WS_PROTOCOL not in offered:
            raise tornado.web.HTTPError(400, f"the kernel websocket needs the {WS_PROTOCOL} subprotocol")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # JupyterHandler renders an HTML page from templates Voila does not ship (a traceback in the log)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        exc = kwargs.get("exc_info", (None, None))[1]
        reason = exc.log_message if isinstance(exc, tornado.web.HTTPError) and exc.log_message else self._reason
        self.finish(f"{status_code}: {reason}\n")

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return WS_PROTOCOL if WS_PROTOCOL in subprotocols else None

    def on_message(self, message: str | bytes) -> Any:
        if not isinstance(message, bytes) or not v1_frame_ok(message):
            self.log.warning("Closing a dashboard websocket: a malformed message (%d bytes)", len(message))
            self.close(1007, "malformed message")
            return None
        try:
            return super().on_message(message)
        except Exception as exc:  # bad JSON in a part, unknown channel: one line, and the socket closes
            self.log.warning("Closing a dashboard websocket: a bad message (%s)", type(exc).__name__)
            self.close(1007, "bad message")
            return None


class PageHandler(TornadoVoilaHandler):
    """Voila's page handler, which also sets the ``_xsrf`` cookie.

    Voila's page sends its kernel-shutdown beacon on ``beforeunload`` with the ``_xsrf`` cookie's value,
    but Voila 0.5.13 never sets that cookie on the page, so the beacon was refused (403) and every kernel
    outlived its page until culled.

    It also sets :data:`BROWSER_COOKIE` (kept when the browser already has a valid one) and makes its
    token the owner of the kernel this page starts.
    """

    @tornado.web.authenticated
    async def get(self, path: str | None = None) -> None:
        self.xsrf_token  # noqa: B018 -- the property sets the cookie
        token = browser_token(self) or secrets.token_urlsafe(32)
        self.set_signed_cookie(BROWSER_COOKIE, token, expires_days=None, httponly=True, samesite="Strict",
                               path=self.base_url)
        _page_browser.set(token)  # this request's own task: start_kernel below runs in it
        await super().get(path)


class DashboardVoila(Voila):
    """Voila's standalone app with the handler changes described in the module docstring."""

    name = "voila"  # read the same config files and section names as Voila

    @default("config_file_paths")
    def _config_file_paths_default(self) -> list[str]:
        return list(jupyter_config_path())

    @default("tornado_settings")
    def _tornado_settings_default(self) -> dict[str, Any]:
        return {
            "headers": dict(SECURITY_HEADERS),
            # read by Voila's page script for the shutdown beacon, so not HttpOnly
            "xsrf_cookie_kwargs": {"samesite": "Strict"},
            "websocket_max_message_size": MAX_MESSAGE_BYTES,
        }

    def initialize(self, argv: list[str] | None = None) -> None:
        # Fixed settings, set before the command line is read (which may still override them).
        vc = self.config.VoilaConfiguration
        vc.template = TEMPLATE
        vc.allow_template_override = "NO"  # else ?template=lab brings the CDN links back
        vc.file_allowlist = [downloads.ALLOWLIST]
        vc.file_denylist = []
        vc.show_tracebacks = False
        vc.multi_kernel_manager_class = f"{__name__}.DashboardKernelManager"
        self.config.Voila.port_retries = 0  # a taken port is an error, not a surprise port
        self.config.IdentityProvider.cookie_options = {"samesite": "Strict", "httponly": True}
        super().initialize(argv)
        redact_logs()

    def start(self) -> None:
        redact_logs()  # handlers set up since initialize (tornado's, the kernel manager's)
        super().start()

    def init_handlers(self) -> list:
        handlers = []
        replace = {KernelHandler: OwnedKernelHandler, VoilaShutdownKernelHandler: OwnedShutdownHandler,
                   VoilaKernelWebsocketHandler: DashboardKernelWebsocketHandler}
        for spec in super().init_handlers():
            pattern, handler = spec[0], spec[1]
            if pattern in ("/login", "/logout"):  # Jupyter's pages; the sign-in is in the app
                continue
            if handler in replace:
                spec = (pattern, replace[handler], *spec[2:])
            elif handler is AllowListFileHandler:
                spec = (pattern, DownloadFileHandler, *spec[2:])
            elif handler is TornadoVoilaHandler and self.notebook_path:
                spec = (self.server_url.rstrip("/") + "/()", PageHandler, *spec[2:])
            handlers.append(spec)
        return handlers


def main(argv: list[str] | None = None) -> None:
    """Run the server with Voila command-line arguments (``jobmanager dashboard`` computes them)."""
    DashboardVoila.launch_instance(argv=sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    main()
