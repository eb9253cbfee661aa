"""VAPID (RFC 8292): the application server's P-256 key pair that identifies it to push services.

Browsers bind a subscription to the public key given to ``pushManager.subscribe``
(``applicationServerKey``, served by the API at ``GET /v1/push/vapid-public-key``); each push
then carries ``Authorization: vapid t=<ES256 JWT>, k=<public key>``. The key must therefore
outlive restarts: ``load_or_create`` keeps it in a PEM file (mode 0600) beside the other data,
and ``from_base64url`` reads the raw private scalar format that ``web-push generate-vapid-keys``
and most deployments' environment variables use.
"""

from __future__ import annotations

import os
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from notifier.providers.ece import b64url_decode, b64url_encode

__all__ = ["VapidKey"]

_SCALAR_BYTES = 32


class VapidKey:
    """A VAPID key pair; signs the per-origin JWTs."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise TypeError("a VAPID key must be on the P-256 curve")
        self._key = private_key

    @classmethod
    def generate(cls) -> VapidKey:
        """A new random key pair."""
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, pem: str | bytes) -> VapidKey:
        """From a PEM private key (PKCS#8 or SEC1)."""
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            key = load_pem_private_key(data, password=None)
        except ValueError as exc:
            raise ValueError("the VAPID key is not a PEM private key") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("a VAPID key must be an EC key")
        return cls(key)

    @classmethod
    def from_base64url(cls, private_scalar: str) -> VapidKey:
        """From the unpadded base64url private scalar (32 bytes) most tools print."""
        raw = b64url_decode(private_scalar)
        if len(raw) != _SCALAR_BYTES:
            raise ValueError("a VAPID private key is 32 bytes (base64url)")
        return cls(ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1()))

    @classmethod
    def load_or_create(cls, path: str | Path) -> VapidKey:
        """The key in the PEM file at ``path``, generated and written (0600) if it is missing."""
        path = Path(path)
        if path.exists():
            return cls.from_pem(path.read_bytes())
        key = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(key.private_pem())
        return key

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM."""
        return self._key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())

    @property
    def public_key(self) -> str:
        """The ``applicationServerKey``: the uncompressed public point, unpadded base64url."""
        return b64url_encode(
            self._key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        )

    def authorization(self, audience: str, subject: str, expires_at: int) -> str:
        """The ``Authorization`` header for pushes to ``audience`` (the endpoint's origin)."""
        token = jwt.encode(
            {"aud": audience, "exp": expires_at, "sub": subject},
            self._key,
            algorithm="ES256",
            headers={"typ": "JWT"},
        )
        return f"vapid t={token}, k={self.public_key}"
