"""One document to one PDF, whatever its format: the dispatch by file type and each format's conversion.

Text, Markdown, HTML, tables (CSV/TSV, Excel), images and e-mails become HTML laid
out by WeasyPrint (:mod:`jobmanager.printing.layout`); PDFs pass through; office
documents go through LibreOffice when it is installed. Plain text that needs no
shaping (every character in DejaVu Sans Mono, no right-to-left or combining marks)
takes :mod:`jobmanager.printing.plaintext` instead, ~40 times faster on long files.
Long inputs render in pieces of pages that are joined at the end, so memory stays
bounded whatever the file's size.
"""

from __future__ import annotations

import base64
import csv
import email
import email.policy
import html as htmllib
import io
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from jobmanager.printing import plaintext
from jobmanager.printing.fonts import missing_characters
from jobmanager.printing.join import join_pdfs, page_count, release_memory
from jobmanager.printing.layout import MayRead, PageStyle, page, render_html
from jobmanager.printing.markdown import sanitize, to_html
from jobmanager.printing.read import RenderError, decode, read_bytes

TEXT_SUFFIXES = {".txt", ".text", ".log", ".ini", ".cfg", ".toml", ".json", ".yaml", ".yml", ".py", ".sql", ""}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
TABLE_SUFFIXES = {".csv", ".tsv"}
EXCEL_SUFFIXES = {".xlsx", ".xlsm"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".heif"}
HTML_SUFFIXES = {".html", ".htm"}
EMAIL_SUFFIXES = {".eml"}
MSG_SUFFIXES = {".msg"}
PDF_SUFFIXES = {".pdf"}
OFFICE_SUFFIXES = {".docx", ".doc", ".pptx", ".ppt", ".odt", ".ods", ".odp", ".rtf", ".xls"}
SUPPORTED = sorted((TEXT_SUFFIXES | MARKDOWN_SUFFIXES | TABLE_SUFFIXES | EXCEL_SUFFIXES | IMAGE_SUFFIXES
                    | HTML_SUFFIXES | EMAIL_SUFFIXES | MSG_SUFFIXES | PDF_SUFFIXES | OFFICE_SUFFIXES) - {""})

#: text lines laid out per piece (WeasyPrint holds a piece's whole layout in memory)
TEXT_PIECE_LINES = 1500
#: table rows laid out per piece
TABLE_PIECE_ROWS = 600
#: seconds LibreOffice may take for one document
OFFICE_TIMEOUT_S = 300

OnPage = Callable[[int], None]
Cancelled = Callable[[], bool]
_TAGS = re.compile(r"<[^>]+>")


@dataclass
class Rendered:
    """A printed document: its page count and what the reader should know (missing glyphs, refused images)."""

    pages: int
    warnings: list[str] = field(default_factory=list)


@dataclass
class Job:
    """What a conversion needs besides the file: its label, the page style and the job's reading rights."""

    path: Path
    out: Path
    label: str
    numbers: bool
    may_read: MayRead | None
    on_page: OnPage
    cancelled: Cancelled
    warnings: list[str] = field(default_factory=list)

    def style(self, **kw: object) -> PageStyle:
        # kw are PageStyle's other fields (the callers' literals); the dataclass checks their names
        return PageStyle(label=self.label, numbers=self.numbers, **kw)  # type: ignore[arg-type]

    def check_glyphs(self, text: str) -> None:
        missing = missing_characters(text)
        if missing:
            self.warnings.append(missing.message(self.label))

    def stop_if_cancelled(self) -> None:
        if self.cancelled():
            raise InterruptedError("cancelled")


def render_document(path: Path, out: Path, *, label: str | None = None, numbers: bool = True,
                    may_read: MayRead | None = None, on_page: OnPage | None = None,
                    cancelled: Cancelled | None = None) -> Rendered:
    """Print one document into ``out``. ``numbers=False`` leaves the footer free for endorsements;
    ``may_read`` says whether a file the document links (an image) may be read."""
    job = Job(path, out, label or path.name, numbers, may_read, on_page or (lambda n: None),
              cancelled or (lambda: False))
    try:
        pages = _dispatch(job)
    finally:
        release_memory()
    job.on_page(pages)
    return Rendered(pages, job.warnings)


