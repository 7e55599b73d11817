"""Notifications (issue 14, item 5): e-mail over SMTP and signed webhooks for failed jobs and lost agents,
sent by real agents to a real local SMTP server (aiosmtpd) and a real HTTP server on 127.0.0.1; retried
with back-off; a failed delivery never touches the job; bad rules and bad configuration are one line."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from email import message_from_bytes
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict

from jobmanager import JobManager, JobType, job_type
from jobmanager.cli.main import cli
from jobmanager.errors import BadParams
from jobmanager.home import Home
from jobmanager.notify import channels
from jobmanager.notify.channels import SIGNATURE_HEADER, Channel, DeliveryError, Message
from jobmanager.notify.config import NotifySettings
from jobmanager.notify.outbox import Notifier
from jobmanager.store import open_store
from jobmanager.store.base import SCHEMA_VERSION

from .backends import back_to_version_1
from .conftest import wait_for
from .test_store_contract import store  # noqa: F401  (the two-backend store fixture)

SECRET = "a-webhook-secret-for-tests"
DEADLINE = 60.0


# -- real servers -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mailbox:
    """aiosmtpd's handler: keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.content, policy=email_policy)
        self.messages.append((list(envelope.rcpt_tos), msg))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, Mailbox]]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, box
    controller.stop()


class Hook:
    """A webhook receiver: records each request; answers the scripted statuses in turn, then 200."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.script: list[tuple[int, dict[str, str]]] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook.lock:
                    hook.requests.append((dict(self.headers.items()), body))
                    status, headers = hook.script.pop(0) if hook.script else (200, {})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, body in self.requests]


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.server.shutdown()
    h.server.server_close()


def configure(home: Path, smtp_port: int, *, rules: str = "", **notify: Any) -> None:
    """Append a [notify] table to the home's jobmanager.toml (quick retries for the tests)."""
    settings = {"max_attempts": 3, "retry_delay": 0.2, "retry_max_delay": 1.0, "poll_interval": 0.1, **notify}
    text = "\n[notify]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    text += (f'\n[notify.smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nsender = "jobs@example.org"\n'
             f"timeout = 5.0\n\n[notify.webhook]\nsecret = {json.dumps(SECRET)}\ntimeout = 5.0\n{rules}")
    cfg = home / "jobmanager.toml"
    cfg.write_text(cfg.read_text() + text)
    Home.open(home)  # the configuration is valid


def notifications(jm: JobManager, job_id: int) -> list[dict[str, Any]]:
    return [dict(r) for _, r in jm.notifications(job_id).iterrows()]


def settled(jm: JobManager, job_id: int, count: int) -> list[dict[str, Any]] | None:
    """The job's notifications once ``count`` exist and none is pending any more."""
    rows = notifications(jm, job_id)
    return rows if len(rows) == count and all(r["state"] != "pending" for r in rows) else None


