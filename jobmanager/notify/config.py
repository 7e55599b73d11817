"""The ``[notify]`` table of jobmanager.toml, checked with the rest of the configuration (home.Settings)::

    [notify]
    max_attempts = 5          # tries per delivery before it is recorded failed
    retry_delay = 30.0        # seconds before the 2nd try, doubling up to retry_max_delay
    retry_max_delay = 3600.0
    poll_interval = 1.0       # how often an agent's notifier looks for new events and due deliveries

    [notify.smtp]             # for mailto: targets
    host = "smtp.example.org"
    port = 587
    starttls = true           # or ssl = true (SMTPS, port 465); not both
    username = "jobs"
    password_env = "JOBMANAGER_SMTP_PASSWORD"   # or password = "..." (the file is private to its owner)
    sender = "jobmanager@example.org"
    timeout = 10.0

    [notify.webhook]          # for http(s) targets
    secret_env = "JOBMANAGER_WEBHOOK_SECRET"    # or secret = "..."; signs every request (HMAC-SHA256)
    timeout = 10.0
    allowed_hosts = ["hooks.example.org"]       # where jobs' own rules may send webhooks (default: anywhere)

    [[notify.rules]]          # every job's (and agent's) events that go somewhere whatever the job says
    on = ["failed", "completed_with_errors", "agent_lost"]
    to = "mailto:ops@example.org"
"""

from __future__ import annotations

import fnmatch
import re
import urllib.parse
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from jobmanager.errors import BadParams
from jobmanager.notify import channels, rules

_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def _env_name(value: str | None) -> str | None:
    if value is not None and not _ENV.fullmatch(value):
        raise ValueError(f"{value!r} is not an environment variable name")
    return value


class SmtpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    host: str = Field("localhost", min_length=1, max_length=255, description="a host name, e.g. \"smtp.example.org\"")
    port: int = Field(25, ge=1, le=65535, description="a port number, e.g. 587")
    starttls: bool = Field(False, description="true or false")
    ssl: bool = Field(False, description="true or false (SMTPS, usually port 465)")
    username: str | None = Field(None, max_length=255, description="a user name")
    password: str | None = Field(None, max_length=1000, description="a password (or password_env)")
    password_env: str | None = Field(None, description="the name of an environment variable holding the password")
    sender: str = Field("jobmanager@localhost", description="an e-mail address, e.g. \"jobmanager@example.org\"")
    timeout: float = Field(10.0, gt=0, le=300, description="seconds between 0 and 300")

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9.:\[\]_-]+", value):
            raise ValueError(f"{value!r} is not a host name")
        return value

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        try:
            return channels.check_address(value, "sender")
        except BadParams as exc:
            raise ValueError(str(exc)) from None

    @field_validator("password_env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        return _env_name(value)

    @model_validator(mode="after")
    def _exclusive(self) -> "SmtpSettings":
        if self.starttls and self.ssl:
            raise ValueError("starttls and ssl: choose one (ssl for SMTPS on port 465, starttls for 587)")
        if self.password is not None and self.password_env is not None:
            raise ValueError("password and password_env: give one")
        return self


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    secret: str | None = Field(None, min_length=16, max_length=1000,
                               description="a signing secret of at least 16 characters (or secret_env)")
    secret_env: str | None = Field(None, description="the name of an environment variable holding the secret")
    timeout: float = Field(10.0, gt=0, le=300, description="seconds between 0 and 300")
    allowed_hosts: list[str] | None = Field(
        None, description='host names jobs, job types and schedules may send webhooks to, e.g. ["hooks.example.org", '
                          '"*.example.org"] (default: any; the [[notify.rules]] targets are always allowed)')

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str] | None) -> list[str] | None:
        for host in value or []:
            if not re.fullmatch(r"(\*\.)?[A-Za-z0-9.:\[\]_-]{1,253}", host):
                raise ValueError(f"{host!r} is not a host name (or *.domain)")
        return None if value is None else [h.lower() for h in value]

    def allows(self, url: str) -> bool:
        """Whether a job's webhook may go to ``url``'s host (``allowed_hosts``; None allows any)."""
        if self.allowed_hosts is None:
            return True
        host = (urllib.parse.urlsplit(url).hostname or "").lower()
        return any(fnmatch.fnmatchcase(host, pattern) for pattern in self.allowed_hosts)

    @field_validator("secret_env")
    @classmethod
    def _env(cls, value: str | None) -> str | None:
        return _env_name(value)

    @model_validator(mode="after")
    def _exclusive(self) -> "WebhookSettings":
        if self.secret is not None and self.secret_env is not None:
            raise ValueError("secret and secret_env: give one")
        return self


class NotifySettings(BaseModel):
    """``[notify]``: channels' servers and secrets, retries, and the global rules."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    max_attempts: int = Field(5, ge=1, le=100, description="a whole number from 1 to 100")
    retry_delay: float = Field(30.0, gt=0, le=86400, description="seconds between 0 and 86400, e.g. 30.0")
    retry_max_delay: float = Field(3600.0, gt=0, le=7 * 86400, description="seconds, e.g. 3600.0")
    poll_interval: float = Field(1.0, gt=0, le=600, description="seconds between 0 and 600, e.g. 1.0")
    smtp: SmtpSettings = Field(default_factory=SmtpSettings, description="a table ([notify.smtp])")
    webhook: WebhookSettings = Field(default_factory=WebhookSettings, description="a table ([notify.webhook])")
    rules: list[dict[str, Any]] = Field(
        default_factory=list, description='rules like on = ["failed"], to = "mailto:ops@example.org"')

    @field_validator("rules", mode="after")
    @classmethod
    def _rules(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for i, rule in enumerate(value):
            try:
                out.append(rules.check_rule(rule, f"rule {i + 1}", global_rule=True))
            except BadParams as exc:
                raise ValueError(str(exc)) from None
        return rules.merge(out)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed try."""
        return float(min(self.retry_max_delay, self.retry_delay * 2 ** max(0, attempts - 1)))
