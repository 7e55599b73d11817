"""Rendering documents to PDF (fpdf2) and merging them with a cover page (pypdf).

Used by the ``print_to_pdf`` job type. Every problem a user can fix (missing file,
wrong encoding, corrupt image...) is a :class:`RenderError` whose message starts
with the document's name, so the task's one-line error says which file and why.

Text needs a Unicode font: DejaVu is looked up in ``$JOBMANAGER_PDF_FONTS``, the
system font folders and matplotlib's bundled fonts (without importing it); when
none is found the PDF core fonts are used and characters outside Latin-1 print as ``?``.
"""

from __future__ import annotations

import csv
import errno
import importlib.util
import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fpdf import FPDF
from PIL import Image, UnidentifiedImageError
from pypdf import PdfReader, PdfWriter

TEXT_SUFFIXES = {".txt", ".text", ".log", ".ini", ".cfg", ".toml", ".json", ".yaml", ".yml", ".py", ".sql", ""}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
TABLE_SUFFIXES = {".csv", ".tsv"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"}
HTML_SUFFIXES = {".html", ".htm"}
SUPPORTED = sorted(TEXT_SUFFIXES | MARKDOWN_SUFFIXES | TABLE_SUFFIXES | IMAGE_SUFFIXES | HTML_SUFFIXES - {""})

#: table rows rendered per chunk (progress and cancellation are checked between chunks)
TABLE_CHUNK = 500
#: text lines rendered per chunk
TEXT_CHUNK = 200

OnPage = Callable[[int], None]
Cancelled = Callable[[], bool]


class RenderError(Exception):
    """A document that cannot be printed; the message names it and says why."""


# -- fonts -----------------------------------------------------------------------------------------------
_FONT_FILES = {
    ("sans", ""): "DejaVuSans.ttf",
    ("sans", "B"): "DejaVuSans-Bold.ttf",
    ("sans", "I"): "DejaVuSans-Oblique.ttf",
    ("sans", "BI"): "DejaVuSans-BoldOblique.ttf",
    ("mono", ""): "DejaVuSansMono.ttf",
    ("mono", "B"): "DejaVuSansMono-Bold.ttf",
    ("mono", "I"): "DejaVuSansMono-Oblique.ttf",
    ("mono", "BI"): "DejaVuSansMono-BoldOblique.ttf",
}


def _font_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("JOBMANAGER_PDF_FONTS", "").split(os.pathsep) if p]
    dirs += [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"),
             Path("/usr/share/fonts/TTF"), Path("/Library/Fonts")]
    spec = importlib.util.find_spec("matplotlib")
    for root in (spec.submodule_search_locations or []) if spec else []:
        dirs.append(Path(root) / "mpl-data" / "fonts" / "ttf")
    return dirs


def _find_fonts() -> dict[tuple[str, str], Path] | None:
    for folder in _font_dirs():
        found = {key: folder / name for key, name in _FONT_FILES.items()}
        if all(p.is_file() for p in found.values()):
            return found
    return None


_FONTS: dict[tuple[str, str], Path] | None = None
_FONTS_LOOKED_UP = False


def unicode_fonts() -> dict[tuple[str, str], Path] | None:
    """The DejaVu font files, or None when the core (Latin-1) fonts must do."""
    global _FONTS, _FONTS_LOOKED_UP
    if not _FONTS_LOOKED_UP:
        _FONTS, _FONTS_LOOKED_UP = _find_fonts(), True
    return _FONTS


class Document(FPDF):
    """An A4 FPDF with a ``sans`` and a ``mono`` family, Unicode when a font was found."""

    def __init__(self, title: str = "", orientation: str = "P") -> None:
        super().__init__(orientation=orientation, unit="mm", format="A4")
        self.set_auto_page_break(True, margin=15)
        self.set_margins(15, 15, 15)
        fonts = unicode_fonts()
        self.unicode = fonts is not None
        if fonts:
            for (family, style), path in fonts.items():
                self.add_font(family, style, str(path))
            self.sans, self.mono = "sans", "mono"
        else:
            self.sans, self.mono = "helvetica", "courier"
        if title:
            self.set_title(title)
        self.set_creator("jobmanager print_to_pdf")

    def clean(self, text: str) -> str:
        """Text this PDF's fonts can print."""
        text = text.replace("\t", "    ")
        text = "".join(c for c in text if c == "\n" or c >= " ")
        return text if self.unicode else text.encode("latin-1", "replace").decode("latin-1")

    def heading(self, text: str) -> None:
        self.set_font(self.sans, "B", 13)
        self.multi_cell(0, 7, self.clean(text), new_x="LMARGIN", new_y="NEXT")
        self.ln(3)


