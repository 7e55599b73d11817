"""The fonts documents print with, and which characters no installed font can draw.

The CSS font stack names Debian's Noto fonts (fonts-noto-core, fonts-noto-cjk,
fonts-noto-color-emoji; ``.ci/system-deps`` installs them). Pango falls back to any
font fontconfig knows for a character missing from the stack, so a character is
only lost when *no* installed font has it: :func:`missing_characters` checks each
distinct character against the union of the charsets fontconfig reports
(``fc-list``, read once per process; fontconfig caches them, so it takes ~0.2 s).

Emoji are left to that fallback (fontconfig picks Noto Color Emoji, the one font that
has them): naming the emoji font in the stack makes Pango 1.50 draw every digit with it.
"""

from __future__ import annotations

import bisect
import shutil
import subprocess
import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass

SANS = ('"Noto Sans", "DejaVu Sans", "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK KR", '
        '"Noto Sans Arabic", "Noto Sans Hebrew", "Noto Sans Symbols", "Noto Sans Symbols 2", sans-serif')
MONO = ('"DejaVu Sans Mono", "Noto Sans Mono", "Noto Sans Mono CJK SC", "Noto Sans Arabic", '
        '"Noto Sans Hebrew", monospace')

#: characters that draw nothing themselves (controls, joiners, variation selectors, spaces)
_INVISIBLE = {"Cc", "Cf", "Zs", "Zl", "Zp"}

_lock = threading.Lock()
_ranges: tuple[list[int], list[int]] | None = None


def _load_ranges() -> tuple[list[int], list[int]]:
    """Sorted, merged (starts, ends) of every code point some installed font maps."""
    spans: list[tuple[int, int]] = []
    fc_list = shutil.which("fc-list")
    if fc_list:
        out = subprocess.run([fc_list, "--format=%{charset}\\n"], capture_output=True, text=True,
                             timeout=60, check=False).stdout
        for token in out.split():
            first, _, last = token.partition("-")
            try:
                spans.append((int(first, 16), int(last or first, 16)))
            except ValueError:
                continue
    spans.sort()
    starts: list[int] = []
    ends: list[int] = []
    for lo, hi in spans:
        if ends and lo <= ends[-1] + 1:
            ends[-1] = max(ends[-1], hi)
        else:
            starts.append(lo)
            ends.append(hi)
    return starts, ends


def _covered() -> tuple[list[int], list[int]]:
    global _ranges
    with _lock:
        if _ranges is None:
            _ranges = _load_ranges()
        return _ranges


def drawable(char: str) -> bool:
    starts, ends = _covered()
    cp = ord(char)
    i = bisect.bisect_right(starts, cp) - 1
    return i >= 0 and cp <= ends[i]


@dataclass
class Missing:
    """Characters of a document that no installed font can draw."""

    count: int  # occurrences
    examples: list[str]  # a few distinct ones, as U+XXXX

    def message(self, label: str) -> str:
        return (f"{label}: {self.count} character(s) no installed font can draw were left blank "
                f"({', '.join(self.examples)})")


def missing_characters(text: str) -> Missing | None:
    """The characters of ``text`` that would print as blanks, or None when every one has a font."""
    if text.isascii():
        return None
    counts = Counter(text)
    bad = {c: n for c, n in counts.items()
           if not c.isascii() and unicodedata.category(c) not in _INVISIBLE and not drawable(c)}
    if not bad:
        return None
    examples = [f"U+{ord(c):04X}" for c in sorted(bad)[:5]]
    return Missing(sum(bad.values()), examples)
