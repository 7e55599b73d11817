"""Keyboard: Enter in a text box submits its form; the page's keys for the job grids.

The dashboard's page script (the Voila template) handles ``/`` (focus the search box) in the browser and
sends ↑ ↓ Enter Esc to the kernel as text like ``"down 17"`` through a hidden box: that text arrives over a
comm, so it is hostile until :func:`page_key` has checked it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import ipywidgets as w

#: the keys the page may send, and the one shape their text may have ("<key> <counter>")
PAGE_KEYS = ("up", "down", "enter", "escape")
_PAGE_KEY_RE = re.compile(r"(up|down|enter|escape) [0-9]{1,9}")


def page_key(value: Any) -> str | None:
    """The key named by the page's text, or None for anything else (wrong type, unknown key, too long)."""
    if not isinstance(value, str) or len(value) > 24:
        return None
    match = _PAGE_KEY_RE.fullmatch(value)
    return match.group(1) if match else None


def on_enter(widget: w.Text, callback: Callable[[], Any]) -> None:
    """Call ``callback()`` when Enter is pressed in ``widget`` (a Text or Password box).

    The box must sync as you type (``continuous_update=True``, the default): with False, the browser
    sends ``{"event": "submit"}`` before the value. ipywidgets' ``on_submit`` listens to the same event
    but is deprecated, so this listens to it directly.
    """

    def handler(_: Any, content: Any, buffers: Any) -> None:
        if isinstance(content, dict) and content.get("event") == "submit":
            callback()

    widget.on_msg(handler)
