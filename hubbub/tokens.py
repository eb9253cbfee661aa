"""Access tokens: short-lived JWTs binding a user to one device, and service tokens.

The API issues them, the broker verifies them on CONNECT; both hold the same secret.
An access token names its device so that the broker can refuse a client id that is
not the token's device (otherwise one user's token could take over another's session).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import jwt

from hubbub.errors import InvalidToken

__all__ = ["AccessClaims", "TokenCodec"]

_ALGORITHM = "HS256"
_ACCESS = "access"
_SERVICE = "service"
_LEEWAY_S = 5


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """Who holds a verified token: a user's device, or a named service (``user_id`` 0)."""

    user_id: int
    device_id: str
    service: str | None = None


class TokenCodec:
    """Signs and verifies Hubbub JWTs with one HMAC secret."""

    def __init__(
        self,
        secret: str,
        *,
        access_ttl_s: int,
        issuer: str = "hubbub",
        audience: str = "hubbub",
        clock_s: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self._ttl = access_ttl_s
        self._issuer = issuer
        self._audience = audience
        self._clock = clock_s

    @property
    def access_ttl_s(self) -> int:
        """Lifetime of an access token, as reported to clients in ``expires_in``."""
        return self._ttl

    def issue_access(self, user_id: int, device_id: str) -> str:
        """A token for ``device_id`` of ``user_id``, valid for ``access_ttl_s``."""
        now = int(self._clock())
        claims: dict[str, object] = {
            "sub": str(user_id),
            "did": device_id,
            "typ": _ACCESS,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": now,
            "exp": now + self._ttl,
        }
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def issue_service(self, name: str, ttl_s: int = 3600) -> str:
        """A token for an internal service (persister, notifier, API) to connect with."""
        now = int(self._clock())
        claims: dict[str, object] = {
            "sub": f"service:{name}",
            "typ": _SERVICE,
            "iss": self._issuer,
            "aud": self._audience,
        }
        claims |= {"iat": now, "exp": now + ttl_s}
        return jwt.encode(claims, self._secret, algorithm=_ALGORITHM)

    def verify(self, token: str) -> AccessClaims:
        """Decode ``token`` or raise ``InvalidToken`` saying why."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[_ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                # Expiry is checked below against the injected clock, not PyJWT's wall clock.
                options={"require": ["exp", "iat", "sub", "typ"], "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"token rejected: {exc}") from exc
        if not isinstance(claims["exp"], int) or claims["exp"] + _LEEWAY_S < self._clock():
            raise InvalidToken("token expired")
        kind = claims["typ"]
        subject = str(claims["sub"])
        if kind == _SERVICE and subject.startswith("service:"):
            return AccessClaims(user_id=0, device_id="", service=subject.removeprefix("service:"))
        if kind != _ACCESS or not subject.isdigit() or not isinstance(claims.get("did"), str):
            raise InvalidToken("not an access token")
        return AccessClaims(user_id=int(subject), device_id=claims["did"])
