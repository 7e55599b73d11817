"""The generated docs match the code: the README's Permissions List and docs/cli.md (scripts/gendocs.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_gendocs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gendocs", ROOT / "scripts" / "gendocs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gendocs", module)
    spec.loader.exec_module(module)
    return module


gendocs = _load_gendocs()
COMMANDS = list(gendocs.commands())


@pytest.mark.parametrize("path", [gendocs.README, gendocs.CLI_DOC], ids=lambda p: p.name)
def test_generated_docs_are_current(path: Path) -> None:
    expected = gendocs.generated()[path]
    committed = path.read_text(encoding="utf-8") if path.is_file() else ""
    assert committed == expected, (
        f"{path.relative_to(ROOT)} differs from what the code generates: run `{gendocs.COMMAND}` and commit it")


def test_check_mode_names_the_stale_file_and_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(gendocs, "ROOT", tmp_path)
    readme, cli_doc = tmp_path / "README.md", tmp_path / "docs" / "cli.md"
    readme.write_text("# x\n<!-- permissions:start -->\nold table\n<!-- permissions:end -->\n", encoding="utf-8")
    monkeypatch.setattr(gendocs, "README", readme)
    monkeypatch.setattr(gendocs, "CLI_DOC", cli_doc)
    assert gendocs.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "README.md is out of date: run `python scripts/gendocs.py`" in err
    assert "docs/cli.md is out of date" in err
    assert readme.read_text(encoding="utf-8").count("old table") == 1  # --check changes nothing
    assert gendocs.main([]) == 0
    assert gendocs.main(["--check"]) == 0
    assert "| `submit_jobs` | Submit new jobs |" in readme.read_text(encoding="utf-8")
    assert "## jobmanager schedule add" in cli_doc.read_text(encoding="utf-8")


def test_the_readme_links_the_cli_reference() -> None:
    assert "(docs/cli.md)" in gendocs.README.read_text(encoding="utf-8")


@pytest.mark.parametrize("path,command", [(p, c) for p, c, _ in COMMANDS], ids=[p for p, _, _ in COMMANDS])
def test_every_command_has_help_text(path: str, command: click.Command) -> None:
    assert (command.help or "").strip(), f"`{path}` has no help text (give the click command a docstring)"
