"""HTML to PDF through WeasyPrint (Pango/HarfBuzz shaping), with the house page style and a locked-down fetcher.

Page size, margins, the running header (the document's name) and the footer ("page 3
of 12") come from CSS ``@page`` rules, so nothing is stamped afterwards. The fetcher
refuses everything but ``data:`` URIs and files inside the document's own folder that
the job may read: no network, no ``file://`` elsewhere. WeasyPrint runs no scripts.
WeasyPrint's own warnings while a document renders (an image refused, broken CSS)
are collected for the task's warning; its INFO chatter never reaches task logs.
"""

from __future__ import annotations

import ctypes.util
import html as htmllib
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlsplit

from jobmanager.printing.fonts import MONO, SANS
from jobmanager.printing.read import RenderError

for _name in ("weasyprint", "weasyprint.progress", "fontTools", "fontTools.subset", "fontTools.ttLib", "fpdf",
              "PIL", "pikepdf"):
    logging.getLogger(_name).setLevel(logging.WARNING)

MayRead = Callable[[Path], bool]
Cancelled = Callable[[], bool]

BASE_CSS = f"""
html {{ font-family: {SANS}; font-size: 10.5pt; line-height: 1.4; color: #111; }}
body {{ margin: 0; }}
pre, code, kbd, samp, tt {{ font-family: {MONO}; font-size: 0.9em; }}
pre {{ white-space: pre-wrap; overflow-wrap: anywhere; background: #f6f8fa; padding: 4pt 6pt; }}
pre.text {{ background: none; padding: 0; margin: 0; font-size: 9pt; line-height: 1.3; }}
h1, h2, h3 {{ line-height: 1.2; break-after: avoid; }}
h1 {{ font-size: 1.6em; }} h2 {{ font-size: 1.3em; }} h3 {{ font-size: 1.1em; }}
img, svg {{ max-width: 100%; }}
a {{ color: #0645ad; text-decoration: none; }}
table {{ border-collapse: collapse; margin: 6pt 0; }}
thead {{ display: table-header-group; }}
th, td {{ border: 0.5pt solid #999; padding: 2pt 4pt; vertical-align: top; text-align: start; }}
th {{ background: #eee; }}
table.data {{ font-size: 8pt; }}
table.data td, table.data th {{ overflow-wrap: anywhere; hyphens: manual; }}
blockquote {{ margin-left: 0; padding-left: 8pt; border-left: 2pt solid #ccc; color: #444; }}
li.task-list-item {{ list-style: none; }}
.footnotes {{ font-size: 0.85em; }}
h1.doc-title {{ font-size: 13pt; margin: 0 0 8pt; }}
"""


@dataclass
class PageStyle:
    """How a document's pages look: everything here becomes one ``@page`` rule."""

    label: str = ""
    landscape: bool = False
    #: "page 3 of 12" in the footer; off when the finishing step stamps endorsements instead
    numbers: bool = True
    #: the total is unknown when a long text renders in pieces: "page 3" then
    total: bool = True
    #: the first page's number (long texts render in pieces)
    first_page: int = 1
    margin: str = "15mm 15mm 16mm 15mm"

    def css(self) -> str:
        size = "A4 landscape" if self.landscape else "A4"
        label = _css_string(self.label)
        footer = '""'
        if self.numbers:
            of = ' " of " counter(pages)' if self.total else ""
            footer = f'"page " counter(page){of}'
        reset = f"html {{ counter-reset: page {self.first_page - 1}; }}" if self.first_page > 1 else ""
        box = f"font-family: {SANS}; font-size: 7.5pt; color: #777;"
        return (f"@page {{ size: {size}; margin: {self.margin}; "
                f"@top-left {{ content: {label}; {box} }} "
                f"@bottom-right {{ content: {footer}; {box} }} }} {reset}")


