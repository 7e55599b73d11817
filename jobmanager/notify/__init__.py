"""Notifications: e-mail and webhooks when a job fails (or completes, with or without errors) and when an
agent is lost.

- :mod:`.rules`: which events go where (``{"on": [...], "to": "mailto:..."}``), checked once;
- :mod:`.channels`: how a message is delivered (SMTP, webhooks) and the ``jobmanager.notifiers`` plug-ins;
- :mod:`.config`: the ``[notify]`` table of jobmanager.toml;
- :mod:`.outbox`: an agent's notifier thread, which turns the store's events into ``notifications`` rows
  and sends them, retried with back-off, off every worker's path.
"""
