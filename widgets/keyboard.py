"""Keyboard: Enter in a text box submits its form."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as w


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
