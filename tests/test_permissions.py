"""Users, groups, permissions, sign-in and the audit trail.

The matrix walks every permission against every action, through the Python API
and through the CLI, and checks each refusal: PermissionDenied (exit 2 on the
CLI), nothing changed, and a refused row in the audit trail.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobmanager import JobManager, PermissionDenied
from jobmanager.auth.passwords import MAX_FAILURES
from jobmanager.auth.permissions import PERMISSIONS
from jobmanager.cli.main import cli
from jobmanager.service import SIGN_IN_REFUSED

from .backends import query_store
from .conftest import ADMIN_PASSWORD


def snapshot(home: Path) -> tuple:
    """Everything an action could change, except the audit trail."""
    # sorted whole: ORDER BY 1 leaves rows with the same first column in any order (PostgreSQL does reorder)
    return tuple(sorted(query_store(home, f"SELECT * FROM {t}"), key=repr)
                 for t in ("jobs", "tasks", "schedules", "users", "groups", "group_permissions", "group_members",
                           "group_cases", "agents"))


@pytest.fixture
def world(home: Path):
    """An admin, one user per permission (each also holding view_all_jobs), and a few jobs."""
    admin = JobManager(home, user="admin")
    for perm in PERMISSIONS:
        admin.add_group(f"g-{perm}")
        admin.grant(f"g-{perm}", perm)
        if perm != "view_own_jobs":
            admin.grant(f"g-{perm}", "view_all_jobs")
        admin.add_case(f"g-{perm}", "*")
        admin.add_user(f"u-{perm}", "password-123", groups=[f"g-{perm}"])
    admin.add_user("nobody", "password-123")
    job = admin.submit("sleep", {"tasks": 1}, name="target")
    admin.submit("sleep", {"tasks": 1}, name="finished")
    admin.store.register_agent({"name": "ag", "host": "h", "pid": 1, "workers": 1, "worker_type": "thread",
                                "version": "t", "interval": 5})
    admin.schedule("sched", "sleep", every="1h")
    return admin, job


# action name -> (permission it needs, Python call, CLI args)
def actions(job: int) -> dict[str, tuple[str, Callable[[JobManager], object], list[str]]]:
    j = str(job)
    return {
        "view job": ("view_all_jobs", lambda m: m.job(job), ["show", j]),
        "list jobs": ("view", lambda m: m.jobs(), ["jobs"]),  # own jobs only, or all: both may list
        "submit": ("submit_jobs", lambda m: m.submit("sleep", {"tasks": 1}), ["submit", "sleep"]),
        "pause": ("manage_jobs", lambda m: m.pause(job), ["pause", j]),
        "resume": ("manage_jobs", lambda m: m.resume(job), ["resume", j]),
        "cancel": ("manage_jobs", lambda m: m.cancel(job), ["cancel", j]),
        "priority": ("manage_jobs", lambda m: m.set_priority(job, 3), ["priority", j, "3"]),
        "retry": ("retry_tasks", lambda m: m.retry(job), ["retry", j]),
        "log": ("download_logs", lambda m: m.log(job), ["logs", j]),
        "download": ("download_outputs", lambda m: m.open_artifact(job, "x.pdf"),
                     ["download", j, "--artifact", "x.pdf"]),
        "list schedules": ("view_schedules", lambda m: m.schedules(), ["schedule", "list"]),
        "disable schedule": ("manage_schedules", lambda m: m.disable_schedule("sched"),
                             ["schedule", "disable", "sched"]),
        # running a schedule submits its job: the submit rights for its type too (issue 12, item 1)
        "run schedule": ("manage_schedules+submit_jobs", lambda m: m.run_schedule_now("sched"),
                         ["schedule", "run-now", "sched"]),
        "agents": ("view_agents", lambda m: m.agents(), ["agents"]),
        "stop agent": ("manage_agents", lambda m: m.stop_agent("ag"), ["stop-agent", "ag"]),
        "set limit": ("manage_agents", lambda m: m.set_limit("lim", type="sleep", max_running=2),
                      ["limits", "set", "lim", "--type", "sleep", "--max", "2"]),
        "delete limit": ("manage_agents", lambda m: m.delete_limit("nolimit"), ["limits", "delete", "nolimit"]),
        "limits": ("view_agents", lambda m: m.limits(), ["limits", "list"]),
        "queues": ("view_agents", lambda m: m.queues(), ["queues"]),
        "list users": ("admin", lambda m: m.users(), ["user", "list"]),
        "add group": ("admin", lambda m: m.add_group("new-group"), ["group", "add", "new-group"]),
        "grant": ("admin", lambda m: m.grant("g-admin", "view_agents"), ["group", "grant", "g-admin", "view_agents"]),
        "audit": ("admin", lambda m: m.audit_log(), ["audit"]),
    }


def expected(perm: str | None, needed: str) -> bool:
    held = set() if perm is None else {perm} | ({"view_all_jobs"} if perm != "view_own_jobs" else set())
    if needed == "view":
        return bool(held & {"view_own_jobs", "view_all_jobs", "admin"})
    return "admin" in held or all(n in held for n in needed.split("+"))


USERS = [*PERMISSIONS, None]


@pytest.mark.parametrize("perm", USERS, ids=[p or "no-permission" for p in USERS])
def test_matrix_python_api(world, home: Path, perm: str | None) -> None:
    admin, job = world
    jm = JobManager(home, user=f"u-{perm}" if perm else "nobody")
    refusals = 0
    for name, (needed, call, _cli) in actions(job).items():
        before = snapshot(home)
        try:
            call(jm)
            outcome = True
        except PermissionDenied as exc:
            outcome = False
            assert str(exc).count("\n") == 0
            assert snapshot(home) == before, f"{name} changed something although refused"
        except Exception:  # InvalidState, NotFound...: the check let it through
            outcome = True
        assert outcome == expected(perm, needed), f"{perm} / {name}"
        refusals += not outcome
    audit = admin.audit_log(1000)
    mine = audit[(audit.actor == jm.user) & (~audit.allowed)]
    assert len(mine) == refusals and set(mine.interface) <= {"python"}


@pytest.mark.parametrize("perm", USERS, ids=[p or "no-permission" for p in USERS])
def test_matrix_cli(world, home: Path, perm: str | None) -> None:
    admin, job = world
    user = f"u-{perm}" if perm else "nobody"
    runner = CliRunner()
    refusals = 0
    for name, (needed, _call, args) in actions(job).items():
        before = snapshot(home)
        result = runner.invoke(cli, ["--home", str(home), "--user", user, *args])
        refused = any(w in result.output for w in ("may not", "no Job Manager user", "you may see"))
        if refused:
            assert result.exit_code == 2 and result.output.count("\n") == 1, (name, result.output)
            assert snapshot(home) == before
        assert (not refused) == expected(perm, needed), f"{perm} / {name}: {result.output}"
        refusals += refused
    audit = admin.audit_log(1000)
    mine = audit[(audit.actor == user) & (~audit.allowed)]
    assert len(mine) == refusals and set(mine.interface) == ({"cli"} if refusals else set())


def test_unknown_user_may_do_nothing(home: Path) -> None:
    ghost = JobManager(home, user="ghost")
    with pytest.raises(PermissionDenied, match="no Job Manager user 'ghost'"):
        ghost.jobs()
    with pytest.raises(PermissionDenied):
        ghost.submit("sleep")


def test_disabled_user_may_do_nothing(home: Path) -> None:
    admin = JobManager(home, user="admin")
    admin.add_user("ana", "password-123", groups=["operators"])
    JobManager(home, user="ana").jobs()
    admin.disable_user("ana")
    with pytest.raises(PermissionDenied, match="disabled"):
        JobManager(home, user="ana").jobs()
    with pytest.raises(PermissionDenied, match="wrong username or password"):
        JobManager.sign_in(home, "ana", "password-123")


# -- cases ----------------------------------------------------------------------------------------
def test_case_scoping(home: Path) -> None:
    admin = JobManager(home, user="admin")
    admin.add_group("acme")
    for perm in ("view_own_jobs", "view_all_jobs", "submit_jobs", "manage_jobs", "view_schedules"):
        admin.grant("acme", perm)
    admin.add_case("acme", "ACME")
    admin.add_user("ana", "password-123", groups=["acme"])
    acme = admin.submit("sleep", case="ACME", name="acme job")
    globex = admin.submit("sleep", case="GLOBEX", name="globex job")
    open_job = admin.submit("sleep", name="no case")
    admin.schedule("acme-sched", "sleep", every="1h", case="ACME")
    admin.schedule("globex-sched", "sleep", every="1h", case="GLOBEX")
    ana = JobManager(home, user="ana")
    assert sorted(ana.jobs().id) == sorted([acme, open_job])
    assert ana.job(acme).name == "acme job"
    with pytest.raises(PermissionDenied, match=f"^no job {globex} you may see$"):  # as if it did not exist
        ana.job(globex)
    with pytest.raises(PermissionDenied):
        ana.cancel(globex)
    with pytest.raises(PermissionDenied):
        ana.submit("sleep", case="GLOBEX")
    own = ana.submit("sleep", case="ACME")
    assert ana.job(own).owner == "ana"
    assert list(ana.schedules().name) == ["acme-sched"]
    with pytest.raises(PermissionDenied):
        ana.get_schedule("globex-sched")
    assert admin.job(globex).state == "queued"


def test_view_own_jobs_only(home: Path) -> None:
    admin = JobManager(home, user="admin")
    admin.add_group("solo")
    admin.grant("solo", "view_own_jobs")
    admin.grant("solo", "submit_jobs")
    admin.add_case("solo", "SOLO")
    admin.add_user("sam", "password-123", groups=["solo"])
    other = admin.submit("sleep")
    sam = JobManager(home, user="sam")
    mine = sam.submit("sleep", case="SOLO")
    admin.remove_case("solo", "SOLO")  # own jobs stay visible whatever their case
    assert list(sam.jobs().id) == [mine] and sam.job(mine).case == "SOLO"
    with pytest.raises(PermissionDenied):
        sam.job(other)


# -- passwords and sign-in ------------------------------------------------------------------------
def test_passwords_are_hashed_never_stored_in_clear(home: Path) -> None:
    admin = JobManager(home, user="admin")
    admin.add_user("ana", "correct horse battery", groups=["operators"])
    admin.add_user("bob", "correct horse battery", groups=["operators"])
    hashes = {u: admin.store.accounts.get_user(u)["password_hash"] for u in ("ana", "bob")}
    assert all(h.startswith("$argon2id$v=19$m=19456,t=2,p=1$") for h in hashes.values())
    assert hashes["ana"] != hashes["bob"]  # per-user salt
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"correct horse battery" not in data and ADMIN_PASSWORD.encode() not in data, path
    assert "password_hash" not in admin.users().columns


def test_sign_in(home: Path) -> None:
    JobManager(home, user="admin").add_user("ana", "password-123", groups=["operators"])
    jm = JobManager.sign_in(home, "ana", "password-123")
    assert jm.user == "ana" and jm.interface == "dashboard" and "manage_jobs" in jm.me()["permissions"]
    with pytest.raises(PermissionDenied, match=f"^{SIGN_IN_REFUSED}$"):
        JobManager.sign_in(home, "ana", "wrong-password")
    with pytest.raises(PermissionDenied, match=f"^{SIGN_IN_REFUSED}$"):
        JobManager.sign_in(home, "nobody-at-all", "password-123")


def test_lock_out_after_repeated_failures(home: Path) -> None:
    admin = JobManager(home, user="admin")
    admin.add_user("ana", "password-123", groups=["operators"])
    for _ in range(MAX_FAILURES):
        with pytest.raises(PermissionDenied, match=f"^{SIGN_IN_REFUSED}$"):
            JobManager.sign_in(home, "ana", "guess")
    with pytest.raises(PermissionDenied, match=f"^{SIGN_IN_REFUSED}$"):
        JobManager.sign_in(home, "ana", "password-123")  # even the right password, for now
    admin.enable_user("ana")
    assert JobManager.sign_in(home, "ana", "password-123").user == "ana"
    audit = admin.audit_log()
    signins = audit[audit.action == "sign_in"]
    assert (~signins.allowed).sum() == MAX_FAILURES + 1 and signins.allowed.iloc[0]
    assert list(signins.detail.iloc[1:3]) == ["locked", "wrong password; locked for 5 min after 5 failures"]


def test_users_change_their_own_password(home: Path) -> None:
    admin = JobManager(home, user="admin")
    admin.add_user("ana", "password-123", groups=["analysts"])
    ana = JobManager(home, user="ana")
    ana.set_password("ana", "new-password-456")
    assert JobManager.sign_in(home, "ana", "new-password-456")
    with pytest.raises(PermissionDenied, match="needs the admin permission"):
        ana.set_password("admin", "hijacked-123")


def test_bad_admin_input(home: Path) -> None:
    from jobmanager import BadParams, InvalidState, NotFound

    admin = JobManager(home, user="admin")
    with pytest.raises(BadParams, match="unknown permission 'fly'"):
        admin.grant("operators", "fly")
    with pytest.raises(BadParams, match="at least 8 characters"):
        admin.add_user("ana", "short")
    with pytest.raises(BadParams, match="invalid user name"):
        admin.add_user("../etc", "password-123")
    with pytest.raises(NotFound, match="no group 'ghosts'"):
        admin.add_to_group("ghosts", "admin")
    with pytest.raises(InvalidState, match="already exists"):
        admin.add_user("admin", "password-123")
    assert list(admin.users().username) == ["admin", "cli-user", "tester"]


def test_init_prints_a_one_time_password(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--home", str(tmp_path / "h"), "init"], env={"JOBMANAGER_ADMIN_PASSWORD": ""})
    assert result.exit_code == 0
    password = result.output.split("one-time password: ")[1].split()[0]
    assert JobManager.sign_in(tmp_path / "h", "admin", password).user == "admin"
    again = CliRunner().invoke(cli, ["--home", str(tmp_path / "h"), "init"])
    assert "one-time password" not in again.output  # only for a new home


def test_admin_cli(home: Path) -> None:
    runner = CliRunner()

    def run(*args: str, input: str | None = None):
        return runner.invoke(cli, ["--home", str(home), "--user", "admin", *args], input=input)

    assert "one-time password" in run("user", "add", "ana", "--group", "operators").output
    assert run("user", "add", "bob", "--password-stdin", input="bob-password-1\n").exit_code == 0
    assert JobManager.sign_in(home, "bob", "bob-password-1")
    assert run("group", "add", "night-shift").exit_code == 0
    assert run("group", "grant", "night-shift", "retry_tasks").exit_code == 0
    assert run("group", "add-user", "night-shift", "bob").exit_code == 0
    assert run("group", "add-case", "night-shift", "ACME").exit_code == 0
    listed = run("group", "list", "--json").output
    assert '"night-shift"' in listed and "retry_tasks" in listed and "ACME" in listed
    assert run("group", "revoke", "night-shift", "retry_tasks").exit_code == 0
    assert run("group", "remove-user", "night-shift", "bob").exit_code == 0
    assert run("user", "passwd", "bob", input="bob-password-2\n").exit_code == 0
    assert run("user", "disable", "bob").exit_code == 0
    assert "bob" in run("user", "list").output
    assert run("group", "grant", "night-shift", "fly").exit_code == 2
    assert "retry_tasks" in run("permissions").output
    assert "grant" in run("audit").output
