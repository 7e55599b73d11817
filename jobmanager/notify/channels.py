"""How a notification is delivered: a channel per URL scheme, and the plug-in point for more.

Built in: ``mailto:`` (:class:`Email`, stdlib smtplib) and ``http://``/``https://`` (:class:`Webhook`: a
JSON POST signed with HMAC-SHA256). A site adds a channel (e.g. ``slack:``) with an entry point in the
group ``jobmanager.notifiers`` whose name is the scheme and whose object is a :class:`Channel` subclass::

    [project.entry-points."jobmanager.notifiers"]
    slack = "mysite.notify:Slack"

A channel checks its targets when a rule is written (:meth:`Channel.check_target`, one line for a bad
one) and delivers one message in :meth:`Channel.send`, raising on failure; the outbox retries it.
Channels run in an agent's notifier thread, never in a worker, so a slow server delays only other
notifications.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import re
import smtplib
import ssl
import threading
import urllib.parse
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar

from jobmanager import __version__, validate
from jobmanager.errors import BadParams

if TYPE_CHECKING:
    from jobmanager.notify.config import NotifySettings

ENTRY_POINT_GROUP = "jobmanager.notifiers"
#: the signature header of a webhook request: ``sha256=<hex HMAC-SHA256 of the body with the secret>``
SIGNATURE_HEADER = "X-JobManager-Signature-256"
MAX_TARGET = 2000
#: redirects a webhook follows at most (307/308 to the same scheme, host and port only)
MAX_REDIRECTS = 3


class DeliveryError(Exception):
    """A delivery that did not happen, with the reason (one line); the outbox may try again."""


@dataclass
class Message:
    """One notification to deliver: a subject and text for people, a JSON payload for machines."""

    id: int
    trigger: str
    subject: str
    text: str
    payload: dict[str, Any] = field(default_factory=dict)


class Channel:
    """Base class of a delivery channel: check targets, send one message (raise to fail it)."""

    #: the name recorded in the notifications table (``email``, ``webhook``, a plug-in's scheme)
    name: ClassVar[str] = ""

    def __init__(self, settings: "NotifySettings") -> None:
        self.settings = settings

    @classmethod
    def check_target(cls, target: str, what: str) -> str:
        """``target`` normalised, or BadParams (one line) if this channel cannot send to it."""
        return target

    def send(self, target: str, message: Message) -> None:
        raise NotImplementedError


# -- e-mail ------------------------------------------------------------------------------------------
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def check_address(value: str, what: str) -> str:
    """A bare e-mail address (no name, no list, no header text): ``ops@example.org``."""
    if not _ADDRESS.fullmatch(value) or len(value) > 254 or ".." in value.partition("@")[2]:
        raise BadParams(f"{what}: {validate.shown(value)} is not an e-mail address (one address like "
                        f"ops@example.org)")
    return value


class Email(Channel):
    """``mailto:ADDRESS``: one plain-text message over SMTP ([notify.smtp] in jobmanager.toml)."""

    name = "email"

    @classmethod
    def check_target(cls, target: str, what: str) -> str:
        address = target.split(":", 1)[1]
        return "mailto:" + check_address(address, what)

    def send(self, target: str, message: Message) -> None:
        smtp = self.settings.smtp
        msg = EmailMessage()
        msg["Subject"] = _header(message.subject)
        msg["From"] = smtp.sender
        msg["To"] = target.split(":", 1)[1]
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain=smtp.sender.partition("@")[2] or None)
        msg["X-JobManager-Event"] = _header(message.trigger)
        msg.set_content(message.text)
        password = smtp.password
        if smtp.password_env:
            password = os.environ.get(smtp.password_env)
            if password is None:
                raise DeliveryError(f"the SMTP password variable ${smtp.password_env} is not set for this agent")
        where = f"SMTP server {smtp.host}:{smtp.port}"
        try:
            client: smtplib.SMTP
            if smtp.ssl:
                client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout,
                                          context=ssl.create_default_context())
            else:
                client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
            with client:
                if smtp.starttls:
                    client.starttls(context=ssl.create_default_context())
                if smtp.username:
                    client.login(smtp.username, password or "")
                refused = client.send_message(msg)
            if refused:
                raise DeliveryError(f"{where} refused {', '.join(refused)}")
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
            raise DeliveryError(f"{where}: {exc.smtp_code} {validate.printable(text)}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{where}: {validate.printable(exc) or type(exc).__name__}") from None


def _header(text: str) -> str:
    """Header text without line breaks or control characters (a job named "x\\r\\nBcc: ..." stays one line)."""
    return validate.printable(text)[:200]


# -- webhooks ------------------------------------------------------------------------------------------
def sign(secret: str, body: bytes) -> str:
    """The value of :data:`SIGNATURE_HEADER` for ``body``: how a receiver checks a request came from us."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhook(Channel):
    """``http(s)://...``: a JSON POST of the message's payload, signed when a secret is configured.

    Times out after [notify.webhook] timeout seconds; follows a 307/308 redirect only to the same scheme,
    host and port (a webhook goes only where it was configured); any other answer than 2xx fails it.
    """

    name = "webhook"

    @classmethod
    def check_target(cls, target: str, what: str) -> str:
        try:
            url = urllib.parse.urlsplit(target)
            port = url.port
        except ValueError as exc:
            raise BadParams(f"{what}: {validate.shown(target)} is not a URL: {exc}") from None
        if not url.hostname:
            raise BadParams(f"{what}: {validate.shown(target)} names no host")
        if url.username is not None or url.password is not None:
            raise BadParams(f"{what}: {validate.shown(target)}: no user or password in a webhook URL "
                            f"(requests are signed with [notify.webhook] secret)")
        if " " in target or (port is not None and not 0 < port < 65536):
            raise BadParams(f"{what}: {validate.shown(target)} is not a URL")
        return urllib.parse.urlunsplit((url.scheme.lower(), url.netloc, url.path or "/", url.query, ""))

    def send(self, target: str, message: Message) -> None:
        hook = self.settings.webhook
        if not hook.allows(target) and target not in {r["to"] for r in self.settings.rules}:
            raise DeliveryError(f"{shown_url(target)}: host not in [notify.webhook] allowed_hosts")
        body = json.dumps(message.payload, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "User-Agent": f"jobmanager/{__version__}",
                   "X-JobManager-Event": message.trigger, "X-JobManager-Delivery": str(message.id)}
        secret = hook.secret
        if hook.secret_env:
            secret = os.environ.get(hook.secret_env)
            if secret is None:
                raise DeliveryError(f"the webhook secret variable ${hook.secret_env} is not set for this agent")
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, body)
        url = urllib.parse.urlsplit(target)
        origin = (url.scheme, url.hostname, url.port)
        for _ in range(MAX_REDIRECTS + 1):
            status, reason, location = _post(url, body, headers, hook.timeout)
            if 200 <= status < 300:
                return
            if status in (307, 308) and location:
                nxt = urllib.parse.urlsplit(urllib.parse.urljoin(urllib.parse.urlunsplit(url), location))
                if (nxt.scheme, nxt.hostname, nxt.port) != origin:
                    raise DeliveryError(f"{shown_url(target)}: redirect to another host refused "
                                        f"({shown_url(urllib.parse.urlunsplit(nxt))})")
                url = nxt
                continue
            raise DeliveryError(f"{shown_url(target)}: HTTP {status} {validate.printable(reason)[:100]}")
        raise DeliveryError(f"{shown_url(target)}: more than {MAX_REDIRECTS} redirects")


