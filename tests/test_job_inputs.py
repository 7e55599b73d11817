"""What a job may read: inputs only from the allowed folders, the store only through the service's views.

Also the regression of an agent that ran an export_report and then lost its writes (DuckDB's own SQLite
beside the agent's connections to the store deleted the WAL under them).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from jobmanager import JobManager
from jobmanager.errors import PermissionDenied


def test_documents_outside_the_allowed_folders_are_refused(jm: JobManager) -> None:
    before = len(jm.jobs())
    with pytest.raises(PermissionDenied, match="/etc/hostname: outside the folders jobs may read"):
        jm.submit("print_to_pdf", {"documents": ["/etc/hostname"]})
    with pytest.raises(PermissionDenied, match="notebooks run only from the notebook folders"):
        jm.submit("notebook", {"notebook": "/etc/../etc/passwd.ipynb"})
    assert len(jm.jobs()) == before  # nothing stored


def test_a_document_that_became_forbidden_after_submit_fails_its_task(jm: JobManager, start_agent,
                                                                      tmp_path: Path) -> None:
    """Checked again when the task runs: a file swapped for a symlink into the home is not read."""
    doc = tmp_path / "docs" / "fine.txt"
    doc.parent.mkdir()
    doc.write_text("fine", encoding="utf-8")
    job_id = jm.submit("print_to_pdf", {"documents": [str(doc)]})  # no agent yet: it waits in the queue
    doc.unlink()
    doc.symlink_to(jm.home.path / "jobmanager.toml")
    start_agent("a1")
    job = jm.wait(job_id, timeout=60)
    assert job.state == "failed" and "home's own files" in job.tasks[0].error
    assert jm.artifacts(job_id).empty


def test_export_report_reads_the_views_as_its_owner_and_no_files(jm: JobManager, start_agent, tmp_path: Path) -> None:
    start_agent("a1")
    hashes = jm.submit("export_report", {"query": "select username, password_hash from users"})
    assert "reads only the views" in jm.wait(hashes, timeout=60).tasks[0].error
    csv = tmp_path / "in.csv"
    csv.write_text("a,b\n1,2\n")
    sneaky = jm.submit("export_report", {"source": str(csv), "query": "select * from read_text('/etc/passwd')"})
    assert jm.wait(sneaky, timeout=60).state == "failed"
    fine = jm.submit("export_report", {"source": str(csv), "query": "select a + b as c from source"})
    assert jm.wait(fine, timeout=60).state == "completed"
    assert pd.read_csv(jm.open_artifact(fine, "report.csv")).c.tolist() == [3]


def test_agent_keeps_working_after_an_export_over_the_store(jm: JobManager, start_agent) -> None:
    start_agent("a1", 1)
    report = jm.submit("export_report", {"query": "select state, count(*) as n from jobs group by state"})
    assert jm.wait(report, timeout=60).state == "completed"
    later = [jm.submit("sleep", {"tasks": 2}) for _ in range(5)]
    assert [jm.wait(j, timeout=60).state for j in later] == ["completed"] * 5
    assert jm.agents().set_index("name").loc["a1", "status"] in ("idle", "busy")
