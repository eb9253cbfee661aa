"""Web Push for browsers: RFC 8030 delivery, RFC 8291 encryption, RFC 8292 (VAPID) identification.

The cryptography is the libraries': ``http_ece`` encrypts (``ece``), ``py_vapid`` signs
(``vapid``). The delivery is one POST on httpx rather than ``pywebpush`` 2.5: its ``send`` is
synchronous (requests); its ``send_async`` runs on aiohttp, and ``pywebpush`` imports both, a
second and a third HTTP stack beside the httpx every other provider uses. ``send_async`` also
takes no ``allow_redirects`` and passes none, so aiohttp's default applies and a push service
answering 307 would send the notifier on to any address, plain ``http`` included, past the
https-only rule below. What it adds on top of ``http_ece`` and ``py_vapid`` is that POST and
three headers, which are here.

The endpoint comes from the browser's subscription, i.e. from a client: only ``https`` endpoints
are contacted unless ``require_https`` is turned off (tests, local push services), redirects are
never followed, so a registered "subscription" cannot make the notifier speak plain HTTP to
arbitrary hosts. The API should still validate endpoints when a subscription is registered.

Outcomes: 2xx delivered; 404/410 the subscription is gone; 429/5xx retry (``Retry-After``
honoured); anything else (413, a refused VAPID key) is permanent.
"""

from __future__ import annotations

import logging
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric import ec

from notifier.providers._http import status_outcome, transport_failure
from notifier.providers.base import Notification, PushOutcome, PushProvider
from notifier.providers.ece import AUTH_SECRET_BYTES, MAX_PLAINTEXT, PUBLIC_KEY_BYTES, b64url_decode, encrypt
from notifier.providers.vapid import VapidKey

__all__ = ["InvalidSubscription", "WebPushProvider", "WebPushSubscription"]

_logger = logging.getLogger(__name__)

_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")  # RFC 8030 5.4: at most 32 base64url characters
_JWT_LIFETIME = 12 * 3600  # RFC 8292 allows up to 24 h
_JWT_RENEW_BEFORE = 3600.0
_UNCOMPRESSED_POINT = b"\x04"


class InvalidSubscription(ValueError):
    """A stored Web Push subscription that cannot be pushed to."""


@dataclass(frozen=True, slots=True)
class WebPushSubscription:
    """A browser's ``PushSubscription.toJSON()``: endpoint and the two keys."""

    endpoint: str = field(repr=False)
    p256dh: bytes = field(repr=False)
    auth: bytes = field(repr=False)

    @classmethod
    def parse(cls, value: object) -> WebPushSubscription:
        """Validate a stored subscription; raises ``InvalidSubscription`` saying what is wrong."""
        keys = value.get("keys") if isinstance(value, Mapping) else None
        endpoint = value.get("endpoint") if isinstance(value, Mapping) else None
        p256dh = keys.get("p256dh") if isinstance(keys, Mapping) else None
        auth = keys.get("auth") if isinstance(keys, Mapping) else None
        if not isinstance(endpoint, str) or not isinstance(p256dh, str) or not isinstance(auth, str):
            raise InvalidSubscription("a subscription is {endpoint, keys: {p256dh, auth}}, all strings")
        try:
            public, secret = b64url_decode(p256dh), b64url_decode(auth)
        except ValueError as exc:
            raise InvalidSubscription("the subscription's keys are not base64url") from exc
        if len(public) != PUBLIC_KEY_BYTES or public[:1] != _UNCOMPRESSED_POINT:
            raise InvalidSubscription("keys.p256dh is not an uncompressed P-256 public key")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public)
        except ValueError as exc:
            raise InvalidSubscription("keys.p256dh is not a point on P-256") from exc
        if len(secret) != AUTH_SECRET_BYTES:
            raise InvalidSubscription("keys.auth is not 16 bytes")
        parts = urlsplit(endpoint)
        if parts.scheme not in {"https", "http"} or not parts.hostname:
            raise InvalidSubscription("the endpoint is not an absolute http(s) URL")
        return cls(endpoint=endpoint, p256dh=public, auth=secret)

    @property
    def audience(self) -> str:
        """The endpoint's origin: the VAPID JWT's ``aud``."""
        parts = urlsplit(self.endpoint)
        return f"{parts.scheme}://{parts.netloc}"


