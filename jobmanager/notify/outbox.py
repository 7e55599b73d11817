"""An agent's notifier: the outbox that turns the store's events into deliveries, off every worker's path.

The engine already writes an event for every job state change and every lost agent. Each agent runs
one :class:`Notifier` thread that, every ``poll_interval`` seconds:

1. routes new events (``store.outbox.route_events``): the events after a cursor in the ``meta`` table
   become ``notifications`` rows, one per (event, channel, target), for the job's own rules (type,
   schedule and job, merged on the job row) and the global ``[[notify.rules]]``. The cursor moves by a
   conditional UPDATE and the rows are inserted in the same transaction, so with several agents each
   event is routed once, and the unique (event, channel, target) key makes a repeat harmless;
2. sends the due rows, one at a time, each claimed with a lease (``store.outbox.claim``):
   a sender that dies mid-way leaves the row to be taken again once the lease runs out. A failed try
   is retried after ``retry_delay`` seconds, doubling up to ``retry_max_delay``, ``max_attempts`` times
   in all; then the row is ``failed`` with the reason. Every try is written to the audit trail
   (actor ``agent:<name>``, action ``notify``).

Nothing here touches a job or a task: a delivery that fails never changes a job's state, and a slow
server only delays other notifications. Guarantee: at least once per (event, target) while the store
keeps the row; an agent killed after the server accepted a message but before it recorded ``sent``
sends it again.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from jobmanager.engine.states import FINISHED
from jobmanager.notify import channels, rules
from jobmanager.notify.config import NotifySettings
from jobmanager.store.base import JobStore
from jobmanager.trouble import Backoff, TroubleLog

log = logging.getLogger("jobmanager.notify")

#: how long a gap in the event ids (a transaction not committed yet, or rolled back) holds routing back
GAP_WAIT_S = 5.0
#: a claimed notification goes back to the others if its sender has not answered after this long
#: (on top of the channel's own timeouts)
LEASE_EXTRA_S = 60.0
#: events looked at per routing transaction at most (a primary-key range: cheap)
ROUTE_BATCH = 5000
#: notifications sent per round at most, so routing new events is never starved by a backlog
SEND_BATCH = 50


class Notifier:
    """Routes events and sends notifications for one agent (``run`` is its thread)."""

    def __init__(self, store: JobStore, settings: NotifySettings, agent: str,
                 trouble: TroubleLog | None = None) -> None:
        self.store, self.settings, self.agent = store, settings, agent
        self.trouble = trouble or TroubleLog(log)
        self._channels: dict[type[channels.Channel], channels.Channel] = {}
        self.lease_s = LEASE_EXTRA_S + 3 * max(settings.smtp.timeout, settings.webhook.timeout)

    # -- the thread ------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Route and send every ``poll_interval`` until ``stop`` is set; store trouble backs off."""
        backoff, delay = Backoff(), 0.0
        while not stop.wait(delay):
            try:
                self.route()
                self.send_due(stop)
            except Exception as exc:  # never kill the agent; say it once, retry with back-off
                self.trouble.failed("notifications", exc, "the job store")
                delay = max(self.settings.poll_interval, backoff.failed())
            else:
                self.trouble.ok("notifications")
                backoff.reset()
                delay = self.settings.poll_interval

    # -- routing ------------------------------------------------------------------------------------
    def route(self) -> int:
        """New events -> notifications rows (None from the store: another agent routed them)."""
        return self.store.outbox.route_events(self.plan, settle_s=GAP_WAIT_S, limit=ROUTE_BATCH) or 0

    def plan(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The notifications of ``events``: one row per (event, target) whose rule fires on it."""
        rows: list[dict[str, Any]] = []
        for e in events:
            if e["kind"] == "job" and e["to_state"] in FINISHED:
                trigger, job_rules = e["to_state"], e["notify"] or []
            elif e["kind"] == "agent" and e["to_state"] == "lost":
                trigger, job_rules = rules.AGENT_LOST, []
            else:
                continue
            for target in rules.targets(rules.merge(job_rules, self.settings.rules), trigger):
                try:
                    channel = channels.channel_class(target).name
                except Exception:  # a plug-in this agent lacks: recorded, so the failure is visible
                    channel = target.partition(":")[0].lower()
                rows.append({"event_id": e["id"], "job_id": e["job_id"],
                             "agent_name": e["agent"] if trigger == rules.AGENT_LOST else None,
                             "trigger": trigger, "channel": channel, "target": target})
        return rows

    # -- sending ------------------------------------------------------------------------------------
    def send_due(self, stop: threading.Event | None = None) -> int:
        """Send due notifications (at most :data:`SEND_BATCH`); returns how many were tried."""
        tried = 0
        while tried < SEND_BATCH and not (stop is not None and stop.is_set()):
            row = self.store.outbox.claim(self.agent, self.lease_s)
            if row is None:
                break
            tried += 1
            self.deliver(row)
        return tried

    def deliver(self, row: dict[str, Any]) -> None:
        """One try of one notification; the outcome goes to its row and the audit trail."""
        error: str | None = None
        try:
            channel = self._channel(row["target"])
            channel.send(row["target"], self.message(row))
        except channels.DeliveryError as exc:
            error = str(exc)
        except Exception as exc:  # a plug-in's bug, a missing channel: recorded like any failure
            error = f"{type(exc).__name__}: {exc}"
        attempts = int(row["attempts"])
        what = f"{row['trigger']} -> {channels.shown_url(row['target'])}"
        if error is None:
            state, next_at, detail = "sent", None, f"{what}: sent (attempt {attempts})"
        elif attempts < self.settings.max_attempts:
            wait = self.settings.backoff(attempts)
            state, next_at = "pending", time.time() + wait
            detail = f"{what}: attempt {attempts} failed, retry in {wait:g} s: {error}"
        else:
            state, next_at, detail = "failed", None, f"{what}: failed after {attempts} attempts: {error}"
        error = None if error is None else error[:1000]
        if not self.store.outbox.record_delivery(row["id"], self.agent, state=state, error=error, next_at=next_at):
            log.warning("notification %s: its lease ran out before the outcome was recorded (%s)", row["id"], detail)
            return
        (log.info if error is None else log.warning)("notification %s: %s", row["id"], detail)
        kind, target = ("job", str(row["job_id"])) if row["job_id"] is not None else ("agent", row["agent_name"])
        try:
            self.store.audit.record(f"agent:{self.agent}", "agent", "notify", kind, target, True, detail[:2000])
        except Exception:
            log.exception("could not write the audit row of notification %s", row["id"])

    def _channel(self, target: str) -> channels.Channel:
        cls = channels.channel_class(target)
        if cls not in self._channels:
            self._channels[cls] = cls(self.settings)
        return self._channels[cls]

    def message(self, row: dict[str, Any]) -> channels.Message:
        """What a notification says: a subject and text, and the webhook's JSON payload."""
        trigger = row["trigger"]
        at = row["event_at"] or row["created_at"]
        when = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
        payload: dict[str, Any] = {"id": row["id"], "event": trigger, "event_id": row["event_id"], "at": when,
                                   "job": None, "agent": None}
        if row["job_id"] is not None:
            job = self.store.get_job(int(row["job_id"]))
            payload["job"] = {
                "id": job.id, "name": job.name, "type": job.type, "owner": job.owner, "case": job.case,
                "state": job.state, "error": job.error, "queue": job.queue, "tasks_total": job.tasks_total,
                "tasks_succeeded": job.tasks_succeeded, "tasks_failed": job.tasks_failed,
                "tasks_cancelled": job.tasks_cancelled, "schedule_id": job.schedule_id,
            }
            words = trigger.replace("_", " ")
            subject = f"[jobmanager] job {job.id} {job.name!r} {words}"
            lines = [f"Job {job.id} {job.name!r} ({job.type}) {words} at {when}.", "",
                     f"owner: {job.owner}", f"case: {job.case or '-'}",
                     f"tasks: {job.tasks_succeeded} succeeded, {job.tasks_failed} failed, "
                     f"{job.tasks_cancelled} cancelled of {job.tasks_total}"]
            if job.error:
                lines.append(f"error: {job.error}")
            lines += ["", f"jobmanager show {job.id}"]
        else:
            name = row["agent_name"] or row["event_agent"]
            payload["agent"] = {"name": name, "message": row["event_message"]}
            subject = f"[jobmanager] agent {name} lost"
            lines = [f"Agent {name} was lost at {when}: {row['event_message'] or 'no heartbeat'}.",
                     "Its running tasks were handed to the other agents.", "", "jobmanager agents"]
        return channels.Message(id=int(row["id"]), trigger=trigger, subject=subject, text="\n".join(lines) + "\n",
                                payload=payload)
