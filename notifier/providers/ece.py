"""Web Push message encryption (RFC 8291) in the ``aes128gcm`` content coding (RFC 8188).

Written against ``cryptography`` (ECDH P-256, HKDF-SHA-256, AES-128-GCM) instead of taking
``http_ece``: the scheme is a dozen lines of key derivation, ``cryptography`` is typed and
already needed for the JWTs, and ``http_ece`` ships no type information. The tests pin this
against RFC 8291's worked example byte for byte and decrypt with ``http_ece`` independently.

One record only: a push message is at most 4,096 bytes, so with the 86-byte header and the
17 bytes of padding delimiter and tag, the plaintext is at most ``MAX_PLAINTEXT`` bytes.
"""

from __future__ import annotations

import base64
import os
import struct

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

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


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract (RFC 5869): HMAC-SHA-256 keyed with the salt."""
    mac = hmac.HMAC(salt, hashes.SHA256())
    mac.update(ikm)
    return mac.finalize()


def encrypt(
    plaintext: bytes,
    ua_public: bytes,
    auth_secret: bytes,
    *,
    sender_key: ec.EllipticCurvePrivateKey | None = None,
    salt: bytes | None = None,
) -> bytes:
    """The ``aes128gcm`` body for ``plaintext`` to a subscription's ``p256dh`` and ``auth`` keys.

    ``sender_key`` and ``salt`` are fresh per message; they are parameters only so a test can
    reproduce a published example.
    """
    if len(plaintext) > MAX_PLAINTEXT:
        raise ValueError(f"plaintext has {len(plaintext)} bytes; one record holds {MAX_PLAINTEXT}")
    if len(auth_secret) != AUTH_SECRET_BYTES:
        raise ValueError("the auth secret must be 16 bytes")
    receiver = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ua_public)
    sender_key = sender_key or ec.generate_private_key(ec.SECP256R1())
    salt = salt or os.urandom(_SALT_BYTES)
    as_public = sender_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    ecdh_secret = sender_key.exchange(ec.ECDH(), receiver)
    ikm = _hkdf(auth_secret, ecdh_secret, b"WebPush: info\x00" + ua_public + as_public, 32)
    prk = _extract(salt, ikm)
    cek = HKDFExpand(hashes.SHA256(), 16, b"Content-Encoding: aes128gcm\x00").derive(prk)
    nonce = HKDFExpand(hashes.SHA256(), 12, b"Content-Encoding: nonce\x00").derive(prk)

    ciphertext = AESGCM(cek).encrypt(nonce, plaintext + b"\x02", None)  # 0x02: the last record
    header = salt + struct.pack("!IB", _RECORD_SIZE, len(as_public)) + as_public
    return header + ciphertext
