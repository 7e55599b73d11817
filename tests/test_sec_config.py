"""Issue 12, item 8: jobmanager.toml is checked against a schema when the home opens.

A string where a list belongs used to become a list of characters (``input_dirs = "/srv/docs"`` made
``/`` an input folder: the whole disk), and ``heartbeat_interval = "abc"`` crashed the agent with a
traceback. Now each bad value is one line naming the key and the file (exit 2 from the CLI, agents too),
and so are the environment overrides.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobmanager import JobManager
from jobmanager.cli.main import cli
from jobmanager.errors import HomeError
from jobmanager.home import CONFIG_NAME, Home

from .conftest import agent_env

#: (what is written into jobmanager.toml, the key the error must name)
BAD_VALUES = [
    ('input_dirs = "/srv/docs"', "input_dirs"),
    ('imports = "os"', "imports"),
    ('heartbeat_interval = "abc"', "heartbeat_interval"),
    ("heartbeat_interval = -1", "heartbeat_interval"),
    ("heartbeat_interval = true", "heartbeat_interval"),
    ("heartbeat_interval = nan", "heartbeat_interval"),
    ('input_dirs = ["relative/docs"]', "input_dirs"),
    ('input_dirs = [1, 2]', "input_dirs.0"),
    ('imports = ["os; import sys"]', "imports"),
    ('notebook_dirs = "/srv/notebooks"', "notebook_dirs"),
    ("store = 5", "store"),
    ('inputs_dirs = ["/srv/docs"]', "inputs_dirs"),  # a typo: unknown keys are refused, not ignored
    ('[case_input_dirs]\n"ACME-12" = "/srv/acme"', "case_input_dirs.ACME-12"),
    ("completer_flush_ms = -1", "completer_flush_ms"),
    ("completer_flush_ms = 20000", "completer_flush_ms"),
    ('completer_flush_ms = "fast"', "completer_flush_ms"),
    ("completer_batch = 0", "completer_batch"),
    ("completer_batch = 2.5", "completer_batch"),
]


def write_config(home: Path, line: str) -> Path:
    """The home's configuration with ``line`` in place of the key it sets (store/queue lines kept)."""
    cfg = home / CONFIG_NAME
    key = line.split("=")[0].strip().strip("[]")
    text = re.sub(rf"(?m)^{re.escape(key)}\s*=.*$", "", cfg.read_text())
    cfg.write_text(f"{text}\n{line}\n")
    return cfg


@pytest.mark.parametrize("line, key", BAD_VALUES)
def test_a_bad_value_is_one_line_naming_the_key_and_the_file(home: Path, line: str, key: str) -> None:
    cfg = write_config(home, line)
    with pytest.raises(HomeError) as info:
        Home.open(home)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{cfg}: ") and key in message, message
    with pytest.raises(HomeError, match=re.escape(key)):
        JobManager(home, user="tester")
    result = CliRunner().invoke(cli, ["--home", str(home), "--user", "tester", "jobs"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and CONFIG_NAME in lines[0], result.output


def test_a_string_of_input_dirs_no_longer_opens_the_whole_disk(home: Path) -> None:
    write_config(home, 'input_dirs = "/srv/docs"')
    result = CliRunner().invoke(cli, ["--home", str(home), "--user", "tester", "submit", "print_to_pdf",
                                      "-p", 'documents=["/etc/hostname"]'])
    assert result.exit_code == 2 and "input_dirs: Input should be a valid list (got str '/srv/docs')" in result.output
    write_config(home, "input_dirs = []")
    with JobManager(home, user="tester") as jm:
        assert jm.jobs().empty  # nothing was stored
        assert Path("/") not in jm.home.input_roots


def _agent(home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobmanager", "--home", str(home), "agent", "--name", "x"],
                          capture_output=True, text=True, timeout=60, env={**agent_env(), **(env or {})})


@pytest.mark.parametrize("line, key", BAD_VALUES[:3])
def test_the_agent_refuses_a_bad_config_in_one_line(home: Path, line: str, key: str) -> None:
    write_config(home, line)
    proc = _agent(home)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert key in proc.stderr and CONFIG_NAME in proc.stderr


@pytest.mark.parametrize("env, shown", [
    ({"JOBMANAGER_HEARTBEAT": "abc"}, "$JOBMANAGER_HEARTBEAT: 'abc' is not a number of seconds"),
    ({"JOBMANAGER_HEARTBEAT": "0"}, "$JOBMANAGER_HEARTBEAT: heartbeat_interval"),
    ({"JOBMANAGER_INPUT_DIRS": "docs"}, "$JOBMANAGER_INPUT_DIRS: input_dirs: 'docs' is not an absolute folder"),
])
def test_environment_overrides_are_checked_the_same_way(home: Path, monkeypatch, env: dict[str, str],
                                                        shown: str) -> None:
    proc = _agent(home, env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and shown in proc.stderr
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(HomeError, match=re.escape(shown)):
        Home.open(home)


def test_a_complete_good_config_is_read(home: Path, tmp_path: Path, monkeypatch) -> None:
    write_config(home, "heartbeat_interval = 2")  # a whole number is a number of seconds too
    write_config(home, f'notebook_dirs = ["{tmp_path}/nbs"]')
    cfg = home / CONFIG_NAME
    cfg.write_text(cfg.read_text().replace('imports = []', 'imports = ["jm_test_types"]')
                   + f'[case_input_dirs]\n"ACME-12" = ["{tmp_path}/acme"]\n')
    monkeypatch.setenv("JOBMANAGER_INPUT_DIRS", "/srv/extra:~/docs")
    h = Home.open(home)
    assert h.heartbeat_interval == 2.0 and h.imports == ["jm_test_types"]
    assert h.notebook_dirs() == [(tmp_path / "nbs").resolve()]
    assert Path("/srv/extra") in h.input_roots and Path("~/docs").expanduser().resolve() in h.input_roots
    shared, own, _ = h.input_folders("ACME-12")
    assert (tmp_path / "acme").resolve() in own and (tmp_path / "acme").resolve() not in shared
    monkeypatch.setenv("JOBMANAGER_HEARTBEAT", "0.5")
    assert Home.open(home).heartbeat_interval == 0.5