def _css_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def page(body: str, title: str = "", css: str = "") -> str:
    """A complete HTML document around ``body``."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{htmllib.escape(title)}</title>"
            f"<style>{css}</style></head><body>{body}</body></html>")


_import_lock = threading.Lock()


def weasyprint() -> ModuleType:
    """WeasyPrint, imported once without the 70 compiler processes its first import would start.

    WeasyPrint opens Pango, HarfBuzz and fontconfig by trying several names in turn
    ("libgobject-2.0-0", "gobject-2.0", ... "libgobject-2.0.so.0"). For each name that does not
    load as it is, cffi asks ``ctypes.util.find_library``, which on Linux runs ``ldconfig -p``
    and then gcc and ld: 215 processes and 0.6 s on this machine, forked from an agent that may
    be holding hundreds of MB (a forked child counts them again while it lives). Every list
    also names the library's shared-object file, which loads directly, so the names that are
    not found are let fail at once. If WeasyPrint cannot load that way (an unusual install),
    the ordinary import is tried.
    """
    with _import_lock:
        if "weasyprint" not in sys.modules:
            real = ctypes.util.find_library
            ctypes.util.find_library = lambda name: None
            try:
                import weasyprint  # noqa: F401  (kept in sys.modules)
            except OSError:
                pass  # loaded the ordinary way below
            finally:
                ctypes.util.find_library = real
        import weasyprint as module

        return module


def _fetcher(folder: Path | None, may_read: MayRead | None) -> Any:  # a weasyprint URLFetcher (imported lazily)
    weasyprint()
    from weasyprint.urls import URLFetcher, URLFetcherResponse

    root = folder.resolve() if folder else None

    class LockedFetcher(URLFetcher):
        def fetch(self, url: str, headers: dict[str, str] | None = None) -> URLFetcherResponse:
            scheme = url.split(":", 1)[0].lower()
            if scheme == "data":
                return super().fetch(url, headers)
            if scheme == "file" and root is not None:
                path = Path(unquote(urlsplit(url).path)).resolve()
                if (path == root or root in path.parents) and path.is_file() and (may_read is None or may_read(path)):
                    return URLFetcherResponse(url, body=path.read_bytes())
                raise ValueError("refused: outside the document's folder")
            raise ValueError(f"refused: {scheme} resources are not fetched")

    return LockedFetcher(timeout=1)


class _Collect(logging.Handler):
    """WeasyPrint's warnings from this thread only (an agent renders several documents at once)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread and len(self.messages) < 50:
            self.messages.append(record.getMessage().splitlines()[0][:300])


@dataclass
class Rendered:
    pages: int
    warnings: list[str] = field(default_factory=list)


def render_html(html: str, out: Path, *, label: str, style: PageStyle, folder: Path | None = None,
                may_read: MayRead | None = None, extra_css: str = "") -> Rendered:
    """Lay out ``html`` and write the PDF to ``out``."""
    wp = weasyprint()

    collect = _Collect()
    logger = logging.getLogger("weasyprint")
    logger.addHandler(collect)
    try:
        base = folder.resolve().as_uri() + "/" if folder else None
        doc = wp.HTML(string=html, base_url=base, url_fetcher=_fetcher(folder, may_read))
        stylesheets = [wp.CSS(string=BASE_CSS + style.css() + extra_css)]
        rendered = doc.render(stylesheets=stylesheets)
        pages = len(rendered.pages)
        out.parent.mkdir(parents=True, exist_ok=True)
        rendered.write_pdf(str(out))
    except RenderError:
        raise
    except RecursionError:
        raise RenderError(f"{label}: nested too deeply to lay out") from None
    except Exception as exc:  # WeasyPrint raises assorted errors on input it cannot lay out
        raise RenderError(f"{label}: cannot lay out: {type(exc).__name__}: {exc}") from None
    finally:
        logger.removeHandler(collect)
    warnings = [m for m in collect.messages if "refused" in m or "Failed" in m or "Error" in m]
    return Rendered(pages, warnings)
