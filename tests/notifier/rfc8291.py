"""The browser's side of RFC 8291: decrypt an ``aes128gcm`` Web Push body with the subscription's keys.

Written from the RFC with stdlib HMAC-SHA-256 and AES-GCM from ``cryptography``, sharing nothing
with the code under test (which encrypts with ``http_ece``), so a push that decrypts here was
encrypted correctly, not merely consistently. ``test_webpush`` pins it to RFC 8291's appendix A.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

_LAST_RECORD = 2
_MORE_RECORDS = 1


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def decrypt(body: bytes, ua_private: ec.EllipticCurvePrivateKey, auth_secret: bytes) -> bytes:
    """The plaintext of ``body``; raises ``ValueError`` (or ``InvalidTag``) if it is not sound."""
    salt, record_size, id_length = body[:16], int.from_bytes(body[16:20], "big"), body[20]
    as_public, records = body[21 : 21 + id_length], body[21 + id_length :]
    ua_public = ua_private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    sender = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), as_public)
    ecdh_secret = ua_private.exchange(ec.ECDH(), sender)
    # RFC 8291 section 3.4: HKDF written out as HMACs (one block each, so T(1) = HMAC(PRK, info || 0x01)).
    prk_key = _hmac(auth_secret, ecdh_secret)
    ikm = _hmac(prk_key, b"WebPush: info\x00" + ua_public + as_public + b"\x01")
    prk = _hmac(salt, ikm)
    cek = _hmac(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
    nonce = int.from_bytes(_hmac(prk, b"Content-Encoding: nonce\x00\x01")[:12], "big")
    plaintext = bytearray()
    for sequence, start in enumerate(range(0, len(records), record_size)):
        record = records[start : start + record_size]
        padded = AESGCM(cek).decrypt((nonce ^ sequence).to_bytes(12, "big"), record, None)
        data = padded.rstrip(b"\x00")
        last = start + record_size >= len(records)
        if not data or data[-1] != (_LAST_RECORD if last else _MORE_RECORDS):
            raise ValueError("bad padding delimiter")
        plaintext.extend(data[:-1])
    return bytes(plaintext)
