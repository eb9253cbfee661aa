"""A Python client for Hubbub (paho-mqtt + httpx): what the tests and ``hubbub chat`` use."""

from client.client import HubbubClient, LoginFailed
from client.outbox import Outbox, Pending
from client.timeline import Timeline

__all__ = ["HubbubClient", "LoginFailed", "Outbox", "Pending", "Timeline"]
