"""Offering a file to the browser: a link the user clicks, saved under the right name.

The file is published by :mod:`jobmanager.dashboard.downloads` (an unguessable, expiring
link served by the dashboard's Voila server). Where there is no such server
(JupyterLab), small files travel as a ``data:`` URL and big ones are named with
the command that downloads them.
"""

from __future__ import annotations

import base64
import html
import mimetypes
from pathlib import Path

import ipywidgets as w

from . import format as fmt

INLINE_LIMIT = 5 * 2**20


def link_for(path: Path, name: str) -> str | None:
    """A URL the browser can save ``path`` from, or None when there is none."""
    from jobmanager.dashboard.downloads import publish

    url = publish(path, name)
    if url:
        return url
    if path.stat().st_size <= INLINE_LIMIT:
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
    return None


def anchor(path: Path, name: str, text: str | None = None, job_id: int | None = None) -> str:
    url = link_for(path, name)
    label = html.escape(text or f"⬇ {name}")
    if url is None:
        cmd = f"jobmanager download {job_id} --artifact {name}" if job_id else str(path)
        return (f'<span class="jm-muted">{html.escape(name)} ({fmt.size(path.stat().st_size)}) is too big to '
                f"send here: <code>{html.escape(cmd)}</code></span>")
    return (f'<a class="jm-link" href="{html.escape(url)}" download="{html.escape(name)}" target="_blank" '
            f'data-jm-download="{html.escape(name)}">{label}</a>')


class DownloadArea(w.HTML):
    """Where prepared downloads appear (one line: a link and what it is)."""

    def offer(self, path: Path, name: str, note: str = "", job_id: int | None = None) -> None:
        self.value = (f'<div class="jm-message jm-message-info">{html.escape(note)} '
                      f"{anchor(path, name, job_id=job_id)}</div>")

    def clear(self) -> None:
        self.value = ""
