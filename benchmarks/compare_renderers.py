"""WeasyPrint against Chromium's print-to-PDF on a few hard documents: correctness, time, peak memory.

Not part of ``make bench`` (it needs /usr/bin/chromium). Each renderer runs in a child process so its
peak RSS is measured alone (the summed RSS of its process tree, sampled).
    python benchmarks/compare_renderers.py
The numbers quoted in the README's development section come from this script.
"""

from __future__ import annotations

import html
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from pypdf import PdfReader

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CSS = """@page { size: A4; margin: 15mm; @bottom-center { content: "page " counter(page) " of " counter(pages); } }
body { font-family: "Noto Sans", "Noto Sans CJK SC", "Noto Sans Arabic", "Noto Sans Hebrew", sans-serif;
       font-size: 10.5pt; } pre { font-family: "DejaVu Sans Mono", monospace; font-size: 9pt; }"""
DOCS = {
    "cjk": ("<h1>中文说明</h1>"
            + "<p>这是一个用于测试的中文段落。日本語のテキストも含まれています。한국어 문장도 있습니다.</p>" * 40,
            "中文日本語한국어"),
    "arabic": ("<h1 dir=rtl>مرحبا بالعالم</h1>"
               + "<p dir=rtl>هذا نص عربي للاختبار. שלום עולם, זהו טקסט בעברית. این یک متن فارسی است.</p>" * 40,
               "عربي"),
    "emoji": ("<h1>Emoji</h1><table>" + "<tr><td>😀 grinning</td><td>🎉 party</td><td>👍🏽 thumbs</td></tr>" * 60
              + "</table>", "😀🎉"),
    "long-text": ("<pre>" + html.escape("\n".join(f"{i:06d} the quick brown fox jumps over the lazy dog"
                                                   for i in range(5_000))) + "</pre>", "000042"),
}


def page(body: str) -> str:
    return f"<!doctype html><html><head><meta charset=utf-8><style>{CSS}</style></head><body>{body}</body></html>"


def run(cmd: list[str]) -> tuple[float, float]:
    """Seconds, and the peak of the process tree's summed RSS in MB (sampled every 20 ms)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.02)
    if proc.returncode:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode})")
    return time.perf_counter() - start, peak / 2**20


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="jm-compare-"))
    print(f"{'document':10} {'renderer':9} {'s':>6} {'MB':>6} {'pages':>5} {'KB':>6}  text found")
    for name, (body, probe) in DOCS.items():
        src = tmp / f"{name}.html"
        src.write_text(page(body), encoding="utf-8")
        for renderer in ("weasyprint", "chromium"):
            out = tmp / f"{name}-{renderer}.pdf"
            if renderer == "weasyprint":
                cmd = [sys.executable, "-c", "import sys, weasyprint; "
                       "weasyprint.HTML(filename=sys.argv[1]).write_pdf(sys.argv[2])", str(src), str(out)]
            else:
                cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
                       f"--print-to-pdf={out}", src.as_uri()]
            seconds, mb = run(cmd)
            reader = PdfReader(str(out))
            text = "".join(p.extract_text() or "" for p in reader.pages)
            found = all(c in text for c in probe)
            print(f"{name:10} {renderer:9} {seconds:6.2f} {mb:6.0f} {len(reader.pages):5d} "
                  f"{out.stat().st_size / 1024:6.0f}  {found}")
    print(f"PDFs in {tmp}")


if __name__ == "__main__":
    main()