def _dispatch(job: Job) -> int:
    suffix = job.path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return _image(job)
    if suffix in TABLE_SUFFIXES:
        return _csv(job)
    if suffix in EXCEL_SUFFIXES:
        return _excel(job)
    if suffix in MARKDOWN_SUFFIXES:
        text = decode(read_bytes(job.path, job.label), job.label)
        return _html(job, to_html(text))
    if suffix in HTML_SUFFIXES:
        return _html(job, sanitize(decode(read_bytes(job.path, job.label), job.label)))
    if suffix in EMAIL_SUFFIXES:
        return _email(job)
    if suffix in MSG_SUFFIXES:
        return _outlook(job)
    if suffix in PDF_SUFFIXES:
        return _pdf(job)
    if suffix in OFFICE_SUFFIXES:
        return _office(job)
    if suffix in TEXT_SUFFIXES:
        return _text(job, decode(read_bytes(job.path, job.label), job.label))
    raise RenderError(f"{job.label}: unsupported file type {suffix!r} (supported: {', '.join(SUPPORTED)})")


# -- pieces  ----------------------------------------------------------------------------------------------------
def _pieces(job: Job, bodies: Iterable[str], css: str = "", landscape: bool = False,
            single: bool = False) -> int:
    """Lay out each body as its own piece (numbered on from the last) and join them into ``job.out``."""
    with tempfile.TemporaryDirectory(prefix="jm-print-") as tmp:
        done: list[Path] = []
        pages = 0
        for i, body in enumerate(bodies):
            job.stop_if_cancelled()
            out = job.out if single else Path(tmp) / f"{i:05d}.pdf"
            style = job.style(landscape=landscape, total=single, first_page=pages + 1)
            result = render_html(page(body, job.label), out, label=job.label, style=style,
                                 folder=job.path.parent, may_read=job.may_read, extra_css=css)
            job.warnings += [f"{job.label}: {w}" for w in result.warnings]
            pages += result.pages
            done.append(out)
            job.on_page(pages)
        if not single:
            join_pdfs(done, job.out)
    return pages


def _html(job: Job, html: str) -> int:
    job.check_glyphs(htmllib.unescape(_TAGS.sub(" ", html)))
    return _pieces(job, [html], single=True)


# -- text  ------------------------------------------------------------------------------------------------------
def _text(job: Job, text: str) -> int:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if plaintext.can_print(text):
        return plaintext.render(text, job.out, label=job.label, numbers=job.numbers, on_page=job.on_page,
                                cancelled=job.stop_if_cancelled)
    job.check_glyphs(text)
    lines = text.split("\n")
    chunks = ["\n".join(lines[i:i + TEXT_PIECE_LINES]) for i in range(0, len(lines), TEXT_PIECE_LINES)] or [""]
    bodies = (f'<pre class="text" dir="auto">{htmllib.escape(c)}</pre>' for c in chunks)
    return _pieces(job, bodies, single=len(chunks) == 1)


# -- tables  ----------------------------------------------------------------------------------------------------
def _csv(job: Job) -> int:
    text = decode(read_bytes(job.path, job.label), job.label)
    if job.path.suffix.lower() == ".tsv":
        dialect: type[csv.Dialect] | csv.Dialect = csv.excel_tab
    else:
        try:
            dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel
    try:
        rows = [row for row in csv.reader(io.StringIO(text), dialect) if row]
    except csv.Error as exc:
        raise RenderError(f"{job.label}: not valid CSV: {exc}") from None
    return _table(job, [("", rows)])


def _excel(job: Job) -> int:
    try:
        import openpyxl
    except ImportError:
        raise RenderError(f"{job.label}: Excel files need openpyxl (pip install openpyxl)") from None
    data = read_bytes(job.path, job.label)
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # zipfile, XML and openpyxl errors on a damaged workbook
        raise RenderError(f"{job.label}: not a readable Excel workbook: {exc}") from None
    sheets = []
    for sheet in book.worksheets:
        rows = [["" if v is None else str(v) for v in row] for row in sheet.iter_rows(values_only=True)]
        while rows and not any(rows[-1]):
            rows.pop()
        sheets.append((sheet.title, rows))
    book.close()
    return _table(job, sheets)


