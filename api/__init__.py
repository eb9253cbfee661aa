"""Hubbub's REST API: accounts, login (JWT), conversations, history, sync."""

from api.app import create_app
from api.directory import SqlDirectory
from api.push import SqlPushDirectory
from api.schemas import BrokerEndpoint

__all__ = ["BrokerEndpoint", "SqlDirectory", "SqlPushDirectory", "create_app"]
