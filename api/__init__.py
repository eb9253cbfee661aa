"""Hubbub's REST API: accounts, login (JWT), conversations, history, sync."""

from api.app import create_app
from api.schemas import BrokerEndpoint
from api.store import SqlDeviceSessions, SqlDirectory, SqlPushDirectory

__all__ = ["BrokerEndpoint", "SqlDeviceSessions", "SqlDirectory", "SqlPushDirectory", "create_app"]