def _widths(rows: list[list[str]]) -> list[float]:
    """Column widths in characters: the header's longest word (never broken) and most cells' length."""
    width = max(len(r) for r in rows)
    header = rows[0]
    out = []
    for c in range(width):
        cells = [len(r[c]) for r in rows[1:2001] if c < len(r)] or [0]
        head = max((len(w) for w in (header[c] if c < len(header) else "").split()), default=0)
        typical = sorted(cells)[int(len(cells) * 0.9)] if cells else 0
        out.append(min(max(head, typical, statistics.mean(cells) if cells else 0, 3), 40))
    return out


def _table(job: Job, sheets: list[tuple[str, list[list[str]]]]) -> int:
    job.check_glyphs("".join(c for _, rows in sheets for r in rows for c in r))
    all_rows = [r for _, rows in sheets for r in rows if r]
    widths = _widths(all_rows) if all_rows else [10.0]
    total = sum(widths) + 1.2 * len(widths)
    landscape = total > 95  # characters of 8pt text on a portrait A4 line
    css = "table.data { table-layout: fixed; width: 100%; } table.data th { overflow-wrap: normal; }"
    if total > 140:
        css += " table.data { font-size: 6.5pt; }"

    def bodies() -> Iterable[str]:
        for title, rows in sheets:
            rows = [r for r in rows if any(r)]
            heading = f"<h2>{htmllib.escape(title)}</h2>" if title else ""
            if not rows:
                yield heading + "<p><i>(empty table)</i></p>"
                continue
            n = max(len(r) for r in rows)
            sheet_widths = (_widths(rows) + [3.0] * n)[:n]
            cols = "".join(f'<col style="width:{w / sum(sheet_widths) * 100:.2f}%">' for w in sheet_widths)
            head = "".join(f"<th>{htmllib.escape(c)}</th>" for c in rows[0] + [""] * (n - len(rows[0])))
            body = rows[1:] or [[""] * n]
            for start in range(0, len(body), TABLE_PIECE_ROWS):
                trs = "".join("<tr>" + "".join(f"<td>{htmllib.escape(c)}</td>" for c in r + [""] * (n - len(r)))
                              + "</tr>" for r in body[start:start + TABLE_PIECE_ROWS])
                yield (f'{heading if start == 0 else ""}<table class="data"><colgroup>{cols}</colgroup>'
                       f"<thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")

    pieces = list(bodies())
    return _pieces(job, pieces, css=css, landscape=landscape, single=len(pieces) == 1)