# -- end to end, real agents ----------------------------------------------------------------------------
def test_a_failed_job_sends_an_email_and_a_signed_webhook(jm: JobManager, home: Path, start_agent: Any,
                                                          smtp: tuple[int, Mailbox], hook: Hook) -> None:
    port, box = smtp
    configure(home, port)
    start_agent("a1")
    start_agent("a2")  # two notifiers: each event is still delivered once per target
    job_id = jm.submit("sleep", {"tasks": 2, "fail_tasks": [1, 2]}, name="nächtlicher Bericht",
                       notify=["failed:mailto:ops@example.org", {"on": ["failed"], "to": hook.url + "/jm?x=1"}])
    assert jm.wait(job_id, timeout=DEADLINE).state == "failed"
    wait_for(lambda: box.messages and hook.requests, DEADLINE, "the e-mail and the webhook")
    rows = wait_for(lambda: settled(jm, job_id, 2), DEADLINE, "both deliveries recorded")
    assert {(r["channel"], r["state"], r["attempts"]) for r in rows} == {("email", "sent", 1), ("webhook", "sent", 1)}

    rcpts, msg = box.messages[0]
    assert rcpts == ["ops@example.org"] and len(box.messages) == 1
    assert msg["From"] == "jobs@example.org" and f"job {job_id}" in msg["Subject"] and "failed" in msg["Subject"]
    assert "nächtlicher Bericht" in msg["Subject"]
    assert "2 of 2 tasks failed" in msg.get_content()

    assert len(hook.requests) == 1
    headers, body = hook.requests[0]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
    payload = json.loads(body)
    assert payload["event"] == "failed" and payload["job"]["id"] == job_id and payload["job"]["state"] == "failed"
    assert headers["Content-Type"] == "application/json"

    # recorded: the job's details, the CLI, and the audit trail
    shown = CliRunner().invoke(cli, ["--home", str(home), "--user", "tester", "show", str(job_id)])
    assert shown.exit_code == 0, shown.output
    assert "notify: failed -> mailto:ops@example.org" in shown.output
    assert "mailto:ops@example.org  sent  attempts 1" in shown.output
    as_json = CliRunner().invoke(cli, ["--home", str(home), "--user", "tester", "show", str(job_id), "--json"])
    assert {n["state"] for n in json.loads(as_json.output)["notifications"]} == {"sent"}
    audit = jm.audit_log(500)
    mine = audit[(audit.action == "notify") & (audit.target == str(job_id))]
    assert len(mine) == 2 and set(mine.actor) <= {"agent:a1", "agent:a2"}
    assert all("sent" in d for d in mine.detail)


def test_global_rules_notify_every_job_and_a_lost_agent(jm: JobManager, home: Path, start_agent: Any,
                                                        smtp: tuple[int, Mailbox], hook: Hook) -> None:
    rules = (f'\n[[notify.rules]]\non = ["completed_with_errors", "agent_lost"]\nto = "{hook.url}/ops"\n'
             f'\n[[notify.rules]]\non = ["lost"]\nto = "mailto:oncall@example.org"\n')
    port, box = smtp
    configure(home, port, rules=rules)
    start_agent("a1")
    victim = start_agent("victim")
    job_id = jm.submit("sleep", {"tasks": 2, "fail_tasks": [2]})  # no rules of its own
    assert jm.wait(job_id, timeout=DEADLINE).state == "completed_with_errors"
    wait_for(lambda: any(b["event"] == "completed_with_errors" for b in hook.bodies()), DEADLINE, "the webhook")
    assert jm.submit("sleep", {"tasks": 1}) and not box.messages  # no rule for completed, none for e-mail

    victim.kill()  # SIGKILL: a1 marks it lost and recovers its work; a notifier routes the event
    lost = wait_for(lambda: [b for b in hook.bodies() if b["event"] == "agent_lost"], DEADLINE, "agent_lost webhook")
    assert lost[0]["agent"]["name"] == "victim" and lost[0]["job"] is None
    wait_for(lambda: box.messages, DEADLINE, "the agent_lost e-mail")
    assert box.messages[0][0] == ["oncall@example.org"] and "agent victim lost" in box.messages[0][1]["Subject"]
    db = open_store(Home.open(home))

    def lost_sent() -> list[dict[str, Any]] | None:
        rows = [n for n in db.outbox.notifications() if n["trigger"] == "agent_lost" and n["state"] == "sent"]
        return rows if len(rows) == 2 else None

    try:
        rows = wait_for(lost_sent, DEADLINE, "both agent_lost deliveries recorded")
        assert {r["agent_name"] for r in rows} == {"victim"} and {r["job_id"] for r in rows} == {None}
    finally:
        db.close()
    assert len([b for b in hook.bodies() if b["event"] == "agent_lost"]) == 1


