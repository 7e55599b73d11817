"""The standalone Voila server of ``jobmanager dashboard``, hardened; run as ``python -m jobmanager.dashboard_voila``.

This module imports Voila; :mod:`jobmanager.dashboard_server` (which the CLI imports) does not, and starts
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
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import tornado.web
from jupyter_core.paths import jupyter_config_path
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets import Float, Int, Unicode, default
from voila.app import Voila
from voila.static_file_handler import AllowListFileHandler
from voila.tornado.handler import TornadoVoilaHandler

from . import downloads
from .dashboard_server import SECURITY_HEADERS, TEMPLATE


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

    async def start_kernel(self, *args: Any, **kwargs: Any) -> str:  # type: ignore[override]
        if self.max_kernels and len(self._kernels) >= self.max_kernels:
            raise tornado.web.HTTPError(503, "too many dashboard sessions; try again later")
        kernel_id = await super().start_kernel(*args, **kwargs)
        self._unconnected_since[kernel_id] = time.monotonic()
        return kernel_id

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
        await super().cull_kernels()

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        await super().cull_kernel_if_idle(kernel_id)
        if kernel_id not in self._kernels or not self.cull_disconnected_timeout:
            return
        since = self._unconnected_since.get(kernel_id)
        if since is None or self._kernel_connections.get(kernel_id, 0):
            return
        kernel = self._kernels[kernel_id]
        # A kernel that never had a connection and is busy is still running the notebook for its page.
        if kernel_id not in self._ever_connected and getattr(kernel, "execution_state", None) == "busy":
            return
        gone = time.monotonic() - since
        if gone > self.cull_disconnected_timeout:
            self.log.info("Culling kernel %s: no browser connected for %.0f s", kernel_id, gone)
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


class PageHandler(TornadoVoilaHandler):
    """Voila's page handler, which also sets the ``_xsrf`` cookie.

    Voila's page sends its kernel-shutdown beacon on ``beforeunload`` with the ``_xsrf`` cookie's value,
    but Voila 0.5.13 never sets that cookie on the page, so the beacon was refused (403) and every kernel
    outlived its page until culled.
    """

    @tornado.web.authenticated
    async def get(self, path: str | None = None) -> None:
        self.xsrf_token  # noqa: B018 -- the property sets the cookie
        await super().get(path)


class DashboardVoila(Voila):
    """Voila's standalone app with the handler changes described in the module docstring."""

    name = "voila"  # read the same config files and section names as Voila

    @default("config_file_paths")
    def _config_file_paths_default(self) -> list[str]:
        return list(jupyter_config_path())

    @default("tornado_settings")
    def _tornado_settings_default(self) -> dict[str, Any]:
        return {"headers": dict(SECURITY_HEADERS)}

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
        super().initialize(argv)

    def init_handlers(self) -> list:
        handlers = []
        for spec in super().init_handlers():
            pattern, handler = spec[0], spec[1]
            if handler is AllowListFileHandler:
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
