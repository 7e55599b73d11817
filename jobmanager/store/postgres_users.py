"""Users, groups and the audit trail in the PostgreSQL store (a mixin of :class:`PostgresStore`).

Only password hashes reach these tables; the clear password never leaves auth.py.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import InvalidState, NotFound

_LINKS = {"group_members": "username", "group_permissions": "permission", "group_cases": "case_id"}


class PostgresUsers:
    _tx: Any
    _read: Any
    _fetchall: Any
    _fetchone: Any

    # -- users ---------------------------------------------------------------------------------
    def create_user(self, username: str, display_name: str, password_hash: str) -> None:
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO users (username, display_name, password_hash, created_at) VALUES (%s,%s,%s,%s)"
                " ON CONFLICT (username) DO NOTHING",
                (username, display_name, password_hash, time.time()),
            )
            if cur.rowcount != 1:
                raise InvalidState(f"user {username!r} already exists")

    def get_user(self, username: str) -> dict[str, Any]:
        row = self._fetchone("SELECT * FROM users WHERE username = %s", (username,))
        if row is None:
            raise NotFound(f"no user {username!r}")
        return row

    def update_user(self, username: str, **fields: Any) -> None:
        allowed = {"display_name", "password_hash", "active", "failures", "locked_until", "last_login_at"}
        if set(fields) - allowed:
            raise ValueError(f"unknown user fields {sorted(set(fields) - allowed)}")
        values = [int(bool(v)) if k == "active" else v for k, v in fields.items()]
        with self._tx() as c:
            cur = c.execute(f"UPDATE users SET {', '.join(f'{k} = %s' for k in fields)} WHERE username = %s",
                            (*values, username))
            if cur.rowcount != 1:
                raise NotFound(f"no user {username!r}")

    def claim_sign_in(self, username: str, now: float, max_failures: int, lockout_s: float) -> int | None:
        """Count one sign-in attempt before its password is checked; see :meth:`JobStore.claim_sign_in`."""
        with self._tx() as c:
            rows = c.execute(
                "UPDATE users SET"
                " failures = CASE WHEN locked_until <= %s THEN 1 ELSE failures + 1 END,"
                " locked_until = CASE WHEN (CASE WHEN locked_until <= %s THEN 0 ELSE failures END) + 1 >= %s"
                " THEN %s WHEN locked_until <= %s THEN NULL ELSE locked_until END"
                " WHERE username = %s AND (locked_until <= %s OR (locked_until IS NULL AND failures < %s))"
                " RETURNING failures",
                (now, now, max_failures, now + lockout_s, now, username, now, max_failures)).fetchall()
        return int(rows[0]["failures"]) if rows else None

    def list_users(self) -> list[dict[str, Any]]:
        return self._fetchall(
            "SELECT u.username, u.display_name, u.active, u.locked_until, u.last_login_at, u.created_at,"
            " string_agg(m.group_name, ',') AS groups FROM users u"
            " LEFT JOIN group_members m ON m.username = u.username GROUP BY u.username ORDER BY u.username"
        )

    def count_users(self) -> int:
        row = self._fetchone("SELECT count(*) AS n FROM users")
        return int(row["n"]) if row else 0

    # -- groups ----------------------------------------------------------------------------------
    def create_group(self, name: str, description: str = "") -> None:
        with self._tx() as c:
            cur = c.execute("INSERT INTO groups (name, description, created_at) VALUES (%s,%s,%s)"
                            " ON CONFLICT (name) DO NOTHING", (name, description, time.time()))
            if cur.rowcount != 1:
                raise InvalidState(f"group {name!r} already exists")

    def group_link(self, table: str, group: str, value: str, add: bool) -> bool:
        """Add or remove one member, permission or case of a group; returns whether anything changed."""
        column = _LINKS[table]
        with self._tx() as c:
            if c.execute("SELECT 1 FROM groups WHERE name = %s FOR SHARE", (group,)).fetchone() is None:
                raise NotFound(f"no group {group!r}")
            if table == "group_members" and c.execute(
                    "SELECT 1 FROM users WHERE username = %s FOR SHARE", (value,)).fetchone() is None:
                raise NotFound(f"no user {value!r}")
            if add:
                cur = c.execute(f"INSERT INTO {table} (group_name, {column}) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                                (group, value))
            else:
                cur = c.execute(f"DELETE FROM {table} WHERE group_name = %s AND {column} = %s", (group, value))
            return cur.rowcount == 1

    def list_groups(self) -> list[dict[str, Any]]:
        out = []
        with self._read() as c:
            for d in c.execute("SELECT * FROM groups ORDER BY name").fetchall():
                for key, table, column in (("members", "group_members", "username"),
                                           ("permissions", "group_permissions", "permission"),
                                           ("cases", "group_cases", "case_id")):
                    d[key] = [r[column] for r in c.execute(
                        f"SELECT {column} FROM {table} WHERE group_name = %s ORDER BY {column}",
                        (d["name"],)).fetchall()]
                out.append(d)
        return out

    def grants_of(self, username: str) -> tuple[set[str], set[str]]:
        """The union of a user's groups' permissions and cases."""
        with self._read() as c:
            perms = {r["permission"] for r in c.execute(
                "SELECT p.permission FROM group_permissions p JOIN group_members m ON m.group_name = p.group_name"
                " WHERE m.username = %s", (username,)).fetchall()}
            cases = {r["case_id"] for r in c.execute(
                "SELECT k.case_id FROM group_cases k JOIN group_members m ON m.group_name = k.group_name"
                " WHERE m.username = %s", (username,)).fetchall()}
        return perms, cases

    # -- audit -------------------------------------------------------------------------------------
    def audit(self, actor: str, interface: str, action: str, target_kind: str | None, target: str | None,
              allowed: bool, detail: str | None = None) -> None:
        with self._tx() as c:
            c.execute("INSERT INTO audit (at, actor, interface, action, target_kind, target, allowed, detail)"
                      " VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                      (time.time(), actor, interface, action, target_kind, target, int(allowed), detail))

    def list_audit(self, limit: int = 200) -> list[dict[str, Any]]:
        return self._fetchall("SELECT * FROM audit ORDER BY id DESC LIMIT %s", (int(limit),))
