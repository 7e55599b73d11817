"""The job's merged PDF: a cover page listing every document, the documents, and optional endorsements.

Endorsements are what document-review platforms print on every page: a line from a
template ("{case} | {document} | page {page} of {pages} | {control}") with a sequential
control number (Bates numbering: ACME000001...) running on across the job's documents
in order. Only the finishing step knows every document's page count, so the line is
stamped there: the line's few drawing operators are appended to the page's own content
stream (Helvetica, or a DejaVu Sans subset shared by a batch of pages when the text needs it), so no object is added per
page and nothing is re-drawn. On the 7,500-page word list the endorsed merged.pdf is
~1.05x the document's own PDF (documents render without their own page numbers when
endorsed, so nothing overlaps).
"""

from __future__ import annotations

import html as htmllib
import string
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jobmanager.printing.join import release_memory, save
from jobmanager.printing.layout import PageStyle, page, render_html
from jobmanager.printing.plaintext import fonts, fpdf_class

#: the fields an endorsement template may use
FIELDS = {"case", "document", "page", "pages", "control", "job_page", "job_pages", "title"}


@dataclass
class Part:
    """One document of the merged PDF: its rendered file, or why it failed, and what to warn about."""

    label: str
    pdf: Path | None = None
    error: str | None = None
    warning: str | None = None
    pages: int = 0
    first_page: int = 0
    first_control: int = 0


@dataclass
class Endorsement:
    """The line stamped on every document page of the merged PDF."""

    template: str = "{document} | page {page} of {pages} | {control}"
    prefix: str = ""
    start: int = 1
    digits: int = 6
    case: str = ""
    header: bool = False  # at the top of the page instead of the foot

    def control(self, n: int) -> str:
        return f"{self.prefix}{n:0{self.digits}d}"


