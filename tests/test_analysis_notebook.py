"""notebooks/analysis.ipynb runs headless, top to bottom, against a generated history."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobmanager import JobManager, demodata

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("matplotlib")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "analysis.ipynb"


def test_analysis_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    JobManager.init(home, admin_password="admin-password-1").close()
    demodata.generate(home, jobs=300, days=5, seed=7)
    monkeypatch.setenv("JOBMANAGER_HOME", str(home))
    monkeypatch.setenv("JOBMANAGER_USER", "admin")
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