def test_a_webhook_that_fails_twice_gets_the_third_try_and_the_job_is_unaffected(
        jm: JobManager, home: Path, start_agent: Any, smtp: tuple[int, Mailbox], hook: Hook) -> None:
    configure(home, smtp[0])
    hook.script = [(500, {}), (500, {})]
    start_agent("a1")
    job_id = jm.submit("sleep", {"tasks": 1}, notify=[f"succeeded:{hook.url}/flaky"])
    assert jm.wait(job_id, timeout=DEADLINE).state == "completed"
    rows = wait_for(lambda: settled(jm, job_id, 1), DEADLINE, "the delivery to settle")
    assert rows[0]["state"] == "sent" and rows[0]["attempts"] == 3 and rows[0]["trigger"] == "completed"
    assert len(hook.requests) == 3
    assert len({h["X-JobManager-Delivery"] for h, _ in hook.requests}) == 1  # one delivery, three tries
    job = jm.job(job_id)
    assert job.state == "completed" and job.error is None
    audit = jm.audit_log(500)
    details = list(audit[(audit.action == "notify") & (audit.target == str(job_id))].detail)
    assert sum("HTTP 500" in d for d in details) == 2 and sum(d.endswith("sent (attempt 3)") for d in details) == 1


def test_a_dead_smtp_server_leaves_the_delivery_failed_and_the_job_untouched(
        jm: JobManager, home: Path, start_agent: Any) -> None:
    configure(home, free_port(), max_attempts=2)  # nothing listens there
    start_agent("a1")
    job_id = jm.submit("sleep", {"tasks": 1}, notify=["completed,failed:mailto:ops@example.org"])
    assert jm.wait(job_id, timeout=DEADLINE).state == "completed"
    events_before = len(jm.events(job_id))
    rows = wait_for(lambda: settled(jm, job_id, 1), DEADLINE, "the delivery to give up")
    assert rows[0]["state"] == "failed" and rows[0]["attempts"] == 2
    assert "SMTP server 127.0.0.1" in rows[0]["last_error"] and "refused" in rows[0]["last_error"].lower()
    job = jm.job(job_id)
    assert job.state == "completed" and job.error is None and len(jm.events(job_id)) == events_before
    shown = CliRunner().invoke(cli, ["--home", str(home), "--user", "tester", "show", str(job_id)])
    assert "failed  attempts 2" in shown.output and "SMTP server" in shown.output


# -- where rules come from, checked once ------------------------------------------------------------------
class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@job_type("notify_typed")
class NotifyTyped(JobType):
    Params = NoParams
    notify = [{"on": ["failed"], "to": "mailto:owners@example.org"}]

    def run(self, ctx: Any, params: Any, task: dict[str, Any]) -> None:
        pass


def test_the_job_row_holds_the_type_schedule_and_job_rules_merged(jm: JobManager) -> None:
    job = jm.job(jm.submit("notify_typed", notify=[{"on": ["completed"], "to": "mailto:owners@example.org"},
                                                   "failed:https://hooks.example.org/jm"]))
    assert job.notify == [{"on": ["failed", "completed"], "to": "mailto:owners@example.org"},
                          {"on": ["failed"], "to": "https://hooks.example.org/jm"}]
    jm.create_schedule("nightly", "notify_typed", {}, cron="0 2 * * *",
                       options={"notify": ["cancelled,succeeded:mailto:night@example.org"]})
    assert jm.get_schedule("nightly")["options"]["notify"] == [
        {"on": ["cancelled", "completed"], "to": "mailto:night@example.org"}]  # its own rules only
    fired = jm.job(jm.run_schedule_now("nightly"))
    assert fired.notify == [{"on": ["failed"], "to": "mailto:owners@example.org"},
                            {"on": ["cancelled", "completed"], "to": "mailto:night@example.org"}]
    with pytest.raises(BadParams, match="not an e-mail address"):
        jm.edit_schedule("nightly", options={"notify": ["failed:mailto:not an address"]})
    assert jm.get_schedule("nightly")["options"]["notify"][0]["to"] == "mailto:night@example.org"