# -- images  ----------------------------------------------------------------------------------------------------
def _image(job: Job) -> int:
    from PIL import Image, UnidentifiedImageError

    try:  # HEIC/HEIF when pillow-heif is installed
        from pillow_heif import register_heif_opener  # type: ignore[import-not-found]  # optional, may be absent

        register_heif_opener()
    except ImportError:
        pass
    data = read_bytes(job.path, job.label)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()  # catches truncated and damaged files that open() alone accepts
        img: Image.Image = Image.open(io.BytesIO(data))
        img.load()
    except UnidentifiedImageError:
        suffix = job.path.suffix.lower()
        if suffix in (".heic", ".heif"):
            raise RenderError(f"{job.label}: HEIC images need pillow-heif (pip install pillow-heif)") from None
        raise RenderError(f"{job.label}: corrupt image: cannot identify image file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise RenderError(f"{job.label}: corrupt image: {exc}") from None
    if img.format == "JPEG" and img.mode in ("RGB", "L"):
        mime, payload = "image/jpeg", data
    else:
        if img.mode not in ("RGB", "RGBA", "L", "LA"):
            img = img.convert("RGBA" if "A" in img.getbands() or img.mode == "P" else "RGB")
        buf = io.BytesIO()
        img.save(buf, "PNG")
        mime, payload = "image/png", buf.getvalue()
    landscape = img.width > img.height
    src = f"data:{mime};base64,{base64.b64encode(payload).decode()}"
    room = "175mm" if landscape else "260mm"
    css = f"img.fit {{ display: block; margin: 0 auto; max-width: 100%; max-height: {room}; object-fit: contain; }}"
    return _pieces(job, [f'<img class="fit" src="{src}" alt="{htmllib.escape(job.label)}">'], css=css,
                   landscape=landscape, single=True)


# -- PDFs and office documents  ---------------------------------------------------------------------------------
def _pdf(job: Job) -> int:
    data = read_bytes(job.path, job.label)
    pages = page_count(data, job.label)
    job.out.parent.mkdir(parents=True, exist_ok=True)
    job.out.write_bytes(data)
    return pages


def office_command() -> str | None:
    return shutil.which("libreoffice") or shutil.which("soffice")


def _office(job: Job) -> int:
    office = office_command()
    if office is None:
        raise RenderError(f"{job.label}: office documents need LibreOffice, which is not installed on this agent "
                          "(Debian: apt-get install libreoffice-writer-nogui libreoffice-calc-nogui "
                          "libreoffice-impress-nogui)")
    data = read_bytes(job.path, job.label)
    with tempfile.TemporaryDirectory(prefix="jm-office-") as tmp:
        src = Path(tmp) / ("document" + job.path.suffix.lower())
        src.write_bytes(data)
        profile = Path(tmp) / "profile"  # its own profile: agents may convert several documents at once
        try:
            proc = subprocess.run([office, f"-env:UserInstallation={profile.as_uri()}", "--headless",
                                   "--convert-to", "pdf", "--outdir", tmp, str(src)],
                                  capture_output=True, text=True, timeout=OFFICE_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise RenderError(f"{job.label}: LibreOffice took more than {OFFICE_TIMEOUT_S} s") from None
        result = Path(tmp) / "document.pdf"
        if not result.is_file():
            why = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no PDF written"]
            raise RenderError(f"{job.label}: LibreOffice could not convert it: {why[0][:200]}")
        pdf = result.read_bytes()
    pages = page_count(pdf, job.label)
    job.out.parent.mkdir(parents=True, exist_ok=True)
    job.out.write_bytes(pdf)
    return pages


# -- e-mail ---------------------------------------------------------------------------------------------------
def _email(job: Job) -> int:
    data = read_bytes(job.path, job.label)
    msg = email.message_from_bytes(data, policy=email.policy.default)
    if not isinstance(msg, EmailMessage) or not (msg.keys() or msg.get_payload()):
        raise RenderError(f"{job.label}: not an e-mail message")
    rows = "".join(f"<tr><th>{name}</th><td>{htmllib.escape(str(msg.get(name, '')))}</td></tr>"
                   for name in ("From", "To", "Cc", "Date", "Subject") if msg.get(name))
    body_part = msg.get_body(preferencelist=("html", "plain"))
    if body_part is None:
        body = "<p><i>(no message text)</i></p>"
    else:
        content = body_part.get_content()
        body = (sanitize(content) if body_part.get_content_type() == "text/html"
                else f'<pre class="text" dir="auto">{htmllib.escape(content)}</pre>')
    attachments = [(a.get_filename() or "", _payload(a)) for a in msg.iter_attachments() if a.get_filename()]
    return _mail(job, rows, body, attachments)


def _outlook(job: Job) -> int:
    """An Outlook ``.msg`` (an OLE compound file) through extract-msg: the same page as an ``.eml``."""
    try:
        import extract_msg
    except ImportError:
        raise RenderError(f"{job.label}: Outlook .msg files need extract-msg (pip install extract-msg)") from None
    data = read_bytes(job.path, job.label)
    try:
        msg = extract_msg.openMsg(data, delayAttachments=False)
    except Exception as exc:  # olefile and extract-msg raise assorted errors on a damaged or foreign file
        raise RenderError(f"{job.label}: not a readable Outlook message: {str(exc).splitlines()[0][:200]}") from None
    try:
        headers = [("From", getattr(msg, "sender", None)), ("To", getattr(msg, "to", None)),
                   ("Cc", getattr(msg, "cc", None)), ("Date", getattr(msg, "date", None)),
                   ("Subject", getattr(msg, "subject", None))]
        rows = "".join(f"<tr><th>{name}</th><td>{htmllib.escape(str(value))}</td></tr>"
                       for name, value in headers if value)
        text_body = getattr(msg, "body", None)
        # the HTML body only when there is no plain one: extract-msg may build it from the message's RTF
        # (RTFDE), which costs time and raises on a malformed RTF
        html_body = None if text_body else getattr(msg, "htmlBody", None)
        if text_body:
            body = f'<pre class="text" dir="auto">{htmllib.escape(text_body.rstrip(chr(0)))}</pre>'
        elif html_body:
            body = sanitize(html_body.decode("utf-8", "replace") if isinstance(html_body, bytes) else str(html_body))
        else:
            body = "<p><i>(no message text)</i></p>"
        attachments: list[tuple[str, bytes | None]] = []
        for n, att in enumerate(getattr(msg, "attachments", []), 1):
            name = (getattr(att, "longFilename", None) or getattr(att, "shortFilename", None)
                    or getattr(att, "name", None) or f"attachment-{n}")
            payload = att.data
            attachments.append((str(name).rstrip("\0"), payload if isinstance(payload, bytes) else None))
    except Exception as exc:  # extract-msg raises its own errors (a malformed RTF, a broken stream) lazily
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise RenderError(f"{job.label}: not a readable Outlook message: {first}") from None
    finally:
        msg.close()
    return _mail(job, rows, body, attachments)


#: e-mails attached to e-mails are printed this many levels deep; deeper ones are named in a warning
MAX_MAIL_NESTING = 3


class _Nesting(threading.local):
    depth = 0


_NESTING = _Nesting()


def _short(name: str, limit: int = 120) -> str:
    """An attachment's file name within ``limit`` bytes (file systems allow 255; CJK names take 3 a letter),
    its suffix kept so the right reader still prints it."""
    if len(name.encode()) <= limit:
        return name
    suffix = Path(name).suffix if len(Path(name).suffix.encode()) <= 16 else ""
    stem = name[: len(name) - len(suffix)]
    while len((stem + suffix).encode()) > limit:
        stem = stem[:-1]
    return stem + suffix


def _mail(job: Job, rows: str, body: str, attachments: Sequence[tuple[str, bytes | None]]) -> int:
    """The message page (headers, body, the list of attachments), then each attachment printed after it.
    An attachment that cannot print (or an embedded message, which has no bytes of its own) is a warning."""
    listing = "".join(f"<li>{htmllib.escape(name)}"
                      + (f" ({len(data)} bytes)" if data is not None else " (embedded item, not printed)")
                      + "</li>" for name, data in attachments)
    html = (f'<table class="headers">{rows}</table>{body}'
            + (f"<h3>Attachments ({len(attachments)})</h3><ol>{listing}</ol>" if attachments else ""))
    job.check_glyphs(htmllib.unescape(_TAGS.sub(" ", html)))
    if not attachments:
        return _pieces(job, [html], single=True)
    from jobmanager.home import safe_name

    with tempfile.TemporaryDirectory(prefix="jm-mail-") as tmp:
        message_pdf = Path(tmp) / "message.pdf"
        sub = Job(job.path, message_pdf, job.label, job.numbers, job.may_read, job.on_page, job.cancelled,
                  job.warnings)
        parts = [message_pdf]
        _pieces(sub, [html], single=True)
        for n, (filename, data) in enumerate(attachments, 1):
            name = _short(safe_name(filename or f"attachment-{n}") or f"attachment-{n}")
            if data is None:
                job.warnings.append(f"attachment not printed: {job.label} / {name}: an embedded item")
                continue
            if _NESTING.depth >= MAX_MAIL_NESTING:  # a message in a message in a message...: stop there
                job.warnings.append(f"attachment not printed: {job.label} / {name}: "
                                    f"messages nested more than {MAX_MAIL_NESTING} deep")
                continue
            folder = Path(tmp) / f"att{n}"
            folder.mkdir()
            src = folder / name
            src.write_bytes(data)
            out = Path(tmp) / f"att{n}.pdf"

            def beside(p: Path, folder: Path = folder) -> bool:  # an attachment reads nothing beside itself
                return p.parent == folder

            _NESTING.depth += 1
            try:
                result = render_document(src, out, label=f"{job.label} / {name}", numbers=job.numbers,
                                         may_read=beside, cancelled=job.cancelled)
            except RenderError as exc:
                job.warnings.append(f"attachment not printed: {exc}")
                continue
            finally:
                _NESTING.depth -= 1
            job.warnings += result.warnings
            parts.append(out)
        return join_pdfs(parts, job.out)


def _payload(part: EmailMessage) -> bytes:
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""
