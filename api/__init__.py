"""Hubbub's REST API: accounts, login (JWT), conversations, history, devices."""

from api.app import create_app
from api.schemas import BrokerEndpoint

__all__ = ["BrokerEndpoint", "create_app"]
