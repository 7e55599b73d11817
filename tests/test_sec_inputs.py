"""Issue 12, item 5 (and the folders part of item 1): what a job may read.

Jobs read inputs only from ``<home>/inputs``, ``input_dirs`` and their own case's folders; notebooks run
only from ``notebook_dirs``. The home's logs, artifacts, databases, config and dashboard copy are never
inputs, even though the test homes' input folder (tmp_path) contains the home, and even through a symlink
or ``..``. Each attack is refused at submit with one line naming the file, and nothing is stored or read.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner
from pypdf import PdfReader

from jobmanager import JobManager
from jobmanager.cli.main import cli
from jobmanager.dashboard.server import find_notebook, prepare
from jobmanager.errors import PermissionDenied

SECRET = "s3cret-from-another-case"


@pytest.fixture
def loot(jm: JobManager) -> dict[str, Path]:
    """Another case's log and hash export where an agent would have written them, plus a symlink to the
    log from an input folder (tmp_path) and the dashboard's own copy of its notebook."""
    home = jm.home
    log = home.task_log(3, 1)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"task log of case GLOBEX-3: {SECRET}\n")
    hashes = home.job_artifacts(36) / "hashes.csv"
    hashes.parent.mkdir(parents=True, exist_ok=True)
    hashes.write_text(f"username,password_hash\nadmin,{SECRET}\n")
    link = home.path.parent / "innocent.txt"
    link.symlink_to(log)
    dashboard = prepare(home, find_notebook(home))
    return {"log": log, "hashes": hashes, "link": link, "dashboard": dashboard}


def _attacks(home: Path, loot: dict[str, Path]) -> list[tuple[str, dict, str]]:
    """(job type, parameters, the file name the refusal must name)."""
    rel_log = "../logs/jobs/3/task-0001.log"  # relative names start in <home>/inputs
    return [
        ("print_to_pdf", {"documents": [rel_log]}, rel_log),
        ("print_to_pdf", {"documents": ["logs/jobs/3/task-0001.log"], "base_dir": str(home)},
         "logs/jobs/3/task-0001.log"),
        ("print_to_pdf", {"documents": [str(loot["log"])]}, str(loot["log"])),
        ("print_to_pdf", {"documents": ["artifacts/36/hashes.csv"], "base_dir": str(home)}, "artifacts/36/hashes.csv"),
        ("print_to_pdf", {"documents": ["jobmanager.toml"], "base_dir": str(home)}, "jobmanager.toml"),
        ("print_to_pdf", {"documents": [str(home / "store.db")]}, str(home / "store.db")),
        ("print_to_pdf", {"documents": [str(home / "inputs" / ".." / "jobmanager.toml")]},
         str(home / "inputs" / ".." / "jobmanager.toml")),
        ("print_to_pdf", {"documents": ["innocent.txt"], "base_dir": str(home.parent)}, "innocent.txt"),
        ("print_to_pdf", {"documents": ["ok.txt", str(loot["dashboard"])]}, str(loot["dashboard"])),
        ("export_report", {"query": "select * from source", "source": str(loot["hashes"])}, str(loot["hashes"])),
        ("notebook", {"notebook": str(loot["dashboard"])}, str(loot["dashboard"])),
        ("notebook", {"notebook": "dashboard/dashboard.ipynb", "base_dir": str(home)}, "dashboard/dashboard.ipynb"),
        ("notebook", {"notebook": "../dashboard/dashboard.ipynb", "base_dir": str(home / "notebooks")},
         "../dashboard/dashboard.ipynb"),
        ("notebook", {"notebook": "home/logs/jobs/3/x.ipynb"}, "home/logs/jobs/3/x.ipynb"),  # from tmp_path
    ]


def test_every_attack_path_is_refused_at_submit_and_nothing_is_stored(jm: JobManager, loot) -> None:
    before = len(jm.jobs())
    for type_, params, name in _attacks(jm.home.path, loot):
        with pytest.raises(PermissionDenied) as info:
            jm.submit(type_, params)
        message = str(info.value)
        assert message.startswith(f"{name}: ") and "\n" not in message, (type_, params, message)
        assert "home's own files" in message and SECRET not in message
    assert len(jm.jobs()) == before


