"""Issue 12, item 1: notebook parameters cannot become code, and running notebooks needs run_notebooks.

papermill pastes parameter names into the generated cell unchecked, so a name like
``"x = 1\\nimport os; os.system(...)\\ny"`` ran a shell command on the agent. Names must now be Python
identifiers (not keywords, not ``__``-names), values JSON only, the kernel a plain Python kernel name;
and a notebook job, or a notebook schedule, needs the ``run_notebooks`` permission, which the default
operators and analysts groups do not hold.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import nbformat
import pytest
from click.testing import CliRunner

from jobmanager import BadParams, JobManager, PermissionDenied
from jobmanager.auth.permissions import DEFAULT_GROUPS, PERMISSIONS
from jobmanager.cli.main import cli
from jobmanager.models import NewTask

from .backends import query_store
from .conftest import wait_for


def make_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("greeting = 'hello'\nn = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print(repr(greeting), n * 2)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def attack(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """The issue's payload, writing its marker into tmp_path instead of /tmp."""
    marker = tmp_path / "pwned"
    notebook = make_notebook(tmp_path / "report.ipynb")
    name = f'x = 1\nimport os; os.system("id > {marker}")\ny'
    return {"notebook": str(notebook), "parameters": {name: 1}}, marker


def job_count(home: Path) -> int:
    return query_store(home, "SELECT count(*) FROM jobs")[0][0]


def cli_run(home: Path, user: str, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--home", str(home), "--user", user, *args])


# -- the attack ------------------------------------------------------------------------------------------------
def test_attack_payload_is_refused_through_the_python_api(jm: JobManager, home: Path, tmp_path: Path) -> None:
    params, marker = attack(tmp_path)
    with pytest.raises(BadParams) as err:
        jm.submit("notebook", params)
    message = str(err.value)
    assert "\n" not in message and "is not a Python identifier" in message
    assert "'x = 1\\nimport os" in message  # the bad key, shown with its newline escaped
    assert job_count(home) == 0 and not marker.exists()


def test_attack_payload_is_refused_through_the_cli_and_a_real_agent_runs_nothing(
        home: Path, tmp_path: Path, start_agent) -> None:
    params, marker = attack(tmp_path)
    start_agent("a1")
    result = cli_run(home, "cli-user", "submit", "notebook", "--params-json", json.dumps(params))
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "is not a Python identifier" in result.output
    assert "Traceback" not in result.output
    assert job_count(home) == 0
    with JobManager(home, user="tester") as jm:  # a job the agent can run still runs: it was listening
        ok = jm.submit("notebook", {"notebook": params["notebook"], "parameters": {"n": 2}})
        assert jm.wait(ok, timeout=120).state == "completed"
    assert not marker.exists()


def test_an_agent_refuses_an_unsafe_name_that_reached_the_store(jm: JobManager, tmp_path: Path,
                                                                start_agent) -> None:
    """Defence in depth: a job written to the store without the service is checked again before it runs."""
    params, marker = attack(tmp_path)
    job_id, dispatches = jm.store.create_job(
        type="notebook", name="planted", params=params, owner="tester", case=None, priority=0, retries=0,
        has_finish=False, tasks=[NewTask("report.ipynb", {})], actor="tester")
    jm.queue.send(dispatches)
    start_agent("a1")
    job = jm.wait(job_id, timeout=60)
    assert job.state == "failed" and "is not a Python identifier" in job.tasks[0].error
    assert not marker.exists()


# -- names, values and kernels ---------------------------------------------------------------------------------
BAD_NAMES = ["class", "None", "True", "lambda", "1x", "a-b", "a b", "", "x\n", "x;y", "x=1", "__builtins__",
             "__import__", "n" * 101, "x\x1b]0;pwned\x07"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n)[:20] for n in BAD_NAMES])
def test_bad_parameter_names_are_refused(jm: JobManager, home: Path, tmp_path: Path, name: str) -> None:
    nb = make_notebook(tmp_path / "report.ipynb")
    with pytest.raises(BadParams, match="parameter name") as err:
        jm.submit("notebook", {"notebook": str(nb), "parameters": {name: 1}})
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value) and len(str(err.value)) < 300
    assert job_count(home) == 0


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


BAD_VALUES = [math.nan, math.inf, -math.inf, object(), {1, 2}, b"bytes", (1, 2), {"k": [math.nan]},
              nested(25), {"a": {1: "int key"}}]


@pytest.mark.parametrize("value", BAD_VALUES, ids=[type(v).__name__ + str(i) for i, v in enumerate(BAD_VALUES)])
def test_values_must_be_json(jm: JobManager, home: Path, tmp_path: Path, value: Any) -> None:
    nb = make_notebook(tmp_path / "report.ipynb")
    with pytest.raises(BadParams, match="parameter 'n'|key must be text") as err:  # (the service checks keys too)
        jm.submit("notebook", {"notebook": str(nb), "parameters": {"n": value}})
    assert "\n" not in str(err.value)
    assert job_count(home) == 0


@pytest.mark.parametrize("kernel", ["../../bin/sh", "/usr/bin/python3", "python3 --x", "..", ".hidden", "a/b",
                                    "python3;id", "~root"])
def test_kernel_must_be_a_plain_name(jm: JobManager, home: Path, tmp_path: Path, kernel: str) -> None:
    nb = make_notebook(tmp_path / "report.ipynb")
    with pytest.raises(BadParams, match="is not a plain kernel name"):
        jm.submit("notebook", {"notebook": str(nb), "kernel": kernel})
    assert job_count(home) == 0


