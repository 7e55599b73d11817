"""The notification outbox's rows: which events become notifications, and each delivery's lease and outcome.

The senders and their rules are :mod:`jobmanager.notify`'s; this is only the storage they share across agents.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jobmanager.engine.states import FINISHED
from jobmanager.store.connection import first_row

if TYPE_CHECKING:
    from jobmanager.store.sql import SqlStore


class Outbox:
    """``store.outbox``: events routed into ``notifications`` rows once, and rows leased to one sender at a time."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def route_events(self, route: Callable[[list[dict[str, Any]]], list[dict[str, Any]]], *, settle_s: float,
                     limit: int = 500) -> int | None:
        """Turn the next events after the notifiers' cursor into ``notifications`` rows; one caller wins each.

        In one transaction: read the cursor (``meta`` key ``notify_cursor``), take the events after it in id
        order up to the first gap in the ids (an event id not committed yet, or rolled back: a gap is waited
        for ``settle_s`` seconds, measured from the next event's ``at``, then passed), move the cursor with a
        conditional UPDATE (another notifier that moved it first wins: None, nothing written), and insert the
        rows ``route`` returns for the events a notification can come from (a job's final state: kind
        ``job``; an agent lost: kind ``agent``, to_state ``lost``), each event with its job's ``notify``
        (a list), ``name``, ``type``, ``owner`` and ``case_id`` joined. A row is ``event_id, job_id,
        agent_name, trigger, channel, target``; one that exists (same event, channel, target) is skipped.
        Returns how many rows were inserted.
        """
        row = self._store._fetchone("SELECT value FROM meta WHERE key = 'notify_cursor'")
        newest = self._store._fetchone("SELECT MAX(id) AS id FROM events")
        if row is not None and (newest is None or newest["id"] is None or newest["id"] <= int(row["value"])):
            return 0  # nothing new: no write transaction (agents poll this every second)
        with self._store._tx() as c:
            # Another notifier routing now holds the row: leave the events to it rather than wait.
            skip_locked = self._store.dialect.skip_locked
            row = c.execute(f"SELECT value FROM meta WHERE key = 'notify_cursor'{skip_locked}").fetchone()
            if row is None:
                if c.execute("SELECT 1 FROM meta WHERE key = 'notify_cursor'").fetchone() is not None:
                    return None
                c.execute("INSERT INTO meta (key, value) VALUES ('notify_cursor', '0') ON CONFLICT (key) DO NOTHING")
                cursor = 0
            else:
                cursor = int(row["value"])
            now = time.time()
            ids = c.execute("SELECT id, at FROM events WHERE id > ? ORDER BY id LIMIT ?",
                            (cursor, int(limit))).fetchall()
            upto = cursor
            for r in ids:  # ids commit out of order on PostgreSQL: stop at a gap until it is old enough
                if r["id"] != upto + 1 and r["at"] > now - settle_s:
                    break
                upto = r["id"]
            if upto == cursor:
                return 0
            if c.execute("UPDATE meta SET value = ? WHERE key = 'notify_cursor' AND value = ?",
                         (str(upto), str(cursor))).rowcount != 1:
                return None
            events = [dict(r) for r in c.execute(
                "SELECT e.id, e.at, e.kind, e.to_state, e.agent, e.message, e.job_id, j.notify, j.name, j.type,"
                " j.owner, j.case_id FROM events e LEFT JOIN jobs j ON j.id = e.job_id"
                " WHERE e.id > ? AND e.id <= ? AND ((e.kind = 'job' AND e.to_state IN (?,?,?,?))"
                " OR (e.kind = 'agent' AND e.to_state = 'lost')) ORDER BY e.id",
                (cursor, upto, *FINISHED)).fetchall()]
            for e in events:
                e["notify"] = json.loads(e["notify"]) if e["notify"] else []
            rows = route(events) if events else []
            inserted = 0
            for n in rows:
                cur = c.execute(
                    "INSERT INTO notifications (event_id, job_id, agent_name, trigger, channel, target, state,"
                    " next_at, created_at) VALUES (?,?,?,?,?,?,'pending',?,?)"
                    " ON CONFLICT (event_id, channel, target) DO NOTHING",
                    (n["event_id"], n.get("job_id"), n.get("agent_name"), n["trigger"], n["channel"], n["target"],
                     now, now))
                inserted += max(cur.rowcount, 0)
            return inserted

    def claim(self, sender: str, lease_s: float, now: float | None = None) -> dict[str, Any] | None:
        """Take the pending notification due first, for ``sender``, counting an attempt.

        Its ``next_at`` moves ``lease_s`` on: if the sender dies, another takes it then. Several senders
        never take the same one at once. Returns the row with its event's ``at``, ``to_state``, ``agent``
        and ``message`` (as ``event_at``, ``event_state``, ``event_agent``, ``event_message``), or None.
        """
        at = now or time.time()
        with self._store._tx() as c:
            claimed = first_row(c.execute(
                "UPDATE notifications SET sender = ?, next_at = ?, attempts = attempts + 1"
                " WHERE id = (SELECT id FROM notifications WHERE state = 'pending' AND next_at <= ?"
                f" ORDER BY next_at, id LIMIT 1{self._store.dialect.skip_locked})"
                " AND state = 'pending' AND next_at <= ? RETURNING id",
                (sender, at + lease_s, at, at)))
            if claimed is None:
                return None
            row = c.execute(
                "SELECT n.*, e.at AS event_at, e.to_state AS event_state, e.agent AS event_agent,"
                " e.message AS event_message FROM notifications n LEFT JOIN events e ON e.id = n.event_id"
                " WHERE n.id = ?", (claimed["id"],)).fetchone()
            return dict(row)

    def record_delivery(self, notification_id: int, sender: str, *, state: str, error: str | None = None,
                        next_at: float | None = None) -> bool:
        """End an attempt of ``sender``'s: ``sent``, ``failed`` (for good), or ``pending`` again at ``next_at``.

        False (nothing changed) if the notification is no longer this sender's (its lease ran out and
        another sender took it)."""
        now = time.time()
        with self._store._tx() as c:
            cur = c.execute(
                "UPDATE notifications SET state = ?, last_error = ?, next_at = ?, delivered_at = ?,"
                " sender = CASE WHEN ? = 'pending' THEN NULL ELSE sender END"
                " WHERE id = ? AND sender = ? AND state = 'pending'",
                (state, error, next_at if next_at is not None else now, now if state == "sent" else None, state,
                 notification_id, sender))
            return cur.rowcount == 1

    def notifications(self, job_id: int | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """A job's notifications in order (``job_id`` None: the newest of all, newest first)."""
        if job_id is None:
            rows = self._store._fetchall("SELECT * FROM notifications ORDER BY id DESC LIMIT ?", (int(limit),))
        else:
            rows = self._store._fetchall("SELECT * FROM notifications WHERE job_id = ? ORDER BY id LIMIT ?",
                                         (job_id, int(limit)))
        return [dict(r) for r in rows]
