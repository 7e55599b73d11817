"""Sign-in under attack (issue 12, item 9): concurrent guessing, the lock, one answer, argon2id.

Every attempt is counted in the store before its password is checked, in one conditional UPDATE,
so twenty guesses sent at once get at most MAX_FAILURES checks; every refusal reads the same and
costs the same hash work; old scrypt hashes become argon2id on the next successful sign-in.
These run on both backends (JOBMANAGER_TEST_BACKEND=pg-redis puts the home on PostgreSQL).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from jobmanager import JobManager, PermissionDenied, service
from jobmanager.auth.passwords import LOCKOUT_S, MAX_FAILURES, verify_password
from jobmanager.service import SIGN_IN_REFUSED

PASSWORD = "ana-password-1"


@pytest.fixture
def admin(home: Path) -> JobManager:
    manager = JobManager(home, user="admin")
    manager.add_user("ana", PASSWORD, groups=["operators"])
    return manager


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The stored hashes sign-in verified a password against, in order (a pass-through, not a mock)."""
    seen: list[str] = []
    lock = threading.Lock()

    def counting_verify(password: str, stored: str | None) -> bool:
        with lock:
            seen.append(stored or "")
        return verify_password(password, stored)

    monkeypatch.setattr(service, "verify_password", counting_verify)
    return seen


def attempt(home: Path, user: str, password: str) -> str:
    """One sign-in; 'ok' or the refusal's message."""
    try:
        JobManager.sign_in(home, user, password).close()
    except PermissionDenied as exc:
        return str(exc)
    return "ok"


def at_once(calls: list[Callable[[], str]]) -> list[str]:
    """Run the calls in threads released together; their results in order."""
    results: list[str] = [""] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def signin_audit(admin: JobManager) -> list[tuple[bool, str]]:
    df = admin.audit_log(limit=1000)
    df = df[df.action == "sign_in"].iloc[::-1]  # oldest first
    return [(bool(a), d) for a, d in zip(df.allowed, df.detail.fillna(""), strict=True)]


def test_twenty_concurrent_wrong_guesses_check_at_most_max_failures(home: Path, admin: JobManager,
                                                                    checked: list[str]) -> None:
    real_hash = admin.store.accounts.get_user("ana")["password_hash"]
    results = at_once([lambda i=i: attempt(home, "ana", f"guess-number-{i}") for i in range(20)])
    assert results == [SIGN_IN_REFUSED] * 20
    # only MAX_FAILURES guesses were ever checked against ana's hash; the other 15 were refused unchecked
    assert checked.count(real_hash) == MAX_FAILURES and len(checked) == 20
    details = [d for _, d in signin_audit(admin)]
    assert sum(d.startswith("wrong password") for d in details) == MAX_FAILURES
    assert details.count("locked") == 20 - MAX_FAILURES
    user = admin.store.accounts.get_user("ana")
    assert user["locked_until"] > time.time() + LOCKOUT_S - 60 and user["failures"] == MAX_FAILURES
    # locked: even the right password is refused, unchecked, with the same words
    assert attempt(home, "ana", PASSWORD) == SIGN_IN_REFUSED
    assert checked.count(real_hash) == MAX_FAILURES


