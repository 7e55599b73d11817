"""One dashboard kernel's memory (RSS) with the demo's data and with a 1M-job history.

For each home: ``jobmanager dashboard`` (the real notebooks/dashboard.ipynb), a real Chromium signs in as an
administrator and opens every tab, then the page stays open with auto-refresh at 5 s for ``--watch`` seconds
(so the activity strip, the tab counts and the grids refresh several times); the kernel's RSS (the
``ipykernel_launcher`` whose connection file names the page's kernel) is sampled every second after sign-in.
Prints the RSS after sign-in and the peak, per home, and whether the peak stays under ``--limit`` MB.

Homes: ``--demo-home`` (default: made here by ``jobmanager demo --run-for 1 --no-dashboard``, real agents and
jobs) and ``--big-home`` (a home of ``--big`` demodata jobs; reused when it holds that many, else generated
as benchmarks/bench_dashboard.py does).

Usage: ``python benchmarks/bench_kernel_memory.py [--big-home DIR] [--watch 30] [--limit 300]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_dashboard import (  # noqa: E402
    BENCH_USER,
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    TIMEOUT_MS,
    TITLES_COUNTED_JS,
    Server,
    ensure_admin,
    make_home,
)


def demo_home(root: Path) -> Path:
    home = root / "demo-home"
    if not (home / "store.db").exists():
        subprocess.run([sys.executable, "-m", "jobmanager", "--home", str(home), "demo", "--run-for", "1",
                        "--no-dashboard"], check=True, capture_output=True, timeout=300)
    return home


def measure(browser: object, home: Path, log_dir: Path, watch: float) -> dict[str, float]:
    ensure_admin(home)
    server = Server.start(home, log_dir)
    context = browser.new_context(viewport={"width": 1440, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    try:
        page.goto(server.url, timeout=TIMEOUT_MS)
        page.get_by_placeholder("username").fill(BENCH_USER)
        page.get_by_placeholder("password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_function(TITLES_COUNTED_JS, timeout=TIMEOUT_MS)
        page.locator(".jm-activity-line").first.wait_for(timeout=TIMEOUT_MS)
        kernel_id = json.loads(page.locator("#jupyter-config-data").text_content() or "{}")["kernelId"]
        kernel = server.kernels()[kernel_id]
        after_sign_in = kernel.memory_info().rss
        peak = after_sign_in
        for title in ("Completed", "Scheduled", "Agents", "In Progress"):
            page.locator(".lm-TabBar-tab", has_text=title).click(no_wait_after=True)
            time.sleep(1.5)
            peak = max(peak, kernel.memory_info().rss)
        end = time.monotonic() + watch
        while time.monotonic() < end:  # auto-refresh (5 s) keeps reading: the strip, counts, the grid
            time.sleep(1)
            peak = max(peak, kernel.memory_info().rss)
        return {"sign-in": after_sign_in / 2**20, "peak": peak / 2**20}
    finally:
        context.close()
        server.stop()


def jobs_in(home: Path) -> int:
    import sqlite3

    conn = sqlite3.connect(f"file:{home / 'store.db'}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-home", type=Path)
    ap.add_argument("--big-home", type=Path, default=Path("/tmp/jmbench/home-1000000"))
    ap.add_argument("--big", type=int, default=1_000_000)
    ap.add_argument("--watch", type=float, default=30.0)
    ap.add_argument("--limit", type=float, default=300.0)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="jm-kernel-memory-"))
    homes = {"demo": args.demo_home or demo_home(work)}
    if not (args.big_home / "store.db").exists():
        args.big_home.parent.mkdir(parents=True, exist_ok=True)
        make_home(args.big_home, args.big)
    homes["big"] = args.big_home
    results = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for name, home in homes.items():
                results[name] = (jobs_in(home), measure(browser, home, work, args.watch))
        finally:
            browser.close()
    print(f"\ndashboard kernel RSS (load average {os.getloadavg()[0]:.1f}; {args.watch:.0f} s of 5 s auto-refresh)")
    ok = True
    for name, (jobs, r) in results.items():
        under = r["peak"] < args.limit
        ok &= under
        print(f"  {name:5} {jobs:>10,} jobs: {r['sign-in']:6.0f} MB after sign-in, {r['peak']:6.0f} MB peak "
              f"({'under' if under else 'OVER'} {args.limit:.0f} MB)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
