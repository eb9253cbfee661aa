"""Authentication plugin: CONNECT username = user id, password = access token, client id = device.

A token is refused when expired or forged, when it belongs to another user, or when the
client id is not the device the token was issued to — otherwise one user could take over
another's session by connecting with its client id. Devices may not set a will: presence
is published by the server, and a will would let a device publish where it may not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from hubbub.errors import InvalidToken
from hubbub.tokens import TokenCodec

__all__ = ["SERVICE_USERNAME_PREFIX", "TokenAuthPlugin"]

logger = logging.getLogger(__name__)

SERVICE_USERNAME_PREFIX = "service:"


def _refuse(session: Session, reason: str) -> bool:
    logger.info(
        "refused CONNECT device_id=%s username=%s from %s: %s",
        session.client_id,
        session.username,
        session.remote_address,
        reason,
    )
    return False


class TokenAuthPlugin(BaseAuthPlugin):
    """Verifies the JWT in the CONNECT password against the username and client id."""

    @dataclass
    class Config:
        """``tokens``: the ``TokenCodec`` shared with the API (passed in, never looked up)."""

        tokens: Any = None

    async def authenticate(self, *, session: Session) -> bool:  # noqa: PLR0911 - one return per refusal
        """True only for a valid token whose user and device match the CONNECT."""
        codec: TokenCodec = self.config.tokens
        if not session.username or not session.password:
            return _refuse(session, "anonymous connections are not allowed")
        try:
            claims = codec.verify(str(session.password))
        except InvalidToken as exc:
            return _refuse(session, str(exc))
        if claims.service is not None:
            if session.username != f"{SERVICE_USERNAME_PREFIX}{claims.service}":
                return _refuse(session, "service token for another service")
            return True
        if session.username != str(claims.user_id):
            return _refuse(session, "token belongs to another user")
        if session.client_id != claims.device_id:
            return _refuse(session, "client id is not the token's device")
        if session.will_flag:
            return _refuse(session, "devices may not set a will (presence is the server's)")
        return True