# -- reading input -----------------------------------------------------------------------------------------
def read_bytes(path: Path, label: str) -> bytes:
    """The file's bytes. ``path`` is already resolved and checked (Home.resolve_input), so a symlink
    in its place now was swapped in since: it is not followed."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise RenderError(f"{label}: file not found ({path})") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RenderError(f"{label}: is a symbolic link swapped in after the check; not read") from None
        if isinstance(exc, PermissionError):
            raise RenderError(f"{label}: unreadable: permission denied") from None
        raise RenderError(f"{label}: unreadable: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise RenderError(f"{label}: file not found ({path})") from None
    except IsADirectoryError:
        raise RenderError(f"{label}: is a folder, not a file") from None
    except PermissionError:
        raise RenderError(f"{label}: unreadable: permission denied") from None
    except OSError as exc:
        raise RenderError(f"{label}: unreadable: {exc.strerror or exc}") from None


def read_text(path: Path, label: str) -> str:
    """UTF-8 text (a BOM is fine); binary or other encodings are refused with the offending byte."""
    data = read_bytes(path, label)
    if b"\x00" in data[:8192]:
        raise RenderError(f"{label}: binary file, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = data[exc.start]
        raise RenderError(
            f"{label}: not UTF-8 text (byte 0x{bad:02x} at offset {exc.start}); re-save the file as UTF-8"
        ) from None


# -- renderers -----------------------------------------------------------------------------------------------
def render_document(path: Path, out: Path, *, label: str | None = None, on_page: OnPage | None = None,
                    cancelled: Cancelled | None = None) -> int:
    """Render one document into ``out``; returns its page count."""
    label = label or path.name
    suffix = path.suffix.lower()
    on_page = on_page or (lambda n: None)
    cancelled = cancelled or (lambda: False)
    if suffix in IMAGE_SUFFIXES:
        pdf = _render_image(path, label)
    elif suffix in TABLE_SUFFIXES:
        pdf = _render_table(path, label, on_page, cancelled)
    elif suffix in MARKDOWN_SUFFIXES:
        pdf = _render_html(_markdown_to_html(read_text(path, label)), label, "Markdown")
    elif suffix in HTML_SUFFIXES:
        pdf = _render_html(read_text(path, label), label, "HTML")
    elif suffix in TEXT_SUFFIXES:
        pdf = _render_text(read_text(path, label), label, on_page, cancelled)
    else:
        raise RenderError(f"{label}: unsupported file type {suffix!r} (supported: {', '.join(SUPPORTED)})")
    out.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(out))
    on_page(pdf.page_no())
    return pdf.page_no()


def _render_text(text: str, label: str, on_page: OnPage, cancelled: Cancelled) -> Document:
    pdf = Document(label)
    pdf.add_page()
    pdf.heading(label)
    pdf.set_font(pdf.mono, "", 9.5)
    lines = text.splitlines() or [""]
    for start in range(0, len(lines), TEXT_CHUNK):
        if cancelled():
            raise InterruptedError("cancelled")
        chunk = "\n".join(lines[start:start + TEXT_CHUNK])
        pdf.multi_cell(0, 4.6, pdf.clean(chunk), align="L", new_x="LMARGIN", new_y="NEXT")
        on_page(pdf.page_no())
    return pdf


def _render_table(path: Path, label: str, on_page: OnPage, cancelled: Cancelled) -> Document:
    text = read_text(path, label)
    if path.suffix.lower() == ".tsv":
        dialect: type[csv.Dialect] | csv.Dialect = csv.excel_tab
    else:
        try:
            dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel
    try:
        rows = [row for row in csv.reader(io.StringIO(text), dialect) if row]
    except csv.Error as exc:
        raise RenderError(f"{label}: not valid CSV: {exc}") from None
    width = max((len(r) for r in rows), default=0)
    pdf = Document(label, orientation="L" if width > 6 else "P")
    pdf.add_page()
    pdf.heading(label)
    if not rows:
        pdf.set_font(pdf.sans, "I", 10)
        pdf.cell(0, 6, "(empty table)")
        return pdf
    rows = [[pdf.clean(c) for c in r] + [""] * (width - len(r)) for r in rows]
    header, body = rows[0], rows[1:] or [[""] * width]
    pdf.set_font(pdf.sans, "", 8 if width > 6 else 9)
    for start in range(0, len(body), TABLE_CHUNK):
        if cancelled():
            raise InterruptedError("cancelled")
        with pdf.table(text_align="LEFT", line_height=pdf.font_size * 1.6) as table:
            for row in [header, *body[start:start + TABLE_CHUNK]]:
                table.row(row)
        on_page(pdf.page_no())
    return pdf


def _render_image(path: Path, label: str) -> Document:
    data = read_bytes(path, label)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()  # catches truncated and damaged files that open() alone accepts
        img: Image.Image = Image.open(io.BytesIO(data))
        img.load()
    except UnidentifiedImageError:
        raise RenderError(f"{label}: corrupt image: cannot identify image file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise RenderError(f"{label}: corrupt image: {exc}") from None
    if img.mode not in ("RGB", "RGBA", "L"):
        img = img.convert("RGBA" if "A" in img.getbands() or img.mode == "P" else "RGB")
    landscape = img.width > img.height
    pdf = Document(label, orientation="L" if landscape else "P")
    pdf.add_page()
    pdf.heading(label)
    room_w, room_h = pdf.epw, pdf.h - pdf.get_y() - pdf.b_margin
    scale = min(room_w / img.width, room_h / img.height)
    w, h = img.width * scale, img.height * scale
    pdf.image(img, x=pdf.l_margin + (room_w - w) / 2, y=pdf.get_y(), w=w, h=h)
    return pdf


def _markdown_to_html(text: str) -> str:
    import markdown

    return markdown.markdown(text, extensions=["tables", "fenced_code", "sane_lists"])


_IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
_ALT = re.compile(r"""\balt\s*=\s*(["'])(.*?)\1""", re.IGNORECASE | re.DOTALL)
_DROP = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


def _render_html(html: str, label: str, kind: str) -> Document:
    """Basic HTML via fpdf2's write_html. Images become their alt text: no file or network access."""
    html = _DROP.sub("", html)
    html = _IMG.sub(lambda m: f"[image: {(_ALT.search(m.group(0)) or [None, None, 'no description'])[2]}]", html)
    pdf = Document(label)
    pdf.add_page()
    pdf.heading(label)
    pdf.set_font(pdf.sans, "", 10.5)
    try:
        pdf.write_html(pdf.clean(html), font_family=pdf.sans, pre_code_font=pdf.mono,
                       warn_on_tags_not_matching=False)
    except Exception as exc:  # fpdf2 raises assorted errors on HTML it cannot lay out
        raise RenderError(f"{label}: cannot render {kind}: {exc}") from None
    return pdf


# -- merging ----------------------------------------------------------------------------------------------------
@dataclass
class Part:
    """One document of the merged PDF: its rendered file, or why it failed."""

    label: str
    pdf: Path | None = None
    error: str | None = None
    pages: int = 0
    first_page: int = 0


def merge(parts: list[Part], out: Path, *, title: str) -> int:
    """Write ``out``: a cover page listing every part, the printed parts, page numbers; returns pages."""
    readers: dict[int, PdfReader] = {}
    for i, part in enumerate(parts):
        if part.pdf is not None:
            try:
                readers[i] = PdfReader(str(part.pdf))
                part.pages = len(readers[i].pages)
            except Exception as exc:  # a lost or damaged intermediate file: report it on the cover
                part.pdf, part.error = None, f"rendered file unusable: {exc}"
    cover_pages = 1
    while True:  # the cover's own length moves every page number after it
        page = cover_pages + 1
        for part in parts:
            part.first_page = page if part.pdf else 0
            page += part.pages
        cover = _cover(parts, title)
        if cover.page_no() == cover_pages:
            break
        cover_pages = cover.page_no()
    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(bytes(cover.output()))))
    for i, part in enumerate(parts):
        if i in readers:
            writer.append(readers[i], outline_item=part.label)
    _stamp_page_numbers(writer, title)
    writer.add_metadata({"/Title": title, "/Creator": "jobmanager print_to_pdf"})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as fh:
        writer.write(fh)
    tmp.replace(out)  # a reader never sees a half-written merged.pdf
    return len(writer.pages)