@pytest.mark.parametrize(("rule", "message"), [
    ("failed:file:///etc/passwd", "notifications go to mailto: addresses and http"),
    ("failed:javascript:alert(1)", "notifications go to mailto: addresses and http"),
    ("failed:mailto:ops@example.org\r\nBcc: evil@example.org", "control characters"),
    ("failed:mailto:ops@example.org?subject=hi", "not an e-mail address"),
    ("failed:mailto:a@example.org,b@example.org", "not an e-mail address"),
    ("failed:https://user:pw@hooks.example.org/x", "no user or password"),
    ("failed:http://", "names no host"),
    ("exploded:mailto:ops@example.org", "unknown trigger"),
    ("agent_lost:mailto:ops@example.org", "notify.rules"),
    ("mailto:ops@example.org", "expected EVENTS:TARGET"),
    ("failed", "expected EVENTS:TARGET"),
    ({"on": ["failed"]}, "needs both on"),
    ({"on": [], "to": "mailto:ops@example.org"}, "list of events"),
    ({"on": ["failed"], "to": "mailto:ops@example.org", "cc": "x"}, "unknown key"),
])
def test_bad_rules_are_refused_in_one_line_and_nothing_is_stored(jm: JobManager, rule: Any, message: str) -> None:
    with pytest.raises(BadParams, match=message) as info:
        jm.submit("sleep", {"tasks": 1}, notify=[rule])
    assert "\n" not in str(info.value)
    assert jm.jobs().empty


@pytest.mark.parametrize("value", [
    "failed:file:/etc/passwd", "failed;mailto:ops@example.org", "boom:mailto:ops@example.org",
    "failed:mailto:ops@example.org\nBcc: x@example.org", "failed:", ":mailto:ops@example.org",
])
def test_the_cli_refuses_a_bad_notify_with_one_line(home: Path, value: str) -> None:
    result = CliRunner().invoke(cli, ["--home", str(home), "--user", "tester", "submit", "sleep",
                                      "--notify", "failed:mailto:ok@example.org", "--notify", value])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error") and "Traceback" not in result.output, result.output
    with JobManager(home, user="tester") as jm:
        assert jm.jobs().empty


def test_the_cli_stores_notify_rules(home: Path) -> None:
    result = CliRunner().invoke(cli, ["--home", str(home), "--user", "tester", "submit", "sleep", "--notify",
                                      "failed,succeeded:mailto:ops@example.org", "--notify",
                                      "completed_with_errors:https://hooks.example.org/jm"])
    assert result.exit_code == 0, result.output
    with JobManager(home, user="tester") as jm:
        assert jm.job(int(result.output.strip())).notify == [
            {"on": ["failed", "completed"], "to": "mailto:ops@example.org"},
            {"on": ["completed_with_errors"], "to": "https://hooks.example.org/jm"}]


