"""Agents in the SQLite store (a mixin of :class:`SQLiteStore`): registration, heartbeats, and the
recovery of lost agents, decided by one conditional UPDATE so that exactly one agent recovers each."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from typing import Any

from ..errors import InvalidState, NotFound
from ..models import Dispatch, Recovery
from ..states import FINISHED, IN_PROGRESS

#: an agent silent for this many heartbeat intervals is lost
LOST_AFTER_INTERVALS = 3


class SQLiteAgents:
    # provided by SQLiteStore
    _tx: Any
    _conn: Any
    _event: Any
    _job_row: Any
    _task_state: Any
    _settle: Any

    def register_agent(self, info: dict[str, Any]) -> Recovery:
        now = time.time()
        recovery = Recovery()
        with self._tx() as c:
            old = c.execute("SELECT * FROM agents WHERE name = ?", (info["name"],)).fetchone()
            if old is not None and old["state"] == "online":
                fresh = old["heartbeat_at"] >= now - LOST_AFTER_INTERVALS * old["interval"]
                same_host = old["host"] == info["host"]
                if fresh and not (same_host and not _pid_alive(old["pid"])):
                    raise InvalidState(
                        f"agent {info['name']} is already running (host {old['host']}, pid {old['pid']})"
                    )
            if old is not None and old["state"] in ("online", "lost"):
                self._recover_agent(c, old["name"], info["name"], recovery, message="agent restarted")
            c.execute("DELETE FROM agents WHERE name = ?", (info["name"],))
            c.execute(
                "INSERT INTO agents (name, host, pid, workers, worker_type, version, queues, state, interval,"
                " started_at, heartbeat_at, log_path) VALUES (?,?,?,?,?,?,?,'online',?,?,?,?)",
                (info["name"], info["host"], info["pid"], info["workers"], info["worker_type"], info["version"],
                 json.dumps(info.get("queues", ["default"])), info["interval"], now, now, info.get("log_path")),
            )
            self._event(c, "agent", agent=info["name"], to_state="online",
                        message=f"started on {info['host']} pid {info['pid']}", at=now)
        return recovery

    def heartbeat(self, name: str, pid: int, stats: dict[str, Any]) -> str | None:
        with self._tx() as c:
            now = time.time()  # after the lock: a long wait for it must not age the heartbeat
            row = c.execute("SELECT state, pid, command FROM agents WHERE name = ?", (name,)).fetchone()
            if row is None or row["pid"] != pid:
                return "stop"  # another incarnation owns the name now
            c.execute(
                "UPDATE agents SET heartbeat_at = ?, state = 'online', current_tasks = ?, done = ?, failed = ?,"
                " cpu_percent = ?, rss_bytes = ? WHERE name = ? AND pid = ?",
                (now, json.dumps(stats.get("current", [])), stats.get("done", 0), stats.get("failed", 0),
                 stats.get("cpu_percent"), stats.get("rss_bytes"), name, pid),
            )
            if row["state"] != "online":
                self._event(c, "agent", agent=name, from_state=row["state"], to_state="online",
                            message="heartbeat resumed", at=now)
            return row["command"]

    def agent_stopped(self, name: str, pid: int) -> Recovery:
        recovery = Recovery()
        with self._tx() as c:
            row = c.execute("SELECT * FROM agents WHERE name = ? AND pid = ?", (name, pid)).fetchone()
            if row is None:
                return recovery
            self._recover_agent(c, name, name, recovery, message="agent stopped", count_attempt=False)
            c.execute("UPDATE agents SET state = 'offline', stopped_at = ?, current_tasks = '[]', command = NULL"
                      " WHERE name = ? AND pid = ?", (time.time(), name, pid))
            self._event(c, "agent", agent=name, from_state=row["state"], to_state="offline", message="stopped")
        return recovery

    def recover_lost(self, by_agent: str, now: float | None = None) -> Recovery:
        recovery = Recovery()
        with self._tx() as c:
            now = now or time.time()  # after the lock (a busy store must not make agents look lost)
            stale = c.execute(
                "SELECT name, heartbeat_at FROM agents WHERE state = 'online' AND heartbeat_at < ? - ? * interval"
                " AND name != ?",  # an agent never declares itself lost: it is evidently alive
                (now, LOST_AFTER_INTERVALS, by_agent),
            ).fetchall()
            for row in stale:
                cur = c.execute(
                    "UPDATE agents SET state = 'lost', stopped_at = ?, current_tasks = '[]'"
                    " WHERE name = ? AND state = 'online' AND heartbeat_at = ?",
                    (now, row["name"], row["heartbeat_at"]),
                )
                if cur.rowcount != 1:
                    continue
                recovery.lost.append(row["name"])
                self._event(c, "agent", agent=row["name"], from_state="online", to_state="lost",
                            actor=by_agent, message=f"no heartbeat for {now - row['heartbeat_at']:.1f} s")
                self._recover_agent(c, row["name"], by_agent, recovery, message=f"agent {row['name']} lost")
        return recovery

    def _recover_agent(
        self, c: sqlite3.Connection, name: str, by: str, recovery: Recovery, *, message: str,
        count_attempt: bool = True,
    ) -> None:
        """Hand back the work an agent held: its running tasks and finishing steps."""
        now = time.time()
        for task in c.execute("SELECT * FROM tasks WHERE state = 'running' AND agent = ?", (name,)).fetchall():
            job = self._job_row(c, task["job_id"])
            attempts = task["attempts"] if count_attempt else task["attempts"] - 1
            if job["state"] in FINISHED or task["cancel_requested"]:
                self._task_state(c, task, "cancelled", by=by, message=message, finished_at=now)
            elif attempts < task["max_attempts"]:
                self._task_state(c, task, "queued", by=by, message=message, attempts=attempts,
                                 dispatch=task["dispatch"] + 1, queued_at=now)
                if job["state"] != "paused":
                    recovery.dispatches.append(Dispatch(task["id"], task["dispatch"] + 1, job["priority"]))
                continue
            else:
                self._task_state(c, task, "failed", by=by, message=message, finished_at=now,
                                 error=f"{message} while running the task (attempt {attempts} of "
                                       f"{task['max_attempts']})")
            self._settle(c, task["job_id"], None)
            if job["has_finish"]:
                self._queue_finalize_if_ready(c, task["job_id"], recovery)
        for job in c.execute("SELECT id FROM jobs WHERE finisher = ?", (name,)).fetchall():
            c.execute("UPDATE jobs SET finisher = NULL WHERE id = ?", (job["id"],))
            self._event(c, "finish", job_id=job["id"], agent=by, message=f"{message}; finishing step resent")
            recovery.finalize.append(job["id"])

    def _queue_finalize_if_ready(self, c: sqlite3.Connection, job_id: int, recovery: Recovery) -> None:
        job = self._job_row(c, job_id)
        left = job["tasks_total"] - job["tasks_succeeded"] - job["tasks_failed"] - job["tasks_cancelled"]
        if job["state"] in IN_PROGRESS and left == 0 and job["finisher"] is None and job_id not in recovery.finalize:
            recovery.finalize.append(job_id)

    def agent_throughput(self, since: float, width: float, buckets: int) -> dict[str, list[int]]:
        rows = self._conn().execute(
            "SELECT agent, CAST((at - ?) / ? AS INTEGER) AS b, count(*) FROM events"
            " WHERE kind = 'task' AND at >= ? AND to_state IN ('succeeded', 'failed') AND agent IS NOT NULL"
            " GROUP BY agent, b",
            (since, width, since),
        ).fetchall()
        out: dict[str, list[int]] = {}
        for agent, b, n in rows:
            if 0 <= b < buckets:
                out.setdefault(agent, [0] * buckets)[b] = n
        return out

    def request_agent(self, name: str, command: str | None, actor: str) -> None:
        with self._tx() as c:
            cur = c.execute("UPDATE agents SET command = ? WHERE name = ? AND state = 'online'", (command, name))
            if cur.rowcount != 1:
                raise NotFound(f"no online agent {name!r}")
            self._event(c, "agent", agent=name, actor=actor, message=f"{command} requested")

    def list_agents(self) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT * FROM agents ORDER BY name").fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["current_tasks"] = json.loads(d["current_tasks"] or "[]")
            d["queues"] = json.loads(d["queues"] or "[]")
            out.append(d)
        return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