def test_every_attack_path_is_refused_by_the_cli_in_one_line(jm: JobManager, loot) -> None:
    runner = CliRunner()
    for type_, params, name in _attacks(jm.home.path, loot):
        result = runner.invoke(cli, ["--home", str(jm.home.path), "--user", "tester", "submit", type_,
                                     "--params-json", json.dumps(params)])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and name in lines[0] and "home's own files" in lines[0], result.output
    assert jm.jobs().empty


def test_a_relative_log_name_reads_nothing_of_the_home(jm: JobManager, start_agent, loot) -> None:
    """The issue's exact attack: relative names now start in <home>/inputs, where no such file is."""
    (jm.home.inputs_dir / "ok.txt").write_text("a harmless page", encoding="utf-8")
    start_agent("a1")
    job_id = jm.submit("print_to_pdf", {"documents": ["logs/jobs/3/task-0001.log", "artifacts/36/hashes.csv",
                                                      "ok.txt"]})
    job = jm.wait(job_id, timeout=60)
    assert job.state == "completed_with_errors"
    assert "task-0001.log: file not found" in job.tasks[0].error and "hashes.csv: file not found" in job.tasks[1].error
    text = "".join(p.extract_text() for p in PdfReader(str(jm.open_artifact(job_id, "merged.pdf"))).pages)
    assert "a harmless page" in text and SECRET not in text


def test_a_symlink_from_an_input_folder_into_the_home_is_refused_when_the_task_runs(
        jm: JobManager, start_agent, loot, tmp_path: Path) -> None:
    """A file that was fine at submit and is a symlink into the home when the agent runs: not read."""
    doc = tmp_path / "later.txt"
    doc.write_text("fine at submit", encoding="utf-8")
    job_id = jm.submit("print_to_pdf", {"documents": [str(doc), str(tmp_path / "ok.txt")]})
    (tmp_path / "ok.txt").write_text("still fine", encoding="utf-8")
    doc.unlink()
    doc.symlink_to(loot["hashes"])
    start_agent("a1")
    job = jm.wait(job_id, timeout=60)
    assert job.state == "completed_with_errors"
    error = job.tasks[0].error
    assert error.startswith("PermissionDenied: ") and str(doc) in error and "home's own files" in error
    text = "".join(p.extract_text() for p in PdfReader(str(jm.open_artifact(job_id, "merged.pdf"))).pages)
    assert "still fine" in text and SECRET not in text


# -- case binding --------------------------------------------------------------------------------------------------
@pytest.fixture
def case_folders(jm: JobManager, tmp_path: Path) -> dict[str, Path]:
    """Shared docs in <home>/inputs, ACME-12's in /.../acme (configured) and inputs/cases/ACME-12,
    GLOBEX-3's in /.../globex. The configured case folders lie inside tmp_path, a shared input folder."""
    folders = {"shared": jm.home.inputs_dir, "acme": tmp_path / "acme", "globex": tmp_path / "globex",
               "acme-home": jm.home.inputs_dir / "cases" / "ACME-12",
               "globex-home": jm.home.inputs_dir / "cases" / "GLOBEX-3"}
    for name, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.txt").write_text(f"document of {name}", encoding="utf-8")
    cfg = jm.home.path / "jobmanager.toml"
    cfg.write_text(cfg.read_text() + f'\n[case_input_dirs]\n"ACME-12" = [{json.dumps(str(folders["acme"]))}]\n'
                                     f'"GLOBEX-3" = [{json.dumps(str(folders["globex"]))}]\n')
    return folders


def test_a_job_reads_shared_inputs_and_its_own_cases_folders_only(jm: JobManager, case_folders) -> None:
    jm = JobManager(jm.home.path, user="tester")  # reopened: the configuration changed
    acme, globex = case_folders["acme"] / "acme.txt", case_folders["globex"] / "globex.txt"
    refusals = [
        ("ACME-12", str(globex)),
        ("ACME-12", "cases/GLOBEX-3/globex-home.txt"),
        ("GLOBEX-3", str(acme)),
        ("GLOBEX-3", "cases/ACME-12/acme-home.txt"),
        (None, str(acme)),
        (None, "cases/ACME-12/acme-home.txt"),
    ]
    for case, doc in refusals:
        with pytest.raises(PermissionDenied, match="is in an input folder of another case") as info:
            jm.submit("print_to_pdf", {"documents": [doc]}, case=case)
        assert str(info.value).startswith(f"{doc}: ")
    assert jm.jobs().empty
    result = CliRunner().invoke(cli, ["--home", str(jm.home.path), "--user", "tester", "submit", "print_to_pdf",
                                      "--case", "ACME-12", "-p", f"documents=[{json.dumps(str(globex))}]"])
    assert result.exit_code == 2 and "another case" in result.output
    assert len(result.output.strip().splitlines()) == 1
    jm.close()