@pytest.mark.parametrize(("toml", "key"), [
    ('[notify.smtp]\nport = 0', "notify.smtp.port"),
    ('[notify.smtp]\nport = "25"', "notify.smtp.port"),
    ("[notify.smtp]\nstarttls = true\nssl = true", "notify.smtp"),
    ('[notify.smtp]\npassword = "pw-never-shown"\npassword_env = "X"', "notify.smtp"),
    ('[notify.smtp]\npassword_env = "NOT A NAME"', "notify.smtp.password_env"),
    ('[notify.smtp]\nsender = "jobs@example.org\\r\\nBcc: x@example.org"', "notify.smtp.sender"),
    ('[notify.smtp]\nhots = "x"', "notify.smtp.hots"),
    ('[notify.webhook]\nsecret = "short-secret"', "notify.webhook.secret"),
    ("[notify]\nretry_delay = -1", "notify.retry_delay"),
    ("[notify]\nmax_attempts = 0", "notify.max_attempts"),
    ('[[notify.rules]]\non = ["failed"]\nto = "file:///etc/passwd"', "notify.rules"),
    ('[[notify.rules]]\non = ["failed"]\nto = "mailto:a@example.org\\nBcc: b@example.org"', "notify.rules"),
    ('[[notify.rules]]\non = ["sometimes"]\nto = "mailto:a@example.org"', "notify.rules"),
    ('[[notify.rules]]\nto = "mailto:a@example.org"', "notify.rules"),
    ('notify = "yes"', "notify"),
])
def test_a_bad_notify_config_is_one_line_naming_the_key(home: Path, toml: str, key: str) -> None:
    cfg = home / "jobmanager.toml"
    cfg.write_text(cfg.read_text() + "\n" + toml + "\n")
    for command in (["jobs"], ["agent", "--name", "x"]):
        result = CliRunner().invoke(cli, ["--home", str(home), "--user", "tester", *command])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and f"{key}" in lines[0] and "jobmanager.toml" in lines[0], result.output
        assert "pw-never-shown" not in result.output and "short-secret" not in result.output


