"""Access tokens: short-lived JWTs binding a user to one device, and service tokens.

The API issues them, the broker verifies them on CONNECT; both hold the same secret.
An access token names its device so that the broker can refuse a client id that is
not the token's device (otherwise one user's token could take over another's session).

Verification is on the CONNECT path of every device, so it is done here directly (HS256 is an
HMAC-SHA256 of the first two segments: about a tenth of PyJWT's generic path, which handled
every algorithm and option per call) with PyJWT's checks for our tokens: the header's ``alg``
must be HS256, the signature must match (compared in constant time), the claims must be a JSON
object with ``exp``, ``iat``, ``sub`` and ``typ``, our audience and issuer, and no ``nbf`` in
the future. A token that checked out is remembered with its claims (bounded, least recently
used out first) so a device reconnecting with the same token is not verified again; its
expiry is still checked against the clock at every use. A token that failed is never kept.
PyJWT still signs (off the hot path).

A new token's verification was half fixed work, now done once: the HMAC is keyed once and
copied per token (``hmac.new`` set OpenSSL's key up afresh each time; ``_hmac_pads`` keeps the
two SHA-256 states ``hmac.HMAC`` would, without its interpreted methods), and a header segment
seen on a token whose signature matched is not decoded again (the API issues one header; the
signature covers it, so only a holder of the secret can add another).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, Protocol

import jwt
import orjson

from hubbub.errors import InvalidToken

__all__ = ["AccessClaims", "TokenCodec"]

_ALGORITHM = "HS256"
_ACCESS = "access"
_SERVICE = "service"
_LEEWAY_S = 5
_REQUIRED = ("exp", "iat", "sub", "typ")
_REMEMBERED = 100_000  # verified tokens kept: ~0.5 KB each, so at most ~50 MB
_HEADERS = 16  # header segments of verified tokens kept (the API issues one)
_URLSAFE = bytes.maketrans(b"-_", b"+/")  # base64url's alphabet to base64's
_SHA256_BLOCK = 64  # bytes: HMAC pads its key to this


class _Sha256(Protocol):
    """A SHA-256 state, as ``hashlib.sha256()`` returns it."""

    def copy(self) -> _Sha256:
        """The same state, to go on from separately."""
        ...

    def update(self, data: bytes, /) -> None:
        """Absorb ``data``."""
        ...

    def digest(self) -> bytes:
        """The hash of what was absorbed."""
        ...


class AccessClaims:
    """Who holds a verified token: a user's device, or a named service (``user_id`` 0); read-only.

    A plain slotted class, not a frozen dataclass: compiled, its ``__init__`` is C, where the
    dataclass's generated one stayed interpreted (``object.__setattr__`` per field) on every
    new token a CONNECT brings.
    """

    __slots__ = ("device_id", "service", "user_id")

    def __init__(self, *, user_id: int, device_id: str, service: str | None = None) -> None:
        self.user_id: Final = user_id
        self.device_id: Final = device_id
        self.service: Final = service

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AccessClaims):
            return NotImplemented
        return (self.user_id, self.device_id, self.service) == (other.user_id, other.device_id, other.service)

    def __hash__(self) -> int:
        return hash((self.user_id, self.device_id, self.service))

    def __repr__(self) -> str:
        return (
            f"AccessClaims(user_id={self.user_id!r}, device_id={self.device_id!r}, service={self.service!r})"
        )


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
        remembered: int = _REMEMBERED,
    ) -> None:
        self._secret = secret
        self._inner, self._outer = _hmac_pads(secret.encode())  # keyed once, copied per token
        self._ttl = access_ttl_s
        self._issuer = issuer
        self._audience = audience
        self._clock = clock_s
        self._remembered = remembered
        self._verified: OrderedDict[str, tuple[AccessClaims, int]] = OrderedDict()  # token -> (claims, exp)
        self._headers: set[bytes] = set()  # header segments of tokens whose signature matched

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
        known = self._verified.get(token)
        if known is None:
            claims, expires = self._checked_claims(token)
            known = (_access_claims(claims), expires)
            self._verified[token] = known
            if len(self._verified) > self._remembered:
                self._verified.popitem(last=False)
        else:
            self._verified.move_to_end(token)
        access, expires = known
        if expires + _LEEWAY_S < self._clock():
            raise InvalidToken("token expired")
        return access

    def _checked_claims(self, token: str) -> tuple[dict[str, object], int]:
        """The claims and expiry of a token signed with our secret for us, or ``InvalidToken``."""
        claims = self._signed_claims(token)
        missing = [name for name in _REQUIRED if name not in claims]
        if missing:
            raise InvalidToken(f'token rejected: Token is missing the "{missing[0]}" claim')
        audience = claims.get("aud")
        if audience != self._audience and not (isinstance(audience, list) and self._audience in audience):
            raise InvalidToken("token rejected: Audience doesn't match")
        if claims.get("iss") != self._issuer:
            raise InvalidToken("token rejected: Invalid issuer")
        not_before = claims.get("nbf")
        if not_before is not None and (
            not isinstance(not_before, int | float) or not_before > self._clock() + _LEEWAY_S
        ):
            raise InvalidToken("token rejected: The token is not yet valid (nbf)")
        if not isinstance(claims["sub"], str):
            raise InvalidToken("token rejected: Subject must be a string")
        expires = claims["exp"]
        if not isinstance(expires, int):
            raise InvalidToken("token expired")
        return claims, expires

    def _signed_claims(self, token: str) -> dict[str, object]:
        """The claims object of an HS256 token signed with our secret, or ``InvalidToken``."""
        if token.count(".") != 2:  # noqa: PLR2004 - header, payload, signature
            raise InvalidToken("token rejected: Not enough segments")
        try:
            signing_input, _, signature = token.encode("ascii").rpartition(b".")
            header, _, payload = signing_input.partition(b".")
            if header not in self._headers and orjson.loads(_b64decode(header)).get("alg") != _ALGORITHM:
                raise InvalidToken("token rejected: the algorithm is not HS256")
            inner = self._inner.copy()
            inner.update(signing_input)
            outer = self._outer.copy()
            outer.update(inner.digest())
            if not hmac.compare_digest(outer.digest(), _b64decode(signature)):
                raise InvalidToken("token rejected: Signature verification failed")
            claims = orjson.loads(_b64decode(payload))
        except (UnicodeEncodeError, binascii.Error, orjson.JSONDecodeError, AttributeError) as exc:
            raise InvalidToken(f"token rejected: not a JWT ({type(exc).__name__})") from exc
        if len(self._headers) < _HEADERS:
            self._headers.add(header)
        if not isinstance(claims, dict):
            raise InvalidToken("token rejected: the claims are not a JSON object")
        return claims


def _hmac_pads(key: bytes) -> tuple[_Sha256, _Sha256]:
    """HMAC-SHA256's inner and outer hashes with ``key``'s pads already absorbed (RFC 2104).

    HMAC(K, m) = H((K' ^ opad) || H((K' ^ ipad) || m)), K' the key padded to the block (hashed
    first if longer). Each token copies these two states, what ``hmac.HMAC.copy`` does too,
    minus its three interpreted methods per token (~1.3 µs, measured).
    """
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in key))
    outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in key))
    return inner, outer


def _b64decode(segment: bytes) -> bytes:
    """A base64url segment of a JWT (unpadded); ``binascii.Error`` if it is not one.

    What ``base64.urlsafe_b64decode`` does, without its Python-level checks and copies.
    """
    return binascii.a2b_base64(segment.translate(_URLSAFE) + b"=" * (-len(segment) % 4))


def _access_claims(claims: dict[str, object]) -> AccessClaims:
    """Who the verified ``claims`` name: a device of a user, or a service."""
    kind = claims["typ"]
    subject = str(claims["sub"])
    if kind == _SERVICE and subject.startswith("service:"):
        return AccessClaims(user_id=0, device_id="", service=subject.removeprefix("service:"))
    device_id = claims.get("did")
    if kind != _ACCESS or not subject.isdigit() or not isinstance(device_id, str):
        raise InvalidToken("not an access token")
    return AccessClaims(user_id=int(subject), device_id=device_id)
