"""Web Push message encryption (RFC 8291) in the ``aes128gcm`` content coding (RFC 8188).

The cryptography is ``http_ece``'s: the reference implementation of RFC 8188 by its author, the one
``pywebpush`` encrypts with. This module only fixes what Web Push asks of it: the ``aes128gcm``
coding, a fresh P-256 sender key per message (whose public half is the header's key id), and one
record. A push message is at most 4,096 bytes, so with the 86-byte header and the 17 bytes of
padding delimiter and tag, the plaintext is at most ``MAX_PLAINTEXT`` bytes; the dispatcher fits
the text to that before encrypting.

The tests pin this against RFC 8291's worked example byte for byte, and the local push service
decrypts every push with its own RFC 8291 implementation, independent of this one.
"""

from __future__ import annotations

import base64

import http_ece  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "AUTH_SECRET_BYTES",
    "MAX_PLAINTEXT",
    "PUBLIC_KEY_BYTES",
    "b64url_decode",
    "b64url_encode",
    "encrypt",
]

PUBLIC_KEY_BYTES = 65  # an uncompressed P-256 point
AUTH_SECRET_BYTES = 16
_SALT_BYTES = 16
_RECORD_SIZE = 4096
_TAG_BYTES = 16
_HEADER_BYTES = _SALT_BYTES + 4 + 1 + PUBLIC_KEY_BYTES
MAX_PLAINTEXT = _RECORD_SIZE - _HEADER_BYTES - 1 - _TAG_BYTES  # 3,993 bytes


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url, as Web Push writes keys."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; raises ``ValueError`` on anything else."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("not base64url") from exc


def encrypt(
    plaintext: bytes,
    ua_public: bytes,
    auth_secret: bytes,
    *,
    sender_key: ec.EllipticCurvePrivateKey | None = None,
    salt: bytes | None = None,
) -> bytes:
    """The ``aes128gcm`` body for ``plaintext`` to a subscription's ``p256dh`` and ``auth`` keys.

    ``sender_key`` and ``salt`` are fresh per message (``http_ece`` draws the salt); they are
    parameters only so a test can reproduce a published example.
    """
    if not 0 < len(plaintext) <= MAX_PLAINTEXT:
        raise ValueError(f"plaintext has {len(plaintext)} bytes; one record holds 1 to {MAX_PLAINTEXT}")
    if len(auth_secret) != AUTH_SECRET_BYTES:
        raise ValueError("the auth secret must be 16 bytes")
    body = http_ece.encrypt(
        plaintext,
        salt=salt,
        private_key=sender_key or ec.generate_private_key(ec.SECP256R1()),
        dh=ua_public,
        auth_secret=auth_secret,
        rs=_RECORD_SIZE,
        version="aes128gcm",
    )
    return bytes(body)
