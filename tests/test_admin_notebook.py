"""notebooks/admin.ipynb runs headless against a fresh home, as an administrator."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobmanager import JobManager

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "admin.ipynb"


def test_admin_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    JobManager.init(home, admin_password="admin-password-1").close()
    monkeypatch.setenv("JOBMANAGER_HOME", str(home))
    monkeypatch.setenv("JOBMANAGER_USER", "admin")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "one-time password:" in text and "refused:" in text and "needs the admin permission" in text
    admin = JobManager(home, user="admin")
    group = admin.groups().set_index("name").loc["night-shift"]
    assert "retry_tasks" in group.permissions and group.members == ["night-operator"]
    audit = admin.audit_log()
    assert (~audit.allowed).any()  # the refused add_group is on record
