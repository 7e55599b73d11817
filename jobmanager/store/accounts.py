"""Users, groups, and what groups grant: the rows behind sign-in and permissions (:mod:`jobmanager.auth`).

Only password hashes reach these tables; the clear password never leaves :mod:`jobmanager.auth.passwords`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from jobmanager.errors import InvalidState, NotFound
from jobmanager.store.connection import assignments, first_row

if TYPE_CHECKING:
    from jobmanager.store.sql import SqlStore

#: the user columns :meth:`Accounts.update_user` may set
USER_FIELDS = frozenset({"display_name", "password_hash", "active", "failures", "locked_until", "last_login_at"})

#: a group's link tables and the column each links
GROUP_LINKS = {"group_members": "username", "group_permissions": "permission", "group_cases": "case_id"}


class Accounts:
    """``store.accounts``: users and groups, in the store's transactions."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    # -- users ---------------------------------------------------------------------------------------------
    def create_user(self, username: str, display_name: str, password_hash: str) -> None:
        """Only a hash ever arrives here; InvalidState if the name is taken."""
        with self._store._tx() as c:
            cur = c.execute(
                "INSERT INTO users (username, display_name, password_hash, created_at) VALUES (?,?,?,?)"
                " ON CONFLICT (username) DO NOTHING",
                (username, display_name, password_hash, time.time()),
            )
            if cur.rowcount != 1:
                raise InvalidState(f"user {username!r} already exists")

    def get_user(self, username: str) -> dict[str, Any]:
        row = self._store._fetchone("SELECT * FROM users WHERE username = ?", (username,))
        if row is None:
            raise NotFound(f"no user {username!r}")
        return dict(row)

    def update_user(self, username: str, **fields: Any) -> None:
        if set(fields) - USER_FIELDS:
            raise ValueError(f"unknown user fields {sorted(set(fields) - USER_FIELDS)}")
        sets, values = assignments({k: int(bool(v)) if k == "active" else v for k, v in fields.items()})
        with self._store._tx() as c:
            cur = c.execute(f"UPDATE users SET {sets} WHERE username = ?", (*values, username))
            if cur.rowcount != 1:
                raise NotFound(f"no user {username!r}")

    def claim_sign_in(self, username: str, now: float, max_failures: int, lockout_s: float) -> int | None:
        """Count one sign-in attempt BEFORE its password is checked; None means refuse it unchecked.

        One conditional UPDATE, so concurrent attempts cannot all pass: it succeeds only while the
        account is not locked (``locked_until`` NULL and ``failures < max_failures``, or a lock that
        has expired, which starts the count again at 1), increments ``failures`` and returns the new
        count (the attempt's number). The attempt that brings ``failures`` to ``max_failures`` still
        proceeds but sets ``locked_until = now + lockout_s``, so no further attempt is allowed until
        then. Unknown users get None. A successful sign-in (only ever one that was allowed here)
        resets ``failures`` and ``locked_until`` through :meth:`update_user`; a failed one needs
        nothing more, since it was already counted.
        """
        with self._store._tx() as c:
            row = first_row(c.execute(
                "UPDATE users SET"
                " failures = CASE WHEN locked_until <= ? THEN 1 ELSE failures + 1 END,"
                " locked_until = CASE WHEN (CASE WHEN locked_until <= ? THEN 0 ELSE failures END) + 1 >= ?"
                " THEN ? WHEN locked_until <= ? THEN NULL ELSE locked_until END"
                " WHERE username = ? AND (locked_until <= ? OR (locked_until IS NULL AND failures < ?))"
                " RETURNING failures",
                (now, now, max_failures, now + lockout_s, now, username, now, max_failures),
            ))
        return int(row["failures"]) if row else None

    def list_users(self) -> list[dict[str, Any]]:
        """Users without their hashes, each with its groups."""
        rows = self._store._fetchall(
            "SELECT u.username, u.display_name, u.active, u.locked_until, u.last_login_at, u.created_at,"
            f" {self._store.dialect.string_agg('m.group_name')} AS groups FROM users u"
            " LEFT JOIN group_members m ON m.username = u.username GROUP BY u.username ORDER BY u.username"
        )
        return [dict(r) for r in rows]

    def count_users(self) -> int:
        return int(self._store._fetchone("SELECT count(*) AS n FROM users")["n"])

    # -- groups --------------------------------------------------------------------------------------------
    def create_group(self, name: str, description: str = "") -> None:
        """InvalidState if the name is taken."""
        with self._store._tx() as c:
            cur = c.execute("INSERT INTO groups (name, description, created_at) VALUES (?,?,?)"
                            " ON CONFLICT (name) DO NOTHING", (name, description, time.time()))
            if cur.rowcount != 1:
                raise InvalidState(f"group {name!r} already exists")

    def group_link(self, table: str, group: str, value: str, add: bool) -> bool:
        """Add or remove one member, permission or case of a group (``table``: one of :data:`GROUP_LINKS`);
        returns whether anything changed."""
        column = GROUP_LINKS[table]
        share = self._store.dialect.for_share
        with self._store._tx() as c:
            if c.execute(f"SELECT 1 FROM groups WHERE name = ?{share}", (group,)).fetchone() is None:
                raise NotFound(f"no group {group!r}")
            if table == "group_members" and c.execute(
                    f"SELECT 1 FROM users WHERE username = ?{share}", (value,)).fetchone() is None:
                raise NotFound(f"no user {value!r}")
            if add:
                cur = c.execute(f"INSERT INTO {table} (group_name, {column}) VALUES (?, ?) ON CONFLICT DO NOTHING",
                                (group, value))
            else:
                cur = c.execute(f"DELETE FROM {table} WHERE group_name = ? AND {column} = ?", (group, value))
            return cur.rowcount == 1

    def list_groups(self) -> list[dict[str, Any]]:
        """Every group with its members, permissions and cases (one snapshot)."""
        out = []
        with self._store._read() as c:
            for g in c.execute("SELECT * FROM groups ORDER BY name").fetchall():
                d = dict(g)
                for key, table in (("members", "group_members"), ("permissions", "group_permissions"),
                                   ("cases", "group_cases")):
                    column = GROUP_LINKS[table]
                    d[key] = [r[column] for r in c.execute(
                        f"SELECT {column} FROM {table} WHERE group_name = ? ORDER BY {column}", (d["name"],)
                    ).fetchall()]
                out.append(d)
        return out

    def grants_of(self, username: str) -> tuple[set[str], set[str]]:
        """The union of a user's groups' permissions and cases."""
        with self._store._read() as c:
            perms = {r["permission"] for r in c.execute(
                "SELECT p.permission FROM group_permissions p JOIN group_members m ON m.group_name = p.group_name"
                " WHERE m.username = ?", (username,)).fetchall()}
            cases = {r["case_id"] for r in c.execute(
                "SELECT k.case_id FROM group_cases k JOIN group_members m ON m.group_name = k.group_name"
                " WHERE m.username = ?", (username,)).fetchall()}
        return perms, cases