def test_a_right_guess_among_wrong_ones_does_not_reset_a_lock(home: Path, admin: JobManager,
                                                              checked: list[str]) -> None:
    real_hash = admin.store.accounts.get_user("ana")["password_hash"]
    for i in range(MAX_FAILURES):
        assert attempt(home, "ana", f"guess-number-{i}") == SIGN_IN_REFUSED
    locked = admin.store.accounts.get_user("ana")
    assert locked["locked_until"] is not None
    calls = [lambda i=i: attempt(home, "ana", f"other-guess-{i}") for i in range(10)]
    calls.insert(5, lambda: attempt(home, "ana", PASSWORD))
    assert at_once(calls) == [SIGN_IN_REFUSED] * 11
    after = admin.store.accounts.get_user("ana")
    assert (after["failures"], after["locked_until"]) == (locked["failures"], locked["locked_until"])
    assert checked.count(real_hash) == MAX_FAILURES  # none of the eleven was checked
    assert [d for ok, d in signin_audit(admin)][-11:] == ["locked"] * 11
    # once the lock has run out the count starts again, and the right password gets in and resets it
    admin.store.accounts.update_user("ana", locked_until=time.time() - 1)
    assert attempt(home, "ana", "guess-after-lock") == SIGN_IN_REFUSED
    assert admin.store.accounts.get_user("ana")["failures"] == 1
    assert attempt(home, "ana", PASSWORD) == "ok"
    user = admin.store.accounts.get_user("ana")
    assert (user["failures"], user["locked_until"]) == (0, None)


def test_a_right_password_within_the_budget_resets_the_count(home: Path, admin: JobManager) -> None:
    for _ in range(2):
        for i in range(MAX_FAILURES - 1):
            assert attempt(home, "ana", f"guess-number-{i}") == SIGN_IN_REFUSED
        assert attempt(home, "ana", PASSWORD) == "ok"
    assert admin.store.accounts.get_user("ana")["failures"] == 0


def test_every_refusal_reads_the_same_and_costs_one_hash(home: Path, admin: JobManager,
                                                         checked: list[str]) -> None:
    admin.add_user("dora", "dora-password-1", groups=["operators"])
    admin.disable_user("dora")
    admin.add_user("lucy", "lucy-password-1", groups=["operators"])
    admin.store.accounts.update_user("lucy", locked_until=time.time() + LOCKOUT_S)
    cases = {"unknown user": ("nobody-here", "whatever-1"), "wrong password": ("ana", "wrong-password"),
             "locked": ("lucy", "lucy-password-1"), "disabled": ("dora", "dora-password-1")}
    timings: dict[str, list[float]] = {}
    for name, (user, password) in cases.items():
        for _ in range(3 if name == "wrong password" else 5):  # ana locks after five
            checked.clear()
            t0 = time.perf_counter()
            assert attempt(home, user, password) == SIGN_IN_REFUSED, name
            timings.setdefault(name, []).append(time.perf_counter() - t0)
            assert len(checked) == 1, name  # one argon2 verify for every refusal, real or dummy
    reasons = [d for ok, d in signin_audit(admin) if not ok]
    assert {r.split(" (")[0] for r in reasons} == {"unknown user", "wrong password", "locked", "disabled"}
    # the same work: no refusal is answered in a fraction of another's time (loose: the machine is shared)
    medians = {name: statistics.median(ts) for name, ts in timings.items()}
    assert max(medians.values()) < 3 * min(medians.values()), medians


def _old_scrypt_hash(password: str) -> str:
    """A hash as jobmanager wrote them before argon2id (auth.py, hashlib.scrypt n=2**14, r=8, p=1)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt${2**14}$8$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def test_an_old_scrypt_hash_becomes_argon2id_on_sign_in(home: Path, admin: JobManager) -> None:
    admin.store.accounts.update_user("ana", password_hash=_old_scrypt_hash("short"))  # too short for today's rules
    assert attempt(home, "ana", "wrong-password") == SIGN_IN_REFUSED
    assert admin.store.accounts.get_user("ana")["password_hash"].startswith("scrypt$")
    assert attempt(home, "ana", "short") == "ok"
    new_hash = admin.store.accounts.get_user("ana")["password_hash"]
    assert new_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert signin_audit(admin)[-1] == (True, "password rehashed with argon2id")
    assert attempt(home, "ana", "short") == "ok"
    assert admin.store.accounts.get_user("ana")["password_hash"] == new_hash  # already current: not rehashed again
    assert attempt(home, "ana", "wrong-password") == SIGN_IN_REFUSED
