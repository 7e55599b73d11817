"""notebooks/analysis.ipynb runs headless, top to bottom, against a generated history."""

from __future__ import annotations

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
    assert len(images) >= 3
    assert (tmp_path / "history-export.parquet").is_file()
    return nb.cells


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
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _demo_users(home)
    cells = _run(tmp_path, home, "analyst", monkeypatch)
    seen = _printed(cells, "cases in view:").removeprefix("cases in view:").strip().split(", ")
    assert sorted(seen) == ["(no case)", "ACME-12"]
    import pandas as pd

    exported = pd.read_parquet(tmp_path / "history-export.parquet")
    assert set(exported["case"].dropna()) <= {"ACME-12"} and len(exported) > 0
    with JobManager(home, user="analyst") as analyst:
        assert set(analyst.history().case_id.dropna()) == {"ACME-12"}
