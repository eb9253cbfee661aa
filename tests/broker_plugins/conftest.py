"""The in-process broker of ``test_device_connections.py`` (a real server, the core recorded), shared."""

from tests.broker_plugins.test_device_connections import broker

__all__ = ["broker"]
