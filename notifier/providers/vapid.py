"""VAPID (RFC 8292): the application server's P-256 key pair that identifies it to push services.

Browsers bind a subscription to the public key given to ``pushManager.subscribe``
(``applicationServerKey``, served by the API at ``GET /v1/push/vapid-public-key``); each push
then carries ``Authorization: vapid t=<ES256 JWT>,k=<public key>``, which ``py_vapid`` (the
Web Push libraries' own VAPID signer, used by ``pywebpush``) builds and signs.

What stays here is keeping the key: it must outlive restarts, so ``load_or_create`` keeps it in
a PEM file beside the other data, created with mode 0600 from the start (``py_vapid``'s
``from_file`` would create it with the process umask and log through the root logger), and
``from_base64url`` reads the raw private scalar format that ``web-push generate-vapid-keys``
and most deployments' environment variables use, refusing anything but 32 bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key
from py_vapid import Vapid, VapidException  # type: ignore[import-untyped]

from notifier.providers.ece import b64url_decode, b64url_encode

__all__ = ["VapidKey"]

_SCALAR_BYTES = 32


class VapidKey:
    """A VAPID key pair; signs the per-origin JWTs (through ``py_vapid``)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise TypeError("a VAPID key must be on the P-256 curve")
        self._vapid: Any = Vapid(private_key)
        self._public_key = b64url_encode(
            private_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        )

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
        if len(b64url_decode(private_scalar)) != _SCALAR_BYTES:
            raise ValueError("a VAPID private key is 32 bytes (base64url)")
        return cls(Vapid.from_raw(private_scalar.encode("ascii")).private_key)

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
        return bytes(self._vapid.private_pem())

    @property
    def public_key(self) -> str:
        """The ``applicationServerKey``: the uncompressed public point, unpadded base64url."""
        return self._public_key

    def authorization(self, audience: str, subject: str, expires_at: int) -> str:
        """The ``Authorization`` header for pushes to ``audience`` (the endpoint's origin).

        Raises ``ValueError`` when ``py_vapid`` refuses the claims (a ``sub`` that is no
        ``mailto:``/``https:`` contact, an ``aud`` that is no bare origin).
        """
        try:
            headers = self._vapid.sign({"aud": audience, "exp": expires_at, "sub": subject})
        except VapidException as exc:
            raise ValueError(f"VAPID refused the claims: {exc}") from exc
        return str(headers["Authorization"])