def test_a_case_job_prints_shared_and_its_own_documents_through_an_agent(jm: JobManager, start_agent,
                                                                         case_folders) -> None:
    """The job's case reaches the check in the agent: without it ACME-12's folders would be refused."""
    jm = JobManager(jm.home.path, user="tester")
    start_agent("a1")
    docs = ["shared.txt", str(case_folders["acme"] / "acme.txt"), "cases/ACME-12/acme-home.txt"]
    job_id = jm.submit("print_to_pdf", {"documents": docs}, case="ACME-12")
    job = jm.wait(job_id, timeout=60)
    assert job.state == "completed", [t.error for t in job.tasks]
    text = "".join(p.extract_text() for p in PdfReader(str(jm.open_artifact(job_id, "merged.pdf"))).pages)
    assert all(f"document of {n}" in text for n in ("shared", "acme", "acme-home"))
    assert "globex" not in text
    jm.close()


# -- notebooks ---------------------------------------------------------------------------------------------------
def test_notebooks_run_only_from_the_notebook_folders(jm: JobManager, tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    (jm.home.path / "notebooks" / "ok.ipynb").write_text(nbformat.writes(nb))
    (jm.home.inputs_dir / "doc.ipynb").write_text(nbformat.writes(nb))
    cfg = jm.home.path / "jobmanager.toml"
    folder = tmp_path / "nbs"
    folder.mkdir()
    (folder / "team.ipynb").write_text(nbformat.writes(nb))
    cfg.write_text(cfg.read_text().replace(f"notebook_dirs = [{json.dumps(str(tmp_path))}]",
                                           f"notebook_dirs = [{json.dumps(str(folder))}]"))
    with JobManager(jm.home.path, user="tester") as narrow:
        assert narrow.submit("notebook", {"notebook": str(folder / "team.ipynb")}) > 0
        assert narrow.submit("notebook", {"notebook": "team.ipynb"}) > 0  # relative: the first notebook folder
        with pytest.raises(PermissionDenied, match="notebooks run only from the notebook folders"):
            narrow.submit("notebook", {"notebook": str(jm.home.path / "notebooks" / "ok.ipynb")})
        with pytest.raises(PermissionDenied, match="home's own files .* put notebooks in"):
            narrow.submit("notebook", {"notebook": str(jm.home.inputs_dir / "doc.ipynb")})
    # the default notebook folder is <home>/notebooks (the home's only folder notebooks may run from)
    cfg.write_text(cfg.read_text().replace(f"notebook_dirs = [{json.dumps(str(folder))}]", ""))
    with JobManager(jm.home.path, user="tester") as default:
        assert default.submit("notebook", {"notebook": "ok.ipynb"}) > 0
        with pytest.raises(PermissionDenied, match=r"home's own files .* put notebooks in"):
            default.submit("notebook", {"notebook": "../inputs/doc.ipynb"})
        result = CliRunner().invoke(cli, ["--home", str(jm.home.path), "--user", "tester", "submit", "notebook",
                                          "-p", f"notebook={folder / 'team.ipynb'}"])
        assert result.exit_code == 2 and "notebooks run only from the notebook folders" in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_a_missing_notebook_or_source_is_refused_at_submit(jm: JobManager, tmp_path: Path) -> None:
    from jobmanager.errors import BadParams

    with pytest.raises(BadParams, match="nope.ipynb: file not found"):
        jm.submit("notebook", {"notebook": str(tmp_path / "nope.ipynb")})
    with pytest.raises(BadParams, match="nope.csv: file not found"):
        jm.submit("export_report", {"query": "select * from source", "source": str(tmp_path / "nope.csv")})
    assert jm.jobs().empty
