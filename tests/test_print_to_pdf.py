"""``print_to_pdf`` end to end through a real agent, PDFs read back with pypdf; downloading outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from pypdf import PdfReader

from jobmanager import JobManager
from jobmanager.cli.main import cli
from jobmanager.demo import DEMO_DOCUMENTS
from jobmanager.errors import BadParams, NotFound


def pdf_text(path: Path) -> list[str]:
    return [page.extract_text() for page in PdfReader(str(path)).pages]


def write_documents(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("Quarterly notes\nthe owl flies at midnight\ncafé ✓\n", encoding="utf-8")
    (folder / "guide.md").write_text("# Install guide\n\nRun **pip install** then *relax*.\n\n- step one\n",
                                     encoding="utf-8")
    (folder / "stock.csv").write_text("item,qty\nwidget,42\ngadget,7\n", encoding="utf-8")
    Image.new("RGB", (64, 40), (10, 120, 200)).save(folder / "logo.png")
    return ["notes.txt", "guide.md", "stock.csv", "logo.png"]


def test_prints_each_document_and_merges_them_with_a_cover(jm: JobManager, start_agent, tmp_path: Path) -> None:
    docs = write_documents(tmp_path / "docs")
    start_agent("a1")
    job_id = jm.submit("print_to_pdf", {"documents": docs, "base_dir": str(tmp_path / "docs"), "title": "Q3 pack"})
    job = jm.wait(job_id, timeout=60)
    assert job.state == "completed", [t.error for t in job.tasks]
    assert [t.name for t in job.tasks] == docs
    assert all(t.progress_done == t.progress_total == 1 for t in job.tasks)  # pages rendered
    arts = jm.artifacts(job_id)
    assert set(arts.name) == {"merged.pdf", "001-notes.txt.pdf", "002-guide.md.pdf", "003-stock.csv.pdf",
                              "004-logo.png.pdf"}
    assert jm.main_artifact(job_id) == "merged.pdf"
    merged = jm.open_artifact(job_id, "merged.pdf")
    pages = pdf_text(merged)
    assert len(pages) == 5  # the cover, then one page per document
    cover = pages[0]
    assert "Q3 pack" in cover and "4 documents, 4 printed" in cover and "FAILED" not in cover
    assert all(name in cover for name in docs)
    assert "owl flies at midnight" in pages[1] and "café ✓" in pages[1]
    assert "Install guide" in pages[2] and "pip install" in pages[2]
    assert "widget" in pages[3] and "42" in pages[3]
    assert "logo.png" in pages[4]
    # page numbers come from each document's own CSS footer: nothing is stamped on the merged pages
    assert all("page 1 of 1" in text for text in pages[1:])
    assert [o.title for o in PdfReader(str(merged)).outline if not isinstance(o, list)] == docs
    assert "merged 4 of 4 document(s)" in jm.log(job_id)


def test_broken_documents_fail_alone_and_retry_reprints_only_them(jm: JobManager, start_agent,
                                                                  tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "good.txt").write_text("a perfectly good page", encoding="utf-8")
    (folder / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    (folder / "legacy.txt").write_bytes("Fran\u00e7ois wrote this".encode("latin-1"))  # decoded, printed
    (folder / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    docs = ["good.txt", "scan.png", "legacy.txt", "blob.txt", "minutes.txt"]
    start_agent("a1")
    job_id = jm.submit("print_to_pdf", {"documents": docs, "base_dir": str(folder)})
    job = jm.wait(job_id, timeout=60)
    assert job.state == "completed_with_errors"
    errors = {t.name: t.error for t in job.tasks}
    assert errors["good.txt"] is None
    assert "scan.png: corrupt image: cannot identify image file" in errors["scan.png"]
    assert errors["legacy.txt"] is None
    assert "blob.txt: binary file, not text" in errors["blob.txt"]
    assert "minutes.txt: file not found" in errors["minutes.txt"]
    assert "scan.png: corrupt image" in jm.log(job_id, task=2)
    pages = pdf_text(jm.open_artifact(job_id, "merged.pdf"))
    assert len(pages) == 3 and "5 documents, 2 printed, 3 failed" in pages[0]
    assert pages[0].count("FAILED") == 3 and "a perfectly good page" in pages[1]
    assert "François wrote this" in pages[2]

    # fix the input, then retry: only the failed documents print again and merged.pdf is rebuilt
    Image.new("RGB", (50, 50), (0, 200, 0)).save(folder / "scan.png")
    (folder / "legacy.txt").write_text("Fran\u00e7ois wrote this", encoding="utf-8")
    (folder / "blob.txt").write_text("no longer binary", encoding="utf-8")
    (folder / "minutes.txt").write_text("minutes of the meeting", encoding="utf-8")
    jm.retry(job_id)
    job = jm.wait(job_id, timeout=60)
    assert job.state == "completed", [t.error for t in job.tasks]
    assert [t.attempts for t in job.tasks] == [1, 2, 1, 2, 2]
    pages = pdf_text(jm.open_artifact(job_id, "merged.pdf"))
    assert len(pages) == 6 and "5 documents, 5 printed" in pages[0] and "FAILED" not in pages[0]
    assert "François wrote this" in pages[3] and "no longer binary" in pages[4]
    assert "minutes of the meeting" in pages[5]
    assert jm.log(job_id).count("merged 5 of 5 document(s)") == 1


def test_relative_documents_resolve_against_the_homes_inputs_folder(jm: JobManager, start_agent) -> None:
    (jm.home.inputs_dir / "inbox").mkdir()
    (jm.home.inputs_dir / "inbox" / "memo.txt").write_text("memo in the home", encoding="utf-8")
    start_agent("a1")
    job_id = jm.submit("print_to_pdf", {"documents": ["inbox/memo.txt"]})
    assert jm.wait(job_id, timeout=60).state == "completed"
    assert "memo in the home" in pdf_text(jm.open_artifact(job_id, "merged.pdf"))[1]


def test_bad_parameters_are_refused_at_submit(jm: JobManager) -> None:
    with pytest.raises(BadParams, match="documents"):
        jm.submit("print_to_pdf", {"documents": []})
    with pytest.raises(BadParams, match="empty paths"):
        jm.submit("print_to_pdf", {"documents": ["a.txt", " "]})
    with pytest.raises(BadParams, match="colour"):
        jm.submit("print_to_pdf", {"documents": ["a.txt"], "colour": "red"})


def test_demo_documents_ship_with_the_package() -> None:
    names = {p.name for p in DEMO_DOCUMENTS.iterdir()}
    assert {"welcome.txt", "release-notes.md", "inventory.csv", "chart.png", "scan.png", "legacy-notes.txt"} <= names
    assert "meeting-minutes.txt" not in names  # listed by the demo job on purpose


# -- downloading -------------------------------------------------------------------------------------------------
@pytest.fixture
def printed(jm: JobManager, start_agent, tmp_path: Path) -> int:
    docs = write_documents(tmp_path / "docs")
    start_agent("a1")
    job_id = jm.submit("print_to_pdf", {"documents": docs[:2], "base_dir": str(tmp_path / "docs")})
    assert jm.wait(job_id, timeout=60).state == "completed"
    return job_id


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..", ".", "", "sub/merged.pdf",
                                  "..\\merged.pdf", "merged.pdf\x00"])
def test_open_artifact_refuses_names_that_are_not_plain(jm: JobManager, printed: int, name: str) -> None:
    # an empty name and control characters are refused by the service's common input checks first
    with pytest.raises(BadParams, match="not a plain file name|may not be empty|may not contain control characters"):
        jm.open_artifact(printed, name)


def test_open_artifact_refuses_unknown_names_and_stored_paths_outside_the_home(
        jm: JobManager, printed: int, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no artifact 'passwd'.*merged.pdf"):
        jm.open_artifact(printed, "passwd")
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    jm.store.add_artifact(printed, None, "secret.txt", "../secret.txt", "text/plain", 9)  # a tampered row
    with pytest.raises(NotFound, match="outside the home"):
        jm.open_artifact(printed, "secret.txt")
    with pytest.raises(NotFound):
        jm.open_artifact(printed + 100, "merged.pdf")


def test_cli_download(jm: JobManager, printed: int, tmp_path: Path, monkeypatch) -> None:
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)

    def run(*args: str):
        return runner.invoke(cli, ["--home", str(jm.home.path), "--user", "tester", "download", str(printed), *args])

    result = run()
    assert result.exit_code == 0, result.output
    assert len(PdfReader(str(tmp_path / "merged.pdf")).pages) == 3
    result = run("--artifact", "002-guide.md.pdf", "-o", str(tmp_path / "guide.pdf"))
    assert result.exit_code == 0 and "Install guide" in pdf_text(tmp_path / "guide.pdf")[0]
    result = run("--log", "-o", str(tmp_path / "job.log"))
    assert result.exit_code == 0 and "merged 2 of 2" in (tmp_path / "job.log").read_text()
    result = run("--log", "--task", "1", "-o", "-")
    assert result.exit_code == 0 and "printing" in result.output and "guide.md" not in result.output
    for bad in ("../../etc/passwd", "/etc/passwd"):
        result = run("--artifact", bad)
        assert result.exit_code == 2 and "not a plain file name" in result.output
        assert len(result.output.strip().splitlines()) == 1
    result = run("--artifact", "nope.pdf")
    assert result.exit_code == 2 and "has no artifact 'nope.pdf'" in result.output
