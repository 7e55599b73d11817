"""Markdown to HTML: CommonMark plus GitHub's tables, task lists, footnotes, autolinks and heading anchors.

Inline HTML is kept (``<a id="top"></a>``, ``<details>``, ``<br>``...) after GitHub's tag
filter: the tags GitHub disallows (script, style, iframe...) and those that load or
embed things are dropped. Nothing here fetches anything; the layout's fetcher is the
boundary for images and links.
"""

from __future__ import annotations

import re

_DROP_BLOCK = re.compile(r"<(script|style|iframe|object|embed|noembed|noframes|xmp|textarea|title|template)\b"
                         r"[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_DROP_TAG = re.compile(r"</?(script|style|iframe|object|embed|noembed|noframes|xmp|textarea|title|template|"
                       r"plaintext|link|meta|base|frame|frameset|applet)\b[^>]*>", re.IGNORECASE)
_CHECKBOX = re.compile(r'<input class="task-list-item-checkbox"[^>]*>')
_ON_ATTR = re.compile(r"\son[a-z]+\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s>]+)", re.IGNORECASE)


def sanitize(html: str) -> str:
    """HTML without scripts, frames, embeds, stylesheet links or event handlers."""
    html = _DROP_BLOCK.sub("", html)
    html = _DROP_TAG.sub("", html)
    return _ON_ATTR.sub("", html)


def slug(title: str) -> str:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens (any script kept)."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def to_html(text: str) -> str:
    from markdown_it import MarkdownIt
    from mdit_py_plugins.anchors import anchors_plugin
    from mdit_py_plugins.gfm import gfm_plugin

    md = MarkdownIt("commonmark", {"html": True, "linkify": False, "typographer": False})
    md.use(gfm_plugin).use(anchors_plugin, min_level=1, max_level=6, slug_func=slug)
    html = _CHECKBOX.sub(lambda m: "\u2611" if "checked" in m.group(0) else "\u2610", md.render(text))
    return sanitize(html)
