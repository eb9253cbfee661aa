"""APNs: Apple's provider API over HTTP/2 with token (.p8, ES256 JWT) authentication.

Our own small client on ``httpx[http2]`` (h2 is python-hyper's HTTP/2 engine), because the
APNs libraries cannot serve. ``aioapns`` 4.0 (the latest, April 2025) was pointed at the tests'
HTTP/2 stand-in (``tests/notifier/apns_server.py``) to see:

- ``aioapns`` has no host or port option (only ``use_sandbox`` and an HTTP CONNECT proxy):
  reaching ``HUBBUB_APNS_URL``, a regional proxy or a test server means replacing its pool's
  ``protocol_class`` with a subclass overriding ``APNS_SERVER``/``APNS_PORT``, internals any
  release may change (the pull requests that would add even a port option, #68-#70, were not
  merged). A push APNs never answers waits forever (Apple has been seen not answering streams):
  there is no request timeout, and cancelling from outside leaves the stream's future in the
  connection, which then raises ``InvalidStateError`` when the connection closes. Its result
  drops ``Retry-After``; it serialises the payload itself with ``json.dumps``'s spaced
  separators (89 bytes for a test payload compact JSON writes in 82), so a payload fitted to
  4 KB can be refused as too large; it closes a connection after 10 s idle where Apple asks
  providers to keep them open; an unreachable APNs costs 5 s of its own retry sleeps; and it
  logs every refusal at ERROR itself.
- ``kalyke-apns`` opens a new HTTP/2 client, reads the key file and signs a new provider token
  for every push (no connection reuse; Apple throttles token refreshes), with a fixed host.
- ``apns2`` depends on ``hyper``, which does not import on Python >= 3.10.

What is here is one ``POST /3/device/{token}`` per push with a handful of headers on one pooled
HTTP/2 client: connection reuse and stream multiplexing, TLS with a configurable trust store, a
configurable base URL, a per-request timeout, and the provider token signed with PyJWT and
renewed every 50 minutes (Apple refuses tokens older than an hour and throttles newer renewals).

Outcomes: 200 delivered; 410, ``BadDeviceToken``, ``Unregistered``, ``DeviceTokenNotForTopic``
token rejected; 403 ``ExpiredProviderToken`` makes a new provider token and retries; 429 and
5xx retry; anything else (bad topic, bad key, payload too large) is permanent.
"""

from __future__ import annotations

import logging
import re
import ssl
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from notifier.providers._http import json_object, parse_retry_after, transport_failure
from notifier.providers.base import Notification, PushOutcome, PushProvider

__all__ = ["APNS_PRODUCTION_URL", "APNS_SANDBOX_URL", "ApnsProvider", "load_apns_key"]

_logger = logging.getLogger(__name__)

APNS_PRODUCTION_URL = "https://api.push.apple.com"
APNS_SANDBOX_URL = "https://api.sandbox.push.apple.com"

# Device tokens are hex; Apple warns their length may change, so only the alphabet is enforced
# (which also keeps anything but a token out of the request path).
_DEVICE_TOKEN = re.compile(r"[0-9A-Fa-f]{8,512}")
_REJECTED_REASONS = frozenset({"BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic", "ExpiredToken"})
_MAX_COLLAPSE_ID_BYTES = 64
# Apple refuses provider tokens older than an hour and throttles refreshes more often than
# every 20 minutes: refresh in between.
_PROVIDER_TOKEN_TTL = 50 * 60.0


