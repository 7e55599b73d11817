"""Users, groups, sign-in and the audit trail: the administration methods of JobManager."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

import pandas as pd

from .auth import (
    LOCKOUT_S,
    MAX_FAILURES,
    check_password_strength,
    generate_password,
    hash_password,
    needs_rehash,
    verify_password,
)
from .errors import BadParams, NotFound, PermissionDenied
from .permissions import DEFAULT_GROUPS, PERMISSIONS, Actor

if TYPE_CHECKING:
    from .home import Home
    from .models import Job
    from .service import JobManager
    from .store import JobStore

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or set(name) - _NAME_CHARS:
        raise BadParams(f"invalid {kind} name {name!r}: 1-64 letters, digits, '.', '_', '-', '@'")
    return name


#: the one answer to every refused sign-in (unknown user, wrong password, locked, disabled), so the
#: answer never tells which accounts exist; the audit trail records the real reason
SIGN_IN_REFUSED = "wrong username or password, or the account is locked or disabled"

_DUMMY: list[str] = []


def _dummy_hash() -> str:
    """A real argon2id hash to verify against when the user's own hash must not be checked.

    Unknown users and locked accounts cost the same hash work as a real check, so the time an
    answer takes does not tell names apart either.
    """
    if not _DUMMY:
        _DUMMY.append(hash_password("not-a-password-of-anyone"))
    return _DUMMY[0]


def create_default_groups(store: JobStore) -> None:
    """admins, operators and analysts with the permissions of :data:`DEFAULT_GROUPS`."""
    existing = {g["name"] for g in store.list_groups()}
    for name, (perms, cases) in DEFAULT_GROUPS.items():
        if name in existing:
            continue
        store.create_group(name, f"default {name} group")
        for perm in perms:
            store.group_link("group_permissions", name, perm, True)
        for case in cases:
            store.group_link("group_cases", name, case, True)


class AdminMethods:
    home: Home
    user: str
    interface: str
    store: JobStore

    def _allow(self, action: str, job: Job | None = None, *, target: tuple[str, str] | None = None,
               case: str | None = None) -> Actor:  # provided by JobManager
        raise NotImplementedError

    if TYPE_CHECKING:  # provided by JobManager
        @property
        def actor(self) -> Actor: ...

    # -- sign-in -------------------------------------------------------------------------------
    @classmethod
    def sign_in(cls, home: Any, username: str, password: str, *, interface: str = "dashboard",
                **kwargs: Any) -> JobManager:
        """A JobManager acting as ``username`` once the password checks out.

        The attempt is counted in the store before the password is checked
        (:meth:`JobStore.claim_sign_in`), so at most MAX_FAILURES guesses are ever checked before
        the account locks for LOCKOUT_S seconds, however many arrive at once. Every refusal gets
        the same message (:data:`SIGN_IN_REFUSED`) and the same hash work; the audit trail keeps
        the real reason. An old scrypt hash is replaced by argon2id on a successful sign-in.
        """
        jm = cast("type[JobManager]", cls)(home, user=username, interface=interface, **kwargs)  # a mixin of JobManager
        store, now = jm.store, time.time()
        try:
            user = store.get_user(username)
        except NotFound:
            user = None
        attempt = store.claim_sign_in(username, now, MAX_FAILURES, LOCKOUT_S) if user is not None else None
        if user is None or attempt is None:  # unknown or locked: the user's hash is never checked, the work the same
            verify_password(password, _dummy_hash())
            reason = "unknown user" if user is None else "locked"
        elif not verify_password(password, user["password_hash"]):
            reason = "wrong password" + (f"; locked for {round(LOCKOUT_S / 60)} min after {attempt} failures"
                                         if attempt >= MAX_FAILURES else f" (attempt {attempt} of {MAX_FAILURES})")
        elif not user["active"]:
            reason = "disabled"
        else:
            fields: dict[str, Any] = {"failures": 0, "locked_until": None, "last_login_at": now}
            if needs_rehash(user["password_hash"]):
                fields["password_hash"] = hash_password(password, check_strength=False)
            store.update_user(username, **fields)
            store.audit(username, interface, "sign_in", "user", username, True,
                        "password rehashed with argon2id" if "password_hash" in fields else None)
            return jm
        store.audit(username, interface, "sign_in", "user", username, False, reason)
        jm.close()  # a refused attempt keeps no connection open
        raise PermissionDenied(SIGN_IN_REFUSED)

    # -- users -------------------------------------------------------------------------------------
    def add_user(self, username: str, password: str | None = None, *, display_name: str | None = None,
                 groups: tuple[str, ...] | list[str] = ()) -> str | None:
        """Create a user; returns the generated password when none was given (show it once)."""
        self._allow("admin", target=("user", str(username)))
        _check_name("user", username)
        generated = None
        if password is None:
            password = generated = generate_password()
        check_password_strength(password)
        for group in groups:
            if group not in {g["name"] for g in self.store.list_groups()}:
                raise NotFound(f"no group {group!r}")
        self.store.create_user(username, display_name or username, hash_password(password))
        for group in groups:
            self.store.group_link("group_members", group, username, True)
        return generated

    def set_password(self, username: str, password: str) -> None:
        """Administrators may set anyone's password; every user may set their own."""
        if username != self.user:
            self._allow("admin", target=("user", username))
        else:
            me = self.store.get_user(username)
            if not me["active"]:
                raise PermissionDenied(f"user {username!r} is disabled")
            self.store.audit(self.user, self.interface, "passwd", "user", username, True)
        self.store.get_user(username)
        self.store.update_user(username, password_hash=hash_password(password), failures=0, locked_until=None)

    def disable_user(self, username: str) -> None:
        self._allow("admin", target=("user", username))
        self.store.update_user(username, active=0)

    def enable_user(self, username: str) -> None:
        self._allow("admin", target=("user", username))
        self.store.update_user(username, active=1, failures=0, locked_until=None)

    def users(self) -> pd.DataFrame:
        self._allow("admin", target=("users", "*"))
        df = pd.DataFrame(self.store.list_users(), columns=["username", "display_name", "active", "groups",
                                                             "locked_until", "last_login_at", "created_at"])
        for col in ("locked_until", "last_login_at", "created_at"):
            df[col] = pd.to_datetime(df[col], unit="s", utc=True)
        return df

    # -- groups --------------------------------------------------------------------------------------
    def add_group(self, name: str, description: str = "") -> None:
        self._allow("admin", target=("group", str(name)))
        self.store.create_group(_check_name("group", name), description)

    def grant(self, group: str, permission: str) -> None:
        self._allow("admin", target=("group", group))
        if permission not in PERMISSIONS:
            raise BadParams(f"unknown permission {permission!r}; the list: {', '.join(PERMISSIONS)}")
        self.store.group_link("group_permissions", group, permission, True)

    def revoke(self, group: str, permission: str) -> None:
        self._allow("admin", target=("group", group))
        if permission not in PERMISSIONS:
            raise BadParams(f"unknown permission {permission!r}; the list: {', '.join(PERMISSIONS)}")
        self.store.group_link("group_permissions", group, permission, False)

    def add_to_group(self, group: str, username: str) -> None:
        self._allow("admin", target=("group", group))
        self.store.group_link("group_members", group, username, True)

    def remove_from_group(self, group: str, username: str) -> None:
        self._allow("admin", target=("group", group))
        self.store.group_link("group_members", group, username, False)

    def add_case(self, group: str, case: str) -> None:
        """Let a group see a case's jobs, schedules and outputs (``*``: every case)."""
        self._allow("admin", target=("group", group))
        if not isinstance(case, str) or not case.strip():
            raise BadParams("a case needs a name")
        self.store.group_link("group_cases", group, case.strip(), True)

    def remove_case(self, group: str, case: str) -> None:
        self._allow("admin", target=("group", group))
        self.store.group_link("group_cases", group, case, False)

    def groups(self) -> pd.DataFrame:
        self._allow("admin", target=("groups", "*"))
        return pd.DataFrame(self.store.list_groups(),
                            columns=["name", "description", "members", "permissions", "cases", "created_at"])

    def audit_log(self, limit: int = 200) -> pd.DataFrame:
        """The newest audit rows: who did (or was refused) what, when, from which interface."""
        self._allow("admin", target=("audit", "*"))
        df = pd.DataFrame(self.store.list_audit(limit), columns=["id", "at", "actor", "interface", "action",
                                                                  "target_kind", "target", "allowed", "detail"])
        df["at"] = pd.to_datetime(df["at"], unit="s", utc=True)
        df["allowed"] = df["allowed"].astype(bool)
        return df

    def permissions_list(self) -> dict[str, str]:
        return dict(PERMISSIONS)

    def me(self) -> dict[str, Any]:
        """The acting user's name, permissions and cases (what the dashboard offers)."""
        actor = self.actor
        return {"username": actor.username, "permissions": sorted(actor.permissions), "cases": sorted(actor.cases),
                "interface": self.interface}