class WebPushProvider(PushProvider):
    """Encrypts each push to its subscription and POSTs it to the subscription's endpoint."""

    max_payload_bytes = MAX_PLAINTEXT

    def __init__(
        self,
        *,
        vapid: VapidKey,
        subject: str,
        ttl: int = 86_400,
        urgency: str = "high",
        timeout: float = 10.0,
        verify: ssl.SSLContext | bool = True,
        require_https: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``subject`` is the VAPID contact (``mailto:`` or ``https:`` URL); ``clock`` wall time."""
        if not subject.startswith(("mailto:", "https:")):
            raise ValueError("the VAPID subject must be a mailto: or https: URL")
        self._vapid = vapid
        self._subject = subject
        self._ttl = ttl
        self._urgency = urgency
        self._require_https = require_https
        self._clock = clock
        self._authorizations: dict[str, tuple[str, float]] = {}
        self._client = httpx.AsyncClient(timeout=timeout, verify=verify, follow_redirects=False)

    @property
    def name(self) -> str:
        """``webpush``."""
        return "webpush"

    @property
    def vapid_public_key(self) -> str:
        """The ``applicationServerKey`` browsers subscribe with."""
        return self._vapid.public_key

    def render(self, notification: Notification) -> bytes:
        """The plaintext the service worker receives (before encryption)."""
        return orjson.dumps(
            {
                "title": notification.title,
                "body": notification.body,
                "tag": notification.thread_id,
                "badge": notification.badge,
                "data": dict(notification.data),
            }
        )

    def _authorization(self, audience: str) -> str:
        now = self._clock()
        cached = self._authorizations.get(audience)
        if cached is None or cached[1] - now < _JWT_RENEW_BEFORE:
            expires_at = int(now) + _JWT_LIFETIME
            cached = (self._vapid.authorization(audience, self._subject, expires_at), float(expires_at))
            self._authorizations[audience] = cached
        return cached[0]

    def _headers(self, notification: Notification, subscription: WebPushSubscription) -> dict[str, str]:
        headers = {
            "Authorization": self._authorization(subscription.audience),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self._ttl),
            "Urgency": self._urgency,
        }
        if _TOPIC.fullmatch(notification.thread_id):
            headers["Topic"] = notification.thread_id  # a newer push replaces an undelivered one
        return headers

    async def send(self, notification: Notification) -> PushOutcome:
        """Encrypt and POST the push; classify the push service's answer."""
        try:
            subscription = WebPushSubscription.parse(notification.token.value)
        except InvalidSubscription as exc:
            _logger.info(
                "web push subscription is malformed: token_id=%s message_id=%s problem=%s",
                notification.token.token_id,
                notification.message_id,
                exc,
            )
            return PushOutcome.token_rejected("MalformedSubscription")
        if self._require_https and not subscription.endpoint.startswith("https://"):
            return PushOutcome.token_rejected("InsecureEndpoint")
        plaintext = self.render(notification)
        if (refused := self.oversized(plaintext)) is not None:
            return refused
        try:
            headers = self._headers(notification, subscription)
        except ValueError as exc:
            _logger.warning(
                "web push VAPID signing refused: message_id=%s error=%s", notification.message_id, exc
            )
            return PushOutcome.permanent_failure("VapidRefused")
        body = encrypt(plaintext, subscription.p256dh, subscription.auth)
        try:
            response = await self._client.post(subscription.endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return transport_failure("web push", notification, exc)
        return self._classify(notification, response)

    def _classify(self, notification: Notification, response: httpx.Response) -> PushOutcome:
        return status_outcome("web push", notification, response)

    async def close(self) -> None:
        """Close the HTTP client's connections."""
        await self._client.aclose()
