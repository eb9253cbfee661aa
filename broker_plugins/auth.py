"""CONNECT authentication: username = user id, password = access token, client id = device.

A token is refused when expired or forged, when it belongs to another user, or when the
client id is not the device the token was issued to — otherwise one user could take over
another's session by connecting with its client id. Devices may not set a will: presence
is published by the server, and a will would let a device publish where it may not.
Services authenticate as ``service:{name}`` with a service token.

The broker calls this before the CONNECT may touch an existing session (stock amqtt
deleted a clean session, or took over a connected one, for whoever sent a CONNECT with its
client id — authenticated or not).
"""

from __future__ import annotations

import logging

from broker_plugins.connect import Connect
from broker_plugins.sessions import Identity
from hubbub.errors import InvalidToken
from hubbub.tokens import TokenCodec

__all__ = ["SERVICE_USERNAME_PREFIX", "TokenAuthenticator"]

logger = logging.getLogger(__name__)

SERVICE_USERNAME_PREFIX = "service:"


def _refuse(connect: Connect, reason: str) -> Identity | None:
    """Log why ``connect`` is refused; ``None``, the refusal."""
    logger.info(
        "refused CONNECT device_id=%s username=%s from %s: %s",
        connect.client_id,
        connect.username,
        connect.remote,
        reason,
    )
    return None


class TokenAuthenticator:
    """Verifies the JWT in the CONNECT password against the username and client id."""

    def __init__(self, tokens: TokenCodec) -> None:
        self._tokens = tokens

    def authenticate(self, connect: Connect) -> Identity | None:  # noqa: PLR0911 - one return per refusal
        """Who connects, or ``None`` (refused, and logged why)."""
        username = connect.username
        if not username or not connect.password:
            return _refuse(connect, "anonymous connections are not allowed")
        try:
            claims = self._tokens.verify(connect.password)
        except InvalidToken as exc:
            return _refuse(connect, str(exc))
        if claims.service is not None:
            if username != f"{SERVICE_USERNAME_PREFIX}{claims.service}":
                return _refuse(connect, "service token for another service")
            return Identity(username, None)
        if username != str(claims.user_id):
            return _refuse(connect, "token belongs to another user")
        if connect.client_id != claims.device_id:
            return _refuse(connect, "client id is not the token's device")
        if connect.will is not None:
            return _refuse(connect, "devices may not set a will (presence is the server's)")
        return Identity(username, claims.user_id)
