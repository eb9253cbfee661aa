"""Hubbub's REST API: accounts, login (JWT), conversations, history, sync.

The stores every process uses; ``api.app.create_app`` (FastAPI and the routers) only for what serves
the API, so that the other roles do not import FastAPI.
"""

from api.schemas import BrokerEndpoint
from api.store import SqlDeviceSessions, SqlDirectory, SqlPushDirectory

__all__ = ["BrokerEndpoint", "SqlDeviceSessions", "SqlDirectory", "SqlPushDirectory"]