# -- the outbox and the channels, in process over the real store ------------------------------------------
def test_racing_notifiers_route_each_event_once(jm: JobManager, home: Path) -> None:
    """Four notifiers (each its own store connection, as four agents) route the same events at once."""
    job_ids = [jm.submit("sleep", {"tasks": 1}) for _ in range(8)]
    for job_id in job_ids:
        jm.cancel(job_id)  # a final state, written by the store's own transition: an event of kind 'job'
    settings = NotifySettings.model_validate({"rules": [{"on": ["cancelled"], "to": "mailto:a@example.org"},
                                                        {"on": ["cancelled"], "to": "https://hooks.example.org/x"}]})
    stores = [open_store(Home.open(home)) for _ in range(4)]
    try:
        notifiers = [Notifier(s, settings, f"n{i}") for i, s in enumerate(stores)]
        barrier = threading.Barrier(len(notifiers))
        counts: list[int] = []

        def race(n: Notifier) -> None:
            barrier.wait()
            for _ in range(5):
                counts.append(n.route())

        threads = [threading.Thread(target=race, args=(n,)) for n in notifiers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        rows = stores[0].outbox.notifications()
        assert sum(counts) == len(rows) == 2 * len(job_ids)  # each event once per target
        assert sorted(r["job_id"] for r in rows) == sorted(job_ids * 2)
        assert {r["state"] for r in rows} == {"pending"}
        assert notifiers[0].route() == 0  # the cursor moved past them
    finally:
        for s in stores:
            s.close()


class Recorder(Channel):
    sent: list[tuple[str, Message]] = []

    @classmethod
    def check_target(cls, target: str, what: str) -> str:
        if not target.startswith("test:#"):
            raise BadParams(f"{what}: a test target is test:#CHANNEL")
        return target

    def send(self, target: str, message: Message) -> None:
        Recorder.sent.append((target, message))


def test_a_plug_in_channel_delivers_and_its_targets_are_checked(jm: JobManager, home: Path) -> None:
    channels.register("test", Recorder)
    with pytest.raises(BadParams, match="test:#CHANNEL"):
        jm.submit("sleep", {"tasks": 1}, notify=["failed:test:general"])
    job_id = jm.submit("sleep", {"tasks": 1}, notify=["cancelled:test:#ops"])
    jm.cancel(job_id)
    db = open_store(Home.open(home))
    try:
        notifier = Notifier(db, NotifySettings(), "n1")
        assert notifier.route() == 1 and notifier.send_due() == 1
        assert Recorder.sent[-1][0] == "test:#ops" and Recorder.sent[-1][1].payload["job"]["id"] == job_id
        assert notifications(jm, job_id)[0]["state"] == "sent"
        assert notifications(jm, job_id)[0]["channel"] == "test"
    finally:
        db.close()


def test_a_webhook_follows_no_redirect_to_another_host(hook: Hook) -> None:
    other = Hook()
    try:
        hook.script = [(307, {"Location": other.url.replace("127.0.0.1", "localhost") + "/stolen"})]
        webhook = channels.Webhook(NotifySettings.model_validate({"webhook": {"timeout": 5.0}}))
        message = Message(id=1, trigger="failed", subject="s", text="t", payload={"x": 1})
        with pytest.raises(DeliveryError, match="redirect to another host refused"):
            webhook.send(hook.url + "/jm", message)
        assert not other.requests
        hook.script = [(308, {"Location": "/moved"})]  # the same host: followed, body and signature kept
        webhook.send(hook.url + "/jm", message)
        assert len(hook.requests) == 3 and json.loads(hook.requests[-1][1]) == {"x": 1}
        hook.script = [(302, {"Location": "/elsewhere"})]  # would turn the POST into a GET: refused
        with pytest.raises(DeliveryError, match="HTTP 302"):
            webhook.send(hook.url + "/jm", message)
    finally:
        other.server.shutdown()
        other.server.server_close()


def test_a_webhook_times_out() -> None:
    with socket.socket() as silent:  # accepts the connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        webhook = channels.Webhook(NotifySettings.model_validate({"webhook": {"timeout": 0.5}}))
        with pytest.raises(DeliveryError, match="timed out"):
            webhook.send(f"http://127.0.0.1:{silent.getsockname()[1]}/", Message(1, "failed", "s", "t", {}))


def test_an_upgraded_store_notifies_nothing_of_its_history(store) -> None:  # noqa: F811
    """Migration 2 starts the notifiers' cursor after the events already there: turning notifications on
    does not mail every job that ever failed."""
    with store._tx() as c:  # back to version 1, with a failed job's events in the history
        back_to_version_1(c)
        c.execute("INSERT INTO jobs (type, name, params, owner, state, tasks_total, created_at, updated_at)"
                  " VALUES ('sleep', 'old', '{}', 'ana', 'failed', 1, 1, 1)")
        for state in ("queued", "running", "failed"):
            c.execute("INSERT INTO events (at, job_id, kind, to_state) VALUES (1, 1, 'job', ?)", (state,))
    assert store.migrate() == (1, SCHEMA_VERSION)
    settings = NotifySettings.model_validate({"rules": [{"on": ["failed"], "to": "mailto:a@example.org"}]})
    assert Notifier(store, settings, "n1").route() == 0 and store.outbox.notifications() == []


def test_jobs_send_webhooks_only_to_the_allowed_hosts(jm: JobManager, home: Path, hook: Hook) -> None:
    cfg = home / "jobmanager.toml"
    cfg.write_text(cfg.read_text() + '\n[notify.webhook]\nallowed_hosts = ["hooks.example.org", "*.corp.example"]\n'
                   f'[[notify.rules]]\non = ["failed"]\nto = "{hook.url}/ops"\n')
    with JobManager(home, user="tester") as fresh:
        with pytest.raises(BadParams, match="allowed_hosts"):
            fresh.submit("sleep", {"tasks": 1}, notify=["failed:http://169.254.169.254/latest"])
        assert fresh.jobs().empty
        fresh.submit("sleep", {"tasks": 1}, notify=["failed:https://ci.corp.example/jm"])
    settings = Home.open(home).settings.notify
    webhook = channels.Webhook(settings)
    message = Message(id=1, trigger="failed", subject="s", text="t", payload={})
    with pytest.raises(DeliveryError, match="allowed_hosts"):  # a schedule's or type's rule: refused when sent
        webhook.send(hook.url + "/elsewhere", message)
    webhook.send(hook.url + "/ops", message)  # the global rules' own targets are always allowed
    assert [h.get("X-JobManager-Event") for h, _ in hook.requests] == ["failed"]