def test_bad_values_through_the_cli_are_one_line(home: Path, tmp_path: Path) -> None:
    nb = str(make_notebook(tmp_path / "report.ipynb"))
    for params in ({"notebook": nb, "parameters": {"import": 1}}, {"notebook": nb, "parameters": {"n": nested(30)}},
                   {"notebook": nb, "kernel": "../x"}, {"notebook": nb, "parameters": {"n": 1}, "cell_timeout": 1e999}):
        result = cli_run(home, "cli-user", "submit", "notebook", "--params-json", json.dumps(params))
        assert result.exit_code == 2 and result.output.count("\n") == 1, (params, result.output)
    assert job_count(home) == 0


# -- the run_notebooks permission ------------------------------------------------------------------------------
def test_run_notebooks_is_data_and_only_admins_hold_it_by_default() -> None:
    assert "run_notebooks" in PERMISSIONS
    assert "run_notebooks" in DEFAULT_GROUPS["admins"][0]
    assert "run_notebooks" not in DEFAULT_GROUPS["operators"][0]
    assert "run_notebooks" not in DEFAULT_GROUPS["analysts"][0]
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "| `run_notebooks` |" in readme


@pytest.fixture
def demo_users(home: Path) -> dict[str, JobManager]:
    """An operator and an analyst in the default (demo's) groups, and the administrator."""
    admin = JobManager(home, user="admin")
    admin.add_user("oli", "password-123", groups=["operators"])
    admin.add_user("ana", "password-123", groups=["analysts"])
    admin.add_case("analysts", "ACME-12")
    return {"admin": admin, "oli": JobManager(home, user="oli"), "ana": JobManager(home, user="ana")}


def test_operators_and_analysts_cannot_run_notebooks(demo_users: dict[str, JobManager], home: Path,
                                                     tmp_path: Path) -> None:
    nb = str(make_notebook(tmp_path / "report.ipynb"))
    params = {"notebook": nb, "parameters": {"n": 2}}
    admin, oli, ana = demo_users["admin"], demo_users["oli"], demo_users["ana"]
    admin.schedule("admin-nb", "notebook", params, every="1h")
    before = (job_count(home), admin.store.schedules.get("admin-nb"))
    for user in (oli, ana):
        with pytest.raises(PermissionDenied, match="may not submit notebook jobs: they need the run_notebooks"):
            user.submit("notebook", params, case="ACME-12")
    with pytest.raises(PermissionDenied, match="run_notebooks"):
        oli.create_schedule("oli-nb", "notebook", params, every="1h", source="dashboard")
    with pytest.raises(PermissionDenied, match="run_notebooks"):
        oli.schedule("admin-nb", "notebook", params, every="1m")  # replacing it
    with pytest.raises(PermissionDenied, match="run_notebooks"):
        oli.edit_schedule("admin-nb", every="1m")
    with pytest.raises(PermissionDenied, match="run_notebooks"):
        oli.run_schedule_now("admin-nb")
    oli.disable_schedule("admin-nb")  # stopping one starts nothing: manage_schedules is enough
    with pytest.raises(PermissionDenied, match="run_notebooks"):
        oli.enable_schedule("admin-nb")
    assert job_count(home) == 0 and [s["name"] for s in admin.store.schedules.list_all()] == ["admin-nb"]
    after = admin.store.schedules.get("admin-nb")
    assert after["owner"] == "admin" and after["params"] == before[1]["params"]
    assert oli.submit("sleep", {"tasks": 1}) > 0  # the rest of their submit rights are unchanged
    audit = admin.audit_log(200)
    refused = audit[(audit.actor == "oli") & (~audit.allowed)]
    assert len(refused) == 6 and set(refused.target) == {"notebook"}

    for args in (["submit", "notebook", "--params-json", json.dumps(params)],
                 ["schedule", "run-now", "admin-nb"],
                 ["schedule", "add", "x", "notebook", "--params-json", json.dumps(params), "--every", "1h"]):
        result = cli_run(home, "oli", *args)
        assert result.exit_code == 2 and result.output.count("\n") == 1 and "run_notebooks" in result.output, args


def test_an_admin_runs_notebooks_and_notebook_schedules_on_a_real_agent(
        demo_users: dict[str, JobManager], home: Path, tmp_path: Path, start_agent) -> None:
    nb = str(make_notebook(tmp_path / "report.ipynb"))
    admin = demo_users["admin"]
    tricky = 'it\'s "quoted"\n\\ {x} $(id) `id`'
    start_agent("a1")
    job_id = admin.submit("notebook", {"notebook": nb, "parameters": {"greeting": tricky, "n": 21}})
    job = admin.wait(job_id, timeout=120)
    assert job.state == "completed", job.tasks[0].error
    executed = nbformat.read(str(admin.open_artifact(job_id, "report.ipynb")), as_version=4)
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert f"{tricky!r} 42" in printed  # the value arrived as data, exactly

    admin.schedule("nightly-nb", "notebook", {"notebook": nb, "parameters": {"n": 5}}, every="1h")
    admin.store.schedules.update("nightly-nb", {"next_run_at": 1.0}, actor="test", message="due now")
    fired = wait_for(lambda: [j for j in admin.jobs().itertuples() if j.name == "nightly-nb"], timeout=30,
                     what="the agent fires the notebook schedule")
    run = admin.wait(int(fired[0].id), timeout=120)  # type: ignore[index]
    assert run.state == "completed" and run.owner == "admin"