def _cover(parts: list[Part], title: str) -> Document:
    pdf = Document(title)
    pdf.add_page()
    pdf.set_font(pdf.sans, "B", 20)
    pdf.multi_cell(0, 10, pdf.clean(title), new_x="LMARGIN", new_y="NEXT")
    failed = [p for p in parts if p.pdf is None]
    pdf.set_font(pdf.sans, "", 10)
    summary = f"{len(parts)} documents, {len(parts) - len(failed)} printed"
    summary += f", {len(failed)} failed" if failed else ""
    pdf.multi_cell(0, 6, f"{summary}. Generated {datetime.now():%Y-%m-%d %H:%M}.", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font(pdf.sans, "", 9.5)
    with pdf.table(col_widths=(8, 52, 18, 72), text_align=("RIGHT", "LEFT", "LEFT", "LEFT"),
                   line_height=pdf.font_size * 1.6) as table:
        table.row(["#", "Document", "Pages", "Status"])
        for n, p in enumerate(parts, 1):
            if p.pdf:
                pages = str(p.first_page) if p.pages == 1 else f"{p.first_page}-{p.first_page + p.pages - 1}"
                table.row([str(n), pdf.clean(p.label), pages, "printed"])
            else:
                table.row([str(n), pdf.clean(p.label), "-", pdf.clean(f"FAILED: {p.error or 'not printed'}")])
    return pdf


def _stamp_page_numbers(writer: PdfWriter, title: str) -> None:
    """Overlay 'title - page n of N' at the foot of every page (pages keep their own sizes)."""
    total = len(writer.pages)
    overlay = FPDF(unit="pt")
    overlay.set_auto_page_break(False)
    for n, page in enumerate(writer.pages, 1):
        w, h = float(page.mediabox.width), float(page.mediabox.height)
        overlay.add_page(format=(w, h))
        overlay.set_font("helvetica", "", 8)
        overlay.set_text_color(110)
        text = f"{title} - page {n} of {total}".encode("latin-1", "replace").decode("latin-1")
        overlay.set_xy(0, h - 24)
        overlay.cell(w, 10, text, align="C")
    stamps = PdfReader(io.BytesIO(bytes(overlay.output())))
    for page, stamp in zip(writer.pages, stamps.pages, strict=True):
        page.merge_page(stamp)
