"""Reading a document's bytes and decoding its text, whatever the encoding.

Every problem a user can fix is a :class:`RenderError` whose message starts with the
document's name, so a task's one-line error says which file and why.
"""

from __future__ import annotations

import codecs
import errno
import os
from pathlib import Path


class RenderError(Exception):
    """A document that cannot be printed; the message names it and says why."""


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


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decode(data: bytes, label: str) -> str:
    """Text in UTF-8 (with or without a BOM), UTF-16/32 (BOM, or detected), or a legacy encoding
    such as cp1252/Latin-1 that charset-normalizer recognises; binary data is refused."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise RenderError(f"{label}: damaged {encoding.upper()} text (byte offset {exc.start})") from None
    head = data[:8192]
    if b"\x00" in head:  # UTF-16 without a BOM has a zero byte in every other place; anything else is binary
        even, odd = head[0::2].count(0), head[1::2].count(0)
        half = max(1, len(head) // 2)
        for encoding, zeros, others in (("utf-16-le", odd, even), ("utf-16-be", even, odd)):
            if zeros > 0.3 * half and others < 0.05 * half:
                try:
                    text = data.decode(encoding)
                except UnicodeDecodeError:
                    break
                sample = text[:4096]
                if sum(c.isprintable() or c in "\t\n\r\f" for c in sample) >= 0.95 * len(sample):
                    return text
                break
        raise RenderError(f"{label}: binary file, not text")
    if sum(b < 32 and b not in (9, 10, 12, 13, 27) for b in head) > len(head) // 100:
        raise RenderError(f"{label}: binary file, not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    western = _western(data)
    if western is not None:
        return western
    from charset_normalizer import from_bytes

    best = from_bytes(data[:1_000_000]).best()  # the head decides; the whole file is decoded below
    if best is None:
        raise RenderError(f"{label}: binary file, not text")
    try:
        return data.decode(best.encoding)
    except (UnicodeDecodeError, LookupError):
        raise RenderError(f"{label}: not text in any encoding recognised (guessed {best.encoding})") from None


def _western(data: bytes) -> str | None:
    """Windows' Western encoding (cp1252, a superset of Latin-1's printable range), when it reads as
    mostly-ASCII Latin text. A short text fits many single-byte encodings equally well for a detector
    (charset-normalizer calls "François “quoted” 5€" Baltic); Western text written on Windows is the
    usual case. Another script in its own code page (Cyrillic in cp1251...) decodes here as a run of
    accented letters, so it is left to charset-normalizer."""
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return None
    letters = [c for c in text if c.isalpha()]
    accented = sum(not c.isascii() for c in letters)
    return text if letters and accented <= 0.3 * len(letters) else None


def read_text(path: Path, label: str) -> str:
    return decode(read_bytes(path, label), label)
