"""``export_report`` and ``notebook`` end to end through a real agent; outputs read back."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from click.testing import CliRunner

from jobmanager import JobManager
from jobmanager.cli.main import cli
from jobmanager.errors import BadParams
from jobmanager.jobtypes.export_report import sqlite_extension_path

READERS = {"csv": pd.read_csv, "parquet": pd.read_parquet, "xlsx": pd.read_excel}


@pytest.fixture
def sales(tmp_path: Path) -> Path:
    path = tmp_path / "sales.csv"
    pd.DataFrame({"region": ["north", "south", "north", "east"], "amount": [10.5, 20.0, 4.5, 7.0]}).to_csv(
        path, index=False)
    return path


def test_export_report_from_a_file_in_every_format(jm: JobManager, start_agent, sales: Path) -> None:
    start_agent("a1")
    query = "SELECT region, sum(amount) AS total FROM source GROUP BY region ORDER BY region;"
    ids = {fmt: jm.submit("export_report", {"query": query, "source": str(sales), "format": fmt, "name": "totals"})
           for fmt in READERS}
    for fmt, job_id in ids.items():
        job = jm.wait(job_id, timeout=60)
        assert job.state == "completed", job.tasks[0].error
        assert jm.main_artifact(job_id) == f"totals.{fmt}"
        df = READERS[fmt](jm.open_artifact(job_id, f"totals.{fmt}"))
        assert list(df.columns) == ["region", "total"]
        assert df.values.tolist() == [["east", 7.0], ["north", 15.0], ["south", 20.0]]
        assert "3 row(s)" in jm.log(job_id)


def test_export_report_reads_the_job_store_read_only(jm: JobManager, start_agent) -> None:
    start_agent("a1")
    sleeper = jm.submit("sleep", {"tasks": 2}, name="nightly")
    jm.wait(sleeper, timeout=30)
    query = "SELECT j.id, j.name, j.state, count(t.id) AS tasks FROM jobs j JOIN tasks t ON t.job_id = j.id " \
            "WHERE j.type = 'sleep' GROUP BY ALL"
    job_id = jm.submit("export_report", {"query": query, "format": "parquet"})
    assert jm.wait(job_id, timeout=60).state == "completed", jm.job(job_id).tasks[0].error
    df = pd.read_parquet(jm.open_artifact(job_id, "report.parquet"))
    assert df.to_dict("records") == [{"id": sleeper, "name": "nightly", "state": "completed", "tasks": 2}]


def test_the_sqlite_extension_comes_from_the_installed_package() -> None:
    path = sqlite_extension_path()
    assert path.is_file() and "duckdb_extension_sqlite_scanner" in str(path)


@pytest.mark.parametrize("query, reason", [
    ("DELETE FROM jobs", "not DELETE"),
    ("UPDATE jobs SET state = 'failed'", "not UPDATE"),
    ("DROP TABLE jobs", "not DROP"),
    ("SELECT 1; DROP TABLE jobs", "exactly one statement"),
    ("COPY (SELECT 1) TO '/tmp/x.csv'", "not COPY"),
    ("ATTACH '/tmp/other.db' AS other", "not ATTACH"),
    ("INSTALL httpfs", "read-only SELECT"),
    ("SELEC nonsense", "not valid SQL"),
])
def test_writing_statements_are_refused_at_submit(jm: JobManager, query: str, reason: str) -> None:
    with pytest.raises(BadParams, match=reason):
        jm.submit("export_report", {"query": query})


def test_export_report_bad_output_name_and_source_are_refused(jm: JobManager) -> None:
    with pytest.raises(BadParams, match="plain file name"):
        jm.submit("export_report", {"query": "SELECT 1", "name": "../../evil"})
    with pytest.raises(BadParams, match="csv or .parquet"):
        jm.submit("export_report", {"query": "SELECT 1", "source": "/etc/passwd"})
    with pytest.raises(BadParams, match="format"):
        jm.submit("export_report", {"query": "SELECT 1", "format": "docx"})


# -- notebook ----------------------------------------------------------------------------------------------------
def make_notebook(path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("greeting = 'hello'\nn = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Report"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def test_notebook_runs_with_parameters_and_keeps_ipynb_and_html(jm: JobManager, start_agent,
                                                               tmp_path: Path) -> None:
    make_notebook(tmp_path / "report.ipynb", "print(f'{greeting} x{n * 2}')")
    start_agent("a1")
    job_id = jm.submit("notebook", {"notebook": "report.ipynb", "base_dir": str(tmp_path),
                                    "parameters": {"greeting": "bonjour", "n": 21}})
    job = jm.wait(job_id, timeout=120)
    assert job.state == "completed", job.tasks[0].error
    task = job.tasks[0]
    assert task.progress_done == task.progress_total == 4  # markdown, parameters, injected parameters, body
    assert set(jm.artifacts(job_id).name) == {"report.ipynb", "report.html"}
    assert jm.main_artifact(job_id) is None  # two outputs: the download asks which one
    executed = nbformat.read(str(jm.open_artifact(job_id, "report.ipynb")), as_version=4)
    outputs = [o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert "bonjour x42\n" in outputs
    html = jm.open_artifact(job_id, "report.html").read_text(encoding="utf-8")
    assert "<html" in html and "bonjour x42" in html

    runner = CliRunner()
    base = ["--home", str(jm.home.path), "--user", "tester", "download", str(job_id)]
    result = runner.invoke(cli, base)
    assert result.exit_code == 2 and "report.html" in result.output and "choose one with --artifact" in result.output
    out = tmp_path / "dl.ipynb"
    result = runner.invoke(cli, [*base, "-a", "report.ipynb", "-o", str(out)])
    assert result.exit_code == 0 and json.loads(out.read_text())["cells"]


def test_a_failing_cell_fails_the_task_with_its_error(jm: JobManager, start_agent, tmp_path: Path) -> None:
    make_notebook(tmp_path / "broken.ipynb", "raise ValueError(f'bad input {n}')")
    start_agent("a1")
    job_id = jm.submit("notebook", {"notebook": str(tmp_path / "broken.ipynb"), "parameters": {"n": 7}})
    job = jm.wait(job_id, timeout=120)
    assert job.state == "failed"
    error = job.tasks[0].error
    assert "NotebookCellError" in error and "ValueError: bad input 7" in error
    assert "ValueError" in jm.log(job_id) and "bad input 7" in jm.log(job_id)
    # the partly executed notebook and its HTML are outputs: the failing cell's traceback can be read
    assert set(jm.artifacts(job_id).name) == {"broken.ipynb", "broken.html"}
    executed = nbformat.read(str(jm.open_artifact(job_id, "broken.ipynb")), as_version=4)
    assert any(o.get("ename") == "ValueError" for c in executed.cells if c.cell_type == "code"
               for o in c.get("outputs", []))
    assert "bad input 7" in jm.open_artifact(job_id, "broken.html").read_text(encoding="utf-8")


def test_notebook_params_are_checked_at_submit(jm: JobManager) -> None:
    with pytest.raises(BadParams, match="not a .ipynb"):
        jm.submit("notebook", {"notebook": "report.py"})
