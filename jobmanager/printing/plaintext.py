"""Plain text that needs no shaping, in DejaVu Sans Mono through fpdf2: the fast path for long files.

Monospaced text without right-to-left scripts, combining marks or wide (CJK) characters
needs no layout engine: lines wrap at a fixed column and pages hold a fixed number of
lines. WeasyPrint spends ~3 ms per line on it (a 480,000-line word list: ~25 min);
this path prints the same list in ~30 s at ~150 MB. Anything else (Arabic, CJK, emoji,
a character this font lacks) goes through WeasyPrint, which shapes and falls back.
The page looks the same as WeasyPrint's: A4, the document's name at the top left,
"page n of N" at the bottom right.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import threading
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MM = 72 / 25.4
PAGE_W, PAGE_H = 210 * MM, 297 * MM
LEFT, RIGHT, TOP, BOTTOM = 15 * MM, 15 * MM, 15 * MM, 16 * MM
SIZE, LINE = 9.0, 11.7
ADVANCE = 0.602 * SIZE  # DejaVu Sans Mono's advance width is 1233/2048 em
COLUMNS = int((PAGE_W - LEFT - RIGHT) // ADVANCE)
LINES = int((PAGE_H - TOP - BOTTOM) // LINE)
#: pages between checks for cancellation
CHECK_EVERY = 50
#: pages fpdf2 holds at once (~4 KB a page; one piece is leaner than pieces joined by qpdf up to here)
PIECE_PAGES = 20_000

_lock = threading.Lock()
_fonts: tuple[Path, Path, frozenset[int]] | None | bool = False


def _font_file(family: str, expect: str) -> Path | None:
    fc_match = shutil.which("fc-match")
    if not fc_match:
        return None
    out = subprocess.run([fc_match, "-f", "%{file}", family], capture_output=True, text=True, timeout=30,
                         check=False).stdout.strip()
    return Path(out) if out.endswith(expect) and Path(out).is_file() else None


def fonts() -> tuple[Path, Path, frozenset[int]] | None:
    """(DejaVu Sans Mono, DejaVu Sans, the mono font's code points), or None when they are not installed."""
    global _fonts
    with _lock:
        if _fonts is False:
            mono = _font_file("DejaVu Sans Mono", "DejaVuSansMono.ttf")
            sans = _font_file("DejaVu Sans", "DejaVuSans.ttf")
            if mono and sans:
                from fontTools.ttLib import TTFont

                with TTFont(mono, lazy=True) as font:
                    cmap = frozenset(font.getBestCmap())
                _fonts = (mono, sans, cmap)
            else:
                _fonts = None
        return _fonts if isinstance(_fonts, tuple) else None


def can_print(text: str) -> bool:
    """True when every character prints as-is in DejaVu Sans Mono, one cell wide, left to right."""
    found = fonts()
    if found is None:
        return False
    cmap = found[2]
    for c in set(text):
        if c in "\n\t\f":
            continue
        if ord(c) not in cmap or unicodedata.bidirectional(c) in ("R", "AL", "AN", "RLE", "RLO", "RLI") \
                or unicodedata.category(c) in ("Mn", "Me", "Cf") or unicodedata.east_asian_width(c) in ("W", "F"):
            return False
    return True


def _wrap(text: str) -> Iterator[str]:
    """The printed lines, one at a time (a list of a long file's lines would cost ~70 bytes a line)."""
    start = 0
    while start < len(text):  # not io.StringIO(text): it copies the text as 4 bytes a character (~20 MB here)
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        line = text[start:end].expandtabs(8)
        start = end + 1
        if not line.isprintable():
            line = "".join(c for c in line if c >= " " or c == "\f")
        while len(line) > COLUMNS:
            yield line[:COLUMNS]
            line = line[COLUMNS:]
        yield line


def fpdf_class() -> Any:
    """fpdf2's ``FPDF``, imported so that the import pins no caller's memory.

    fpdf2 keeps the ImportError of its optional ``cryptography`` import in a module global
    (``fpdf.encryption.import_error``); that exception's traceback holds the frames that were on
    the stack at the first import, and with them the locals those frames end with. Imported from
    inside a render, it kept the whole 7,500-page document (~85 MB) alive for the agent's lifetime.
    """
    from fpdf import FPDF, encryption

    error = getattr(encryption, "import_error", None)
    if isinstance(error, BaseException):
        error.__traceback__ = None
        error.__context__ = error.__cause__ = None
    return FPDF


def _count(text: str) -> int:
    return sum(1 for _ in _wrap(text))


def render(text: str, out: Path, *, label: str, numbers: bool, on_page: Callable[[int], None],
           cancelled: Callable[[], None]) -> int:
    """Print ``text`` into ``out``; returns the page count. ``cancelled`` raises to stop.

    Lines are read lazily; pieces of :data:`PIECE_PAGES` pages are written to temporary files and joined
    at the end, so fpdf2 never holds more than one piece (~80 MB for the 7,500-page word list).
    """
    import tempfile

    from jobmanager.printing.join import join_pdfs

    pages = max(1, -(-_count(text) // LINES))
    lines = _wrap(text)
    if pages <= PIECE_PAGES:
        _piece(lines, 0, pages, pages, out, label, numbers, on_page, cancelled)
        return pages
    with tempfile.TemporaryDirectory(prefix="jm-text-") as tmp:
        parts = []
        for first in range(0, pages, PIECE_PAGES):
            part = Path(tmp) / f"{first:07d}.pdf"
            _piece(lines, first, min(first + PIECE_PAGES, pages), pages, part, label, numbers, on_page, cancelled)
            parts.append(part)
        join_pdfs(parts, out)
    return pages


def _piece(lines: Iterator[str], first: int, end: int, pages: int, out: Path, label: str, numbers: bool,
           on_page: Callable[[int], None], cancelled: Callable[[], None]) -> None:
    found = fonts()
    assert found is not None
    mono, sans, cmap = found
    pdf = fpdf_class()(unit="pt", format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_creator("jobmanager print_to_pdf")
    pdf.set_title(label)
    pdf.add_font("mono", "", str(mono))
    pdf.add_font("sans", "", str(sans))
    head = "".join(c if ord(c) in cmap else "?" for c in label)
    for n in range(first, end):
        if n % CHECK_EVERY == 0:
            cancelled()
            on_page(n)
        pdf.add_page()
        pdf.set_text_color(119)
        pdf.set_font("sans", "", 7.5)
        pdf.text(LEFT, TOP - 12, head)
        if numbers:
            foot = f"page {n + 1} of {pages}"
            pdf.text(PAGE_W - RIGHT - pdf.get_string_width(foot), PAGE_H - BOTTOM + 16, foot)
        pdf.set_text_color(17)
        pdf.set_font("mono", "", SIZE)
        y = TOP + SIZE
        for line in itertools.islice(lines, LINES):
            if line.strip():
                pdf.text(LEFT, y, line.replace("\f", " "))
            y += LINE
    out.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(out))
