"""Joining PDFs (qpdf through pikepdf): pages are copied, never re-drawn, and the result is written
with object streams, so a joined file is about the size of its parts and memory stays small."""

from __future__ import annotations

import io
from pathlib import Path

from jobmanager.printing.read import RenderError


def save(pdf: object, out: Path) -> None:
    """Write atomically (a reader never sees a half-written file), compactly."""
    import pikepdf

    assert isinstance(pdf, pikepdf.Pdf)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    pdf.save(tmp, object_stream_mode=pikepdf.ObjectStreamMode.generate, compress_streams=True,
             linearize=False)
    tmp.replace(out)


def join_pdfs(parts: list[Path], out: Path) -> int:
    """Concatenate ``parts`` into ``out``; returns the page count."""
    import pikepdf

    with pikepdf.new() as joined:
        sources = []
        try:
            for part in parts:
                src = pikepdf.open(part)
                sources.append(src)
                joined.pages.extend(src.pages)
            pages = len(joined.pages)
            save(joined, out)
        finally:
            for src in sources:
                src.close()
    return pages


def page_count(data: bytes, label: str) -> int:
    """Pages of a PDF given as bytes; a damaged or password-protected one is a RenderError."""
    import pikepdf

    try:
        with pikepdf.open(io.BytesIO(data)) as pdf:
            return len(pdf.pages)
    except pikepdf.PasswordError:
        raise RenderError(f"{label}: the PDF is password-protected") from None
    except pikepdf.PdfError as exc:
        raise RenderError(f"{label}: damaged PDF: {str(exc).splitlines()[0][:200]}") from None


def release_memory() -> None:
    """Hand freed memory back to the system after a big document (glibc keeps it otherwise, and an
    agent's RSS would stay at its high-water mark for the next task)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
