"""Users, groups and the audit trail in the SQLite store (a mixin of :class:`SQLiteStore`).

Only password hashes reach these tables; the clear password never leaves auth.py.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from ..errors import InvalidState, NotFound


class SQLiteUsers:
    _tx: Any
    _conn: Any

    # -- users ---------------------------------------------------------------------------------
    def create_user(self, username: str, display_name: str, password_hash: str) -> None:
        with self._tx() as c:
            try:
                c.execute("INSERT INTO users (username, display_name, password_hash, created_at) VALUES (?,?,?,?)",
                          (username, display_name, password_hash, time.time()))
            except sqlite3.IntegrityError:
                raise InvalidState(f"user {username!r} already exists") from None

    def get_user(self, username: str) -> dict[str, Any]:
        row = self._conn().execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone()
        if row is None:
            raise NotFound(f"no user {username!r}")
        return dict(row)

    def update_user(self, username: str, **fields: Any) -> None:
        allowed = {"display_name", "password_hash", "active", "failures", "locked_until", "last_login_at"}
        if set(fields) - allowed:
            raise ValueError(f"unknown user fields {sorted(set(fields) - allowed)}")
        with self._tx() as c:
            cur = c.execute(f"UPDATE users SET {', '.join(f'{k} = ?' for k in fields)} WHERE username = ?",
                            (*fields.values(), username))
            if cur.rowcount != 1:
                raise NotFound(f"no user {username!r}")

    def claim_sign_in(self, username: str, now: float, max_failures: int, lockout_s: float) -> int | None:
        """Count one sign-in attempt before its password is checked; see :meth:`JobStore.claim_sign_in`."""
        with self._tx() as c:
            rows = c.execute(
                "UPDATE users SET"
                " failures = CASE WHEN locked_until <= ? THEN 1 ELSE failures + 1 END,"
                " locked_until = CASE WHEN (CASE WHEN locked_until <= ? THEN 0 ELSE failures END) + 1 >= ?"
                " THEN ? WHEN locked_until <= ? THEN NULL ELSE locked_until END"
                " WHERE username = ? AND (locked_until <= ? OR (locked_until IS NULL AND failures < ?))"
                " RETURNING failures",
                (now, now, max_failures, now + lockout_s, now, username, now, max_failures)).fetchall()
        return int(rows[0]["failures"]) if rows else None

    def list_users(self) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT u.username, u.display_name, u.active, u.locked_until, u.last_login_at, u.created_at,"
            " group_concat(m.group_name, ',') AS groups FROM users u"
            " LEFT JOIN group_members m ON m.username = u.username GROUP BY u.username ORDER BY u.username"
        ).fetchall()
        return [dict(r) for r in rows]

    def count_users(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM users").fetchone()[0])

    # -- groups ----------------------------------------------------------------------------------
    def create_group(self, name: str, description: str = "") -> None:
        with self._tx() as c:
            try:
                c.execute("INSERT INTO groups (name, description, created_at) VALUES (?,?,?)",
                          (name, description, time.time()))
            except sqlite3.IntegrityError:
                raise InvalidState(f"group {name!r} already exists") from None

    def _group_exists(self, c: sqlite3.Connection, name: str) -> None:
        if c.execute("SELECT 1 FROM groups WHERE name = ?", (name,)).fetchone() is None:
            raise NotFound(f"no group {name!r}")

    def group_link(self, table: str, group: str, value: str, add: bool) -> bool:
        """Add or remove one member, permission or case of a group; returns whether anything changed."""
        column = {"group_members": "username", "group_permissions": "permission", "group_cases": "case_id"}[table]
        with self._tx() as c:
            self._group_exists(c, group)
            if table == "group_members" and c.execute(
                    "SELECT 1 FROM users WHERE username = ?", (value,)).fetchone() is None:
                raise NotFound(f"no user {value!r}")
            if add:
                cur = c.execute(f"INSERT OR IGNORE INTO {table} (group_name, {column}) VALUES (?, ?)", (group, value))
            else:
                cur = c.execute(f"DELETE FROM {table} WHERE group_name = ? AND {column} = ?", (group, value))
            return cur.rowcount == 1

    def list_groups(self) -> list[dict[str, Any]]:
        c = self._conn()
        out = []
        for g in c.execute("SELECT * FROM groups ORDER BY name").fetchall():
            d = dict(g)
            for key, table, column in (("members", "group_members", "username"),
                                       ("permissions", "group_permissions", "permission"),
                                       ("cases", "group_cases", "case_id")):
                d[key] = [r[0] for r in c.execute(
                    f"SELECT {column} FROM {table} WHERE group_name = ? ORDER BY {column}", (g["name"],))]
            out.append(d)
        return out

    def grants_of(self, username: str) -> tuple[set[str], set[str]]:
        """The union of a user's groups' permissions and cases."""
        c = self._conn()
        perms = {r[0] for r in c.execute(
            "SELECT p.permission FROM group_permissions p JOIN group_members m ON m.group_name = p.group_name"
            " WHERE m.username = ?", (username,))}
        cases = {r[0] for r in c.execute(
            "SELECT k.case_id FROM group_cases k JOIN group_members m ON m.group_name = k.group_name"
            " WHERE m.username = ?", (username,))}
        return perms, cases

    # -- audit -------------------------------------------------------------------------------------
    def audit(self, actor: str, interface: str, action: str, target_kind: str | None, target: str | None,
              allowed: bool, detail: str | None = None) -> None:
        with self._tx() as c:
            c.execute("INSERT INTO audit (at, actor, interface, action, target_kind, target, allowed, detail)"
                      " VALUES (?,?,?,?,?,?,?,?)",
                      (time.time(), actor, interface, action, target_kind, target, int(allowed), detail))

    def list_audit(self, limit: int = 200) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (int(limit),)).fetchall()
        return [dict(r) for r in rows]
