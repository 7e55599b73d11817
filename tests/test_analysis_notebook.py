"""notebooks/analysis.ipynb runs headless, top to bottom, against a generated history."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobmanager import JobManager
from jobmanager.demo import DEMO_USERS
from jobmanager.history import demodata

from .backends import write_store

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("matplotlib")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "analysis.ipynb"


def _run(tmp_path: Path, home: Path, user: str, monkeypatch: pytest.MonkeyPatch) -> list:
    monkeypatch.setenv("JOBMANAGER_HOME", str(home))
    monkeypatch.setenv("JOBMANAGER_USER", user)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == 4
    for n, image in enumerate(images):  # every plot draws its data: coloured marks, not only axes and text
        panels = 2 if n == 2 else 1  # failure rate by agent: two plots side by side
        assert all(drawn >= 400 for drawn in coloured_pixels(image["data"]["image/png"], panels)), \
            f"plot {n + 1} of {len(images)} is empty for {user}"
    assert (tmp_path / "history-export.parquet").is_file()
    return nb.cells


def coloured_pixels(png_base64: str, panels: int = 1) -> list[int]:
    """How many strongly coloured pixels each of ``panels`` side-by-side parts of a plot has (axes, ticks and
    text are grey or black; bars, lines and markers are matplotlib's colours)."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(base64.b64decode(png_base64))).convert("RGB")).astype(int)
    coloured = (rgb.max(axis=2) - rgb.min(axis=2)) > 60
    return [int(part.sum()) for part in np.array_split(coloured, panels, axis=1)]


def _printed(cells: list, prefix: str) -> str:
    for c in cells:
        for o in c.get("outputs", []) if c.cell_type == "code" else []:
            for line in o.get("text", "").splitlines():
                if line.startswith(prefix):
                    return line
    raise AssertionError(f"no output line starts with {prefix!r}")


def _demo_users(home: Path) -> None:
    """The demo's users and the analysts' case (as ``jobmanager demo`` makes them), over a generated history
    in which one job in ten belongs to the analysts' case ACME-12."""
    with JobManager(home, user="admin") as admin:
        for name, (password, group) in DEMO_USERS.items():
            if name != "admin":
                admin.add_user(name, password, groups=[group])
        admin.add_case("analysts", "ACME-12")
    demodata.generate(home, jobs=300, days=5, seed=7)
    write_store(home, [("UPDATE jobs SET case_id = 'ACME-12' WHERE id - (id / 10) * 10 = 0", ())])


def test_analysis_notebook_runs(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _demo_users(home)
    cells = _run(tmp_path, home, "admin", monkeypatch)
    assert "CASE-" in _printed(cells, "cases in view:")  # an administrator sees every case


def test_analysis_notebook_runs_for_the_demo_analyst_and_shows_only_their_cases(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a fresh ``jobmanager demo`` (its real agents and jobs), as its analyst: every plot shows data."""
    home = tmp_path / "demo-home"
    demo = subprocess.run([sys.executable, "-m", "jobmanager", "--home", str(home), "demo", "--run-for", "1",
                           "--no-dashboard"], capture_output=True, text=True, timeout=240)
    assert demo.returncode == 0, demo.stderr
    cells = _run(tmp_path, home, "analyst", monkeypatch)
    seen = _printed(cells, "cases in view:").removeprefix("cases in view:").strip().split(", ")
    assert sorted(seen) == ["(no case)", "ACME-12"]
    import pandas as pd

    exported = pd.read_parquet(tmp_path / "history-export.parquet")
    assert set(exported["case"].dropna()) <= {"ACME-12"} and len(exported) > 0
    with JobManager(home, user="analyst") as analyst:
        assert set(analyst.history().case_id.dropna()) == {"ACME-12"}
