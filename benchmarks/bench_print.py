"""Print to PDF: pages per second and peak memory, the WeasyPrint renderer against the old fpdf2 one.

Two workloads, each rendered one document at a time and merged, as a print_to_pdf job does:
a 480,000-line word list (~5 MB) and 100 mixed documents (Markdown, text, CSV, HTML, images).
Each run is a child process; its peak RSS is sampled. The old renderer is the fpdf2 module as it
was before issue 15 (``git show 2d10948:jobmanager/jobtypes/pdf.py``), loaded into a temporary module.
    python benchmarks/bench_print.py [--lines 480000] [--mixed 100]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OLD_COMMIT = "2d10948"

CHILD = r"""
import importlib.util, sys, time
from pathlib import Path
kind, out_dir, old_module, docs = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4:]
start = time.perf_counter()
parts = []
if kind == "old":
    spec = importlib.util.spec_from_file_location("old_pdf", old_module)
    old = importlib.util.module_from_spec(spec); sys.modules["old_pdf"] = old; spec.loader.exec_module(old)
    for i, doc in enumerate(docs):
        out = out_dir / f"{i:04d}.pdf"
        try:
            old.render_document(Path(doc), out)
            parts.append(old.Part(Path(doc).name, out))
        except Exception as exc:  # the old renderer also raised fpdf2's own errors (e.g. in-page links)
            parts.append(old.Part(Path(doc).name, error=str(exc)))
    pages = old.merge(parts, out_dir / "merged.pdf", title="bench")
else:
    from jobmanager.printing import RenderError, render_document
    from jobmanager.printing.merge import Part, merge
    for i, doc in enumerate(docs):
        out = out_dir / f"{i:04d}.pdf"
        try:
            render_document(Path(doc), out)
            parts.append(Part(Path(doc).name, out))
        except RenderError as exc:
            parts.append(Part(Path(doc).name, error=str(exc)))
    pages = merge(parts, out_dir / "merged.pdf", title="bench")
failed = sum(p.pdf is None for p in parts)
print(pages, failed, time.perf_counter() - start)
"""


def word_list(path: Path, lines: int) -> Path:
    rng = random.Random(15)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "an", "el", "or", "ith", "und"]
    path.write_text("".join("".join(rng.choice(syllables) for _ in range(rng.randint(3, 6))) + "\n"
                            for _ in range(lines)), encoding="utf-8")
    return path


def mixed(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    docs = []
    for i in range(count):
        kind = i % 5
        if kind == 0:
            p = folder / f"doc{i}.md"
            p.write_text(f"# Report {i}\n\n" + f"Some **bold** text and a [link](#report-{i}).\n\n" * 20
                         + "| a | b |\n|---|---|\n" + "| cell | `code` |\n" * 30, encoding="utf-8")
        elif kind == 1:
            p = folder / f"doc{i}.txt"
            p.write_text("\n".join(f"line {n} of the notes, with café and naïve" for n in range(300)),
                         encoding="utf-8")
        elif kind == 2:
            p = folder / f"doc{i}.csv"
            p.write_text("id,name,amount,remarks\n" + "".join(f"{n},item {n},{n * 3.5},fine\n" for n in range(200)),
                         encoding="utf-8")
        elif kind == 3:
            p = folder / f"doc{i}.html"
            p.write_text("<h1>Page</h1>" + "<p>A paragraph of <i>HTML</i> text.</p>" * 40, encoding="utf-8")
        else:
            p = folder / f"doc{i}.png"
            Image.new("RGB", (800, 600), (i * 2 % 255, 120, 200)).save(p)
        docs.append(p)
    return docs


def run(kind: str, out_dir: Path, old_module: Path, docs: list[Path]) -> tuple[int, int, float, float]:
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, kind, str(out_dir), str(old_module), *map(str, docs)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    watch, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, watch.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    out = proc.stdout.read().split() if proc.stdout else []
    if proc.returncode or len(out) != 3:
        return 0, len(docs), 0.0, peak / 2**20
    return int(out[0]), int(out[1]), float(out[2]), peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=480_000)
    parser.add_argument("--mixed", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jm-bench-print-") as tmp:
        base = Path(tmp)
        old_module = base / "old_pdf.py"
        old_module.write_text(subprocess.run(["git", "show", f"{OLD_COMMIT}:jobmanager/jobtypes/pdf.py"], cwd=ROOT,
                                             capture_output=True, text=True, check=True).stdout)
        workloads = {}
        if args.lines:
            workloads["word list"] = [word_list(base / "words.txt", args.lines)]
        if args.mixed:
            workloads[f"{args.mixed} mixed"] = mixed(base / "mixed", args.mixed)
        print(f"{'workload':12} {'renderer':10} {'pages':>6} {'failed':>6} {'s':>7} {'pages/s':>8} {'peak MB':>8}"
              f" {'merged MB':>9}")
        for name, docs in workloads.items():
            for kind in ("old", "new"):
                out = base / f"{kind}-{name.replace(' ', '-')}"
                pages, failed, seconds, peak = run(kind, out, old_module, docs)
                merged = (out / "merged.pdf").stat().st_size / 2**20 if (out / "merged.pdf").exists() else 0
                rate = pages / seconds if seconds else 0
                print(f"{name:12} {'fpdf2' if kind == 'old' else 'weasyprint':10} {pages:6d} {failed:6d} "
                      f"{seconds:7.1f} {rate:8.1f} {peak:8.0f} {merged:9.1f}", flush=True)


if __name__ == "__main__":
    main()