def load_apns_key(pem: str | bytes) -> ec.EllipticCurvePrivateKey:
    """The P-256 signing key from the contents of an APNs ``AuthKey_XXXX.p8`` file."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = load_pem_private_key(data, password=None)
    except ValueError as exc:
        raise ValueError("the APNs key is not a PEM (.p8) private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise TypeError("the APNs key must be an EC P-256 key (an AuthKey_XXXX.p8 file)")
    return key


class ApnsProvider(PushProvider):
    """Pushes alerts to iOS/macOS devices through APNs (``apns-push-type: alert``)."""

    def __init__(
        self,
        *,
        key: str | bytes | Path,
        key_id: str,
        team_id: str,
        topic: str,
        base_url: str = APNS_PRODUCTION_URL,
        timeout: float = 10.0,
        verify: ssl.SSLContext | bool = True,
        ttl: int = 86_400,
        priority: int = 10,
        sound: str | None = "default",
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``key`` is the .p8 file (a path, or its contents); ``topic`` the app's bundle id."""
        self._key = load_apns_key(key.read_bytes() if isinstance(key, Path) else key)
        self._key_id = key_id
        self._team_id = team_id
        self._topic = topic
        self._ttl = ttl
        self._priority = priority
        self._sound = sound
        self._clock = clock
        self._provider_token: tuple[str, float] | None = None
        self._client = httpx.AsyncClient(
            base_url=base_url,
            http1=False,
            http2=True,
            timeout=timeout,
            verify=verify,
            # APNs asks providers to keep connections open rather than reconnect per push.
            limits=httpx.Limits(max_connections=16, keepalive_expiry=600.0),
        )

    @property
    def name(self) -> str:
        """``apns``."""
        return "apns"

    def render(self, notification: Notification) -> bytes:
        """The JSON payload: ``aps`` (alert, badge, thread-id, sound) and the ids beside it."""
        aps: dict[str, object] = {
            "alert": {"title": notification.title, "body": notification.body},
            "badge": notification.badge,
            "thread-id": notification.thread_id,
        }
        if self._sound:
            aps["sound"] = self._sound
        return orjson.dumps({"aps": aps, **notification.data})

    def _bearer(self) -> str:
        now = self._clock()
        if self._provider_token is None or now - self._provider_token[1] >= _PROVIDER_TOKEN_TTL:
            token = jwt.encode(
                {"iss": self._team_id, "iat": int(now)},
                self._key,
                algorithm="ES256",
                headers={"kid": self._key_id},
            )
            self._provider_token = (token, now)
        return self._provider_token[0]

    def _headers(self, notification: Notification) -> dict[str, str]:
        headers = {
            "authorization": f"bearer {self._bearer()}",
            "apns-topic": self._topic,
            "apns-push-type": "alert",
            "apns-priority": str(self._priority),
            "apns-expiration": str(int(self._clock()) + self._ttl),
            "apns-id": str(uuid.uuid4()),
        }
        if 0 < len(notification.thread_id.encode()) <= _MAX_COLLAPSE_ID_BYTES:
            headers["apns-collapse-id"] = notification.thread_id
        return headers

    async def send(self, notification: Notification) -> PushOutcome:
        """POST the push to ``/3/device/{token}`` and classify APNs' answer."""
        device_token = notification.token.value
        if not isinstance(device_token, str) or not _DEVICE_TOKEN.fullmatch(device_token):
            _logger.info(
                "apns token is malformed: token_id=%s message_id=%s",
                notification.token.token_id,
                notification.message_id,
            )
            return PushOutcome.token_rejected("MalformedDeviceToken")
        payload = self.render(notification)
        if (refused := self.oversized(payload)) is not None:
            return refused
        try:
            response = await self._client.post(
                f"/3/device/{device_token}", content=payload, headers=self._headers(notification)
            )
        except httpx.HTTPError as exc:
            return transport_failure("apns", notification, exc)
        return self._classify(notification, response)

    def _classify(self, notification: Notification, response: httpx.Response) -> PushOutcome:
        status = response.status_code
        if status == HTTPStatus.OK:
            _logger.debug(
                "apns accepted: message_id=%s token_id=%s apns_id=%s",
                notification.message_id,
                notification.token.token_id,
                response.headers.get("apns-id"),
            )
            return PushOutcome.delivered(status)
        reason = str(json_object(response.content).get("reason") or f"http_{status}")
        if status == HTTPStatus.GONE or reason in _REJECTED_REASONS:
            return PushOutcome.token_rejected(reason, status)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if reason == "ExpiredProviderToken":
            self._provider_token = None  # our clock or Apple's drifted: sign a fresh one
            return PushOutcome.retry_later(reason, status, retry_after)
        if status == HTTPStatus.TOO_MANY_REQUESTS or status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            return PushOutcome.retry_later(reason, status, retry_after)
        _logger.warning(
            "apns refused a push: message_id=%s token_id=%s status=%d reason=%s",
            notification.message_id,
            notification.token.token_id,
            status,
            reason,
        )
        return PushOutcome.permanent_failure(reason, status)

    async def close(self) -> None:
        """Close the HTTP/2 connections."""
        await self._client.aclose()