def _post(url: urllib.parse.SplitResult, body: bytes, headers: dict[str, str],
          timeout: float) -> tuple[int, str, str | None]:
    """One POST (no redirect followed): status, reason, Location."""
    cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    kwargs: dict[str, Any] = {"context": ssl.create_default_context()} if url.scheme == "https" else {}
    conn = cls(url.hostname or "", url.port, timeout=timeout, **kwargs)
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read(64 * 1024)
        return resp.status, resp.reason, resp.getheader("Location")
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryError(f"{shown_url(urllib.parse.urlunsplit(url))}: "
                            f"{validate.printable(exc) or type(exc).__name__}") from None
    finally:
        conn.close()


def shown_url(url: str) -> str:
    """A URL for messages and the audit trail: scheme, host and port only (paths often hold tokens)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/..." if parts.path not in ("", "/") or parts.query else url


# -- the registry: scheme -> channel ----------------------------------------------------------------------
BUILTIN: dict[str, type[Channel]] = {"mailto": Email, "http": Webhook, "https": Webhook}
SCHEMES = frozenset(BUILTIN)
_PLUGINS: dict[str, type[Channel]] = {}
_LOCK = threading.Lock()
_LOADED = False


def _plugins() -> dict[str, type[Channel]]:
    """The channels of the ``jobmanager.notifiers`` entry points (loaded once); a broken one is skipped."""
    global _LOADED
    with _LOCK:
        if not _LOADED:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                scheme = ep.name.lower()
                try:
                    cls = ep.load()
                except Exception:  # a broken plug-in must not stop the built-in channels
                    continue
                if isinstance(cls, type) and issubclass(cls, Channel) and scheme not in BUILTIN:
                    if not cls.name:
                        cls.name = scheme
                    _PLUGINS[scheme] = cls
            _LOADED = True
    return _PLUGINS


def register(scheme: str, cls: type[Channel]) -> None:
    """Add a channel for ``scheme`` in this process (what an entry point does, for tests and scripts)."""
    if not (isinstance(cls, type) and issubclass(cls, Channel)):
        raise TypeError("a notifier channel is a Channel subclass")
    if not cls.name:
        cls.name = scheme
    _plugins()[scheme.lower()] = cls


def channel_class(target: str) -> type[Channel]:
    """The channel that delivers to ``target`` (by its scheme)."""
    scheme = target.partition(":")[0].lower()
    cls = BUILTIN.get(scheme) or _plugins().get(scheme)
    if cls is None:
        raise BadParams(f"no channel for {validate.shown(target)}")
    return cls


def check_target(value: Any, what: str = "notify") -> str:
    """A notification target: ``mailto:ADDRESS``, ``http(s)://URL`` or a plug-in's scheme; one line otherwise.

    Control characters (CR/LF: header injection) are refused for every scheme."""
    if not isinstance(value, str):
        raise BadParams(f"{what}: a target must be text, not {validate.shown(value)}")
    target = value.strip()
    if not target:
        raise BadParams(f"{what}: the target is empty (e.g. mailto:ops@example.org or https://hooks.example.org/jm)")
    if len(target) > MAX_TARGET:
        raise BadParams(f"{what}: the target is {len(target)} characters long, at most {MAX_TARGET}")
    try:
        validate.name(target, f"{what}: the target", max_len=MAX_TARGET)
    except BadParams:
        raise BadParams(f"{what}: {validate.shown(target)}: a target may not contain control characters "
                        f"(line breaks)") from None
    scheme, sep, _ = target.partition(":")
    scheme = scheme.lower()
    if not sep or not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        raise BadParams(f"{what}: {validate.shown(target)} is not a target: use mailto:ADDRESS or "
                        f"https://URL")
    cls = BUILTIN.get(scheme) or _plugins().get(scheme)
    if cls is None:
        known = ", ".join(sorted({*BUILTIN, *_plugins()}))
        raise BadParams(f"{what}: {validate.shown(target)}: notifications go to mailto: addresses and "
                        f"http(s) URLs (schemes: {known}; a site adds more with a jobmanager.notifiers plug-in)")
    return cls.check_target(scheme + target[len(scheme):], what)