def template_error(template: str) -> str | None:
    """Why ``template`` is not a usable endorsement template, or None."""
    try:
        names = {f for _, f, spec, conv in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        return f"endorsement template {template!r}: {exc}"
    unknown = sorted(n for n in names if n not in FIELDS)
    if unknown or any(not n for n in names):
        return (f"endorsement template {template!r}: unknown field(s) {', '.join(unknown) or '{}'}; "
                f"use {', '.join('{' + f + '}' for f in sorted(FIELDS))}")
    return None


def merge(parts: list[Part], out: Path, *, title: str, endorse: Endorsement | None = None) -> int:
    """Write ``out``: the cover, then every printed part (endorsed when asked); returns its page count."""
    import pikepdf

    sources: dict[int, pikepdf.Pdf] = {}
    try:
        for i, part in enumerate(parts):
            if part.pdf is not None:
                try:
                    sources[i] = pikepdf.open(part.pdf)
                    part.pages = len(sources[i].pages)
                except Exception as exc:  # a lost or damaged intermediate file: report it on the cover
                    part.pdf, part.error = None, f"rendered file unusable: {exc}"
        control = endorse.start if endorse else 0
        for part in parts:
            part.first_control = control if part.pdf else 0
            control += part.pages if part.pdf else 0
        with tempfile.TemporaryDirectory(prefix="jm-cover-") as tmp:
            cover_file = Path(tmp) / "cover.pdf"
            cover_pages = 1
            while True:  # the cover's own length moves every page number after it
                n = cover_pages + 1
                for part in parts:
                    part.first_page = n if part.pdf else 0
                    n += part.pages if part.pdf else 0
                pages = render_html(_cover(parts, title, endorse), cover_file, label=title,
                                    style=PageStyle(label=title, total=False)).pages
                if pages == cover_pages:
                    break
                cover_pages = pages
            with pikepdf.open(cover_file) as cover:
                merged = _assemble(parts, sources, cover)
                if endorse:
                    _endorse(merged, parts, endorse, title, first=cover_pages)
                with merged.open_outline() as outline:
                    outline.root.clear()
                    for part in parts:
                        if part.pdf is not None:
                            outline.root.append(pikepdf.OutlineItem(part.label, part.first_page - 1))
                merged.docinfo["/Title"] = title
                merged.docinfo["/Creator"] = "jobmanager print_to_pdf"
                save(merged, out)
                return len(merged.pages)
    finally:
        for src in sources.values():
            src.close()


def _assemble(parts: list[Part], sources: dict[int, Any], cover: Any) -> Any:
    """The cover and the parts in order, built on the longest part's own file: its pages are not copied
    (a copy costs qpdf ~9 KB of memory a page; the word list's 7,500 pages would take ~70 MB)."""
    import pikepdf

    if not sources:
        merged = pikepdf.new()
        merged.pages.extend(cover.pages)
        return merged
    base = max(sources, key=lambda i: parts[i].pages)
    merged = sources[base]
    renamed = {i: _own_destinations(i, sources[i]) for i in sources if i != base}
    at = 0
    for sheet in cover.pages:
        merged.pages.insert(at, sheet)
        at += 1
    for i in sorted(sources):
        if i < base:
            for sheet in sources[i].pages:
                merged.pages.insert(at, sheet)
                at += 1
        elif i > base:
            merged.pages.extend(sources[i].pages)
    if any(renamed.values()):  # each copied page's targets are the copies qpdf made of its pages, once each
        if "/Names" not in merged.Root:
            merged.Root.Names = pikepdf.Dictionary()
        if "/Dests" not in merged.Root.Names:
            merged.Root.Names.Dests = pikepdf.NameTree.new(merged).obj
        tree = pikepdf.NameTree(merged.Root.Names.Dests)
        for dests in renamed.values():
            for name, target in dests.items():
                try:
                    if isinstance(target, pikepdf.Dictionary):  # the older form: << /D [page /XYZ ...] >>
                        target = target.get("/D", pikepdf.Array())
                    tree[name] = pikepdf.Array([merged.copy_foreign(x) if getattr(x, "is_indirect", False)
                                                else x for x in target])
                except Exception:  # noqa: BLE001 - a malformed target in a passed-through PDF: that link only
                    continue
    return merged


def _own_destinations(index: int, src: Any) -> dict[str, Any]:
    """Give a document's named destinations (its in-page links: a table of contents, ``#install``) names of
    its own before its pages join the merged PDF, and return them: two READMEs both have an "install"
    anchor, and each one's link must reach its own (pages copied alone keep no names at all)."""
    import pikepdf

    prefix = f"jm-doc{index}-"
    try:
        names = src.Root.get("/Names")
        if not isinstance(names, pikepdf.Dictionary) or "/Dests" not in names:
            return {}
        dests = {prefix + str(name): target for name, target in pikepdf.NameTree(names.Dests).items()}
        links = []
        for sheet in src.pages:
            for annot in sheet.obj.get("/Annots", []):
                if not isinstance(annot, pikepdf.Dictionary):  # a passed-through PDF may hold anything here
                    continue
                action = annot.get("/A")
                if isinstance(annot.get("/Dest"), pikepdf.String):
                    links.append((annot, "/Dest"))
                elif (isinstance(action, pikepdf.Dictionary) and action.get("/S") == "/GoTo"
                      and isinstance(action.get("/D"), pikepdf.String)):
                    links.append((action, "/D"))
    except Exception:  # noqa: BLE001 - a malformed name tree: its links stay as they are, the merge goes on
        return {}
    for holder, key in links:
        holder[key] = pikepdf.String(prefix + str(holder[key]))
    return dests


def _cover(parts: list[Part], title: str, endorse: Endorsement | None) -> str:
    failed = [p for p in parts if p.pdf is None]
    warned = [p for p in parts if p.pdf is not None and p.warning]
    summary = f"{len(parts)} documents, {len(parts) - len(failed)} printed"
    summary += f", {len(failed)} failed" if failed else ""
    summary += f", {len(warned)} with warnings" if warned else ""
    rows = []
    for n, p in enumerate(parts, 1):
        if p.pdf:
            pages = str(p.first_page) if p.pages == 1 else f"{p.first_page}-{p.first_page + p.pages - 1}"
            status = f"printed with warnings: {p.warning}" if p.warning else "printed"
        else:
            pages, status = "-", f"FAILED: {p.error or 'not printed'}"
        controls = ""
        if endorse:
            controls = (f"<td>{endorse.control(p.first_control)}-{endorse.control(p.first_control + p.pages - 1)}</td>"
                        if p.pdf and p.pages else "<td>-</td>")
        rows.append(f"<tr><td>{n}</td><td>{htmllib.escape(p.label)}</td><td>{pages}</td>{controls}"
                    f"<td>{htmllib.escape(status)}</td></tr>")
    control_head = "<th>Control numbers</th>" if endorse else ""
    case = f"<p>Case: {htmllib.escape(endorse.case)}</p>" if endorse and endorse.case else ""
    body = (f"<h1>{htmllib.escape(title)}</h1>{case}<p>{summary}. Generated {datetime.now():%Y-%m-%d %H:%M}.</p>"
            f"<table class='cover'><thead><tr><th>#</th><th>Document</th><th>Pages</th>{control_head}"
            f"<th>Status</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    return page(body, title, "table.cover { width: 100%; font-size: 9.5pt; } "
                             "table.cover td { overflow-wrap: anywhere; }")


#: endorsement lines drawn per fpdf2 overlay (one at a time in memory)
STAMP_BATCH = 500


def _endorse(merged: object, parts: list[Part], endorse: Endorsement, title: str, first: int) -> None:
    """Stamp the endorsement line on every document page (not the cover) of ``merged``."""
    import pikepdf

    assert isinstance(merged, pikepdf.Pdf)
    total = len(merged.pages) - first
    lines = []  # (page index in merged, text)
    for part in parts:
        if not part.pdf:
            continue
        for k in range(part.pages):
            job_page = part.first_page - first + k
            lines.append((part.first_page - 1 + k, endorse.template.format(
                case=endorse.case, document=part.label, page=k + 1, pages=part.pages,
                control=endorse.control(part.first_control + k), job_page=job_page, job_pages=total, title=title)))
    for batch, start in enumerate(range(0, len(lines), STAMP_BATCH)):
        _stamp_batch(merged, lines[start:start + STAMP_BATCH], endorse.header, f"/JMEndorse{batch}")
        release_memory()


def _stamp_batch(merged: object, lines: list[tuple[int, str]], header: bool, font_name: str) -> None:
    """Append each line's drawing to its page's content stream (the page's own drawing wrapped in q...Q):
    no new object per page, and the font is one subset per batch under ``font_name``."""
    import io
    import zlib

    import pikepdf

    assert isinstance(merged, pikepdf.Pdf)
    latin = all(_latin1(text) for _, text in lines)
    found = None if latin else fonts()  # Helvetica needs no font file parsed or embedded
    overlay = fpdf_class()(unit="pt")
    overlay.set_auto_page_break(False)
    if found:
        overlay.add_font("stamp", "", str(found[1]))
    boxes = []
    for index, text in lines:
        box = [float(v) for v in merged.pages[index].mediabox]
        w, h = box[2] - box[0], box[3] - box[1]
        overlay.add_page(format=(w, h))
        overlay.set_font("stamp" if found else "helvetica", "", 8)
        overlay.set_text_color(60)
        if not found:
            text = text.encode("latin-1", "replace").decode("latin-1")
        overlay.set_xy(0, 14 if header else h - 26)
        overlay.cell(w, 10, text, align="C")
        boxes.append((box[0], box[1]))
    with pikepdf.open(io.BytesIO(bytes(overlay.output()))) as stamps:
        del overlay
        font, name = None, ""
        for (index, _), (x0, y0), stamp in zip(lines, boxes, stamps.pages, strict=True):
            if font is None:
                name, font = next(iter(stamp.Resources.Font.items()))
                font = merged.copy_foreign(font)
            data = _content(stamp.obj).replace(f"{name} ".encode(), f"{font_name} ".encode())
            move = f"1 0 0 1 {x0:g} {y0:g} cm\n".encode() if (x0 or y0) else b""
            target = merged.pages[index]
            drawing = b"q\n" + _content(target.obj) + b"\nQ\nq\n" + move + data + b"\nQ\n"
            stream = pikepdf.Stream(merged, b"")
            stream.write(zlib.compress(drawing), filter=pikepdf.Name.FlateDecode)
            target.obj.Contents = stream
            resources = target.obj.get("/Resources")
            if resources is None:
                target.obj.Resources = pikepdf.Dictionary()
                resources = target.obj.Resources
            if "/Font" not in resources:
                resources.Font = pikepdf.Dictionary()
            resources.Font[font_name] = font


def _content(page: object) -> bytes:
    import pikepdf

    assert isinstance(page, pikepdf.Dictionary)
    contents = page.get("/Contents")
    if contents is None:
        return b""
    if isinstance(contents, pikepdf.Array):
        return b"\n".join(s.read_bytes() for s in contents)
    return contents.read_bytes()


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True
