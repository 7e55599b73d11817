"""The ``jobmanager`` command: thin click commands over the service."""
