"""FCM: Firebase Cloud Messaging's HTTP v1 API, authenticated with a service account.

Why a small async client on httpx rather than ``pyfcm``: pyfcm 2.x is synchronous (requests,
and a blocking ``sleep`` on ``Retry-After``) and its async helper fails inside a running event
loop, so it would need a thread per in-flight push and would retry on its own, fighting the
dispatcher's bounded backoff. ``google-auth`` is synchronous as well. The protocol is small: an
OAuth2 access token from a JWT-bearer grant (RFC 7523: an RS256 assertion signed with the service
account's key, PyJWT + cryptography) POSTed to the account's ``token_uri`` and cached until
shortly before it expires, then one ``POST {base}/v1/projects/{project}/messages:send`` per push.
Both URLs are configurable (``HUBBUB_FCM_URL``, the service account's ``token_uri``).

Outcomes: 200 delivered; ``UNREGISTERED``/``NOT_FOUND``, ``SENDER_ID_MISMATCH`` and an
``INVALID_ARGUMENT`` that is about the token (a ``message.token`` field violation, or FCM's
"not a valid FCM registration token") reject the token; 429/500/503 (``QUOTA_EXCEEDED``,
``INTERNAL``, ``UNAVAILABLE``) and any 5xx retry, honouring ``Retry-After``; a 401 for our access
token drops the cached one and retries; anything else (a payload FCM refuses,
``THIRD_PARTY_AUTH_ERROR``) is permanent.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson

from notifier.providers._http import json_object, parse_retry_after, transport_failure
from notifier.providers.base import Notification, OutcomeKind, PushOutcome, PushProvider

__all__ = [
    "DEFAULT_FCM_URL",
    "FCM_SCOPE",
    "AccessTokenError",
    "FcmProvider",
    "GoogleAccessTokens",
    "ServiceAccount",
    "classify_error",
]

_logger = logging.getLogger(__name__)

DEFAULT_FCM_URL = "https://fcm.googleapis.com"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_ASSERTION_LIFETIME = 3600
_REFRESH_MARGIN = 300.0  # renew this long before expiry so no push carries a dying token
_RETRYABLE_STATUS = frozenset({HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.INTERNAL_SERVER_ERROR})
_REJECTED_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
_RETRYABLE_CODES = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"})


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """The fields of a Google service-account JSON key file that FCM needs."""

    project_id: str
    client_email: str
    private_key: str = field(repr=False)
    token_uri: str = DEFAULT_TOKEN_URI
    private_key_id: str | None = None

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> ServiceAccount:
        """From the parsed key file; raises ``ValueError`` naming a missing field."""
        missing = [name for name in ("project_id", "client_email", "private_key") if not info.get(name)]
        if missing:
            raise ValueError(f"the service account JSON lacks {', '.join(missing)}")
        return cls(
            project_id=str(info["project_id"]),
            client_email=str(info["client_email"]),
            private_key=str(info["private_key"]),
            token_uri=str(info.get("token_uri") or DEFAULT_TOKEN_URI),
            private_key_id=str(info["private_key_id"]) if info.get("private_key_id") else None,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> ServiceAccount:
        """From a service-account JSON key file."""
        try:
            info = orjson.loads(Path(path).read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{path} is not a service-account JSON file") from exc
        if not isinstance(info, dict):
            raise TypeError(f"{path} is not a service-account JSON object")
        return cls.from_info(info)


class AccessTokenError(Exception):
    """No access token could be had; ``retryable`` when the token endpoint may recover."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class GoogleAccessTokens:
    """OAuth2 access tokens for a service account (JWT-bearer grant), cached until near expiry.

    One refresh at a time: concurrent pushes wait for the same refresh instead of each asking.
    """

    def __init__(
        self,
        account: ServiceAccount,
        client: httpx.AsyncClient,
        *,
        token_uri: str | None = None,
        scope: str = FCM_SCOPE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._account = account
        self._client = client
        self._token_uri = token_uri or account.token_uri
        self._scope = scope
        self._clock = clock
        self._cached: tuple[str, float] | None = None
        self._lock = asyncio.Lock()

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (it was refused); the next ``get`` asks for a new one."""
        if self._cached is not None and self._cached[0] == token:
            self._cached = None

    async def get(self) -> str:
        """A valid access token, from the cache or freshly granted."""
        if (cached := self._fresh()) is not None:
            return cached
        async with self._lock:
            if (cached := self._fresh()) is not None:
                return cached
            token, lifetime = await self._grant()
            self._cached = (token, self._clock() + lifetime)
            return token

    def _fresh(self) -> str | None:
        if self._cached is not None and self._clock() < self._cached[1] - _REFRESH_MARGIN:
            return self._cached[0]
        return None

    def _assertion(self) -> str:
        now = int(self._clock())
        claims = {
            "iss": self._account.client_email,
            "scope": self._scope,
            "aud": self._token_uri,
            "iat": now,
            "exp": now + _ASSERTION_LIFETIME,
        }
        headers = {"kid": self._account.private_key_id} if self._account.private_key_id else None
        try:
            return jwt.encode(claims, self._account.private_key, algorithm="RS256", headers=headers)
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise AccessTokenError("the service account's private key is unusable", retryable=False) from exc

    async def _grant(self) -> tuple[str, float]:
        form = {"grant_type": _JWT_BEARER, "assertion": self._assertion()}
        try:
            response = await self._client.post(self._token_uri, data=form)
        except httpx.HTTPError as exc:
            raise AccessTokenError(
                f"token endpoint unreachable: {type(exc).__name__}", retryable=True
            ) from exc
        body = json_object(response.content)
        if response.status_code != HTTPStatus.OK:
            retryable = response.status_code >= HTTPStatus.INTERNAL_SERVER_ERROR or (
                response.status_code == HTTPStatus.TOO_MANY_REQUESTS
            )
            raise AccessTokenError(
                f"token endpoint answered {response.status_code} {body.get('error', '')}".strip(),
                retryable=retryable,
            )
        token, lifetime = body.get("access_token"), body.get("expires_in", 3600)
        if not isinstance(token, str) or not isinstance(lifetime, int | float):
            raise AccessTokenError("token endpoint answered without an access token", retryable=True)
        return token, float(lifetime)


def _details(error: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """The FCM ``errorCode``s and the ``fieldViolations`` fields of an error's ``details``."""
    codes: set[str] = set()
    fields: set[str] = set()
    details = error.get("details")
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, dict):
            continue
        if isinstance(detail.get("errorCode"), str):
            codes.add(detail["errorCode"])
        violations = detail.get("fieldViolations")
        for violation in violations if isinstance(violations, list) else []:
            if isinstance(violation, dict) and isinstance(violation.get("field"), str):
                fields.add(violation["field"])
    return codes, fields


def classify_error(status: int, body: Mapping[str, Any], retry_after: float | None) -> PushOutcome:
    """Sort an FCM error response into an outcome (401 for our own token is handled before)."""
    error = body.get("error")
    error = error if isinstance(error, dict) else {}
    name = str(error.get("status") or "")
    message = str(error.get("message") or "")
    codes, fields = _details(error)
    reason = next(iter(sorted(codes)), name or f"http_{status}")
    if codes & _REJECTED_CODES or name == "NOT_FOUND" or status == HTTPStatus.NOT_FOUND:
        return PushOutcome.token_rejected(reason, status)
    if name == "INVALID_ARGUMENT" or status == HTTPStatus.BAD_REQUEST:
        about_token = "message.token" in fields or "registration token" in message.lower()
        if about_token:
            return PushOutcome.token_rejected(reason, status)
        return PushOutcome.permanent_failure(reason, status)
    if (
        status in _RETRYABLE_STATUS
        or status >= HTTPStatus.INTERNAL_SERVER_ERROR
        or codes & _RETRYABLE_CODES
        or name in _RETRYABLE_CODES
    ):
        return PushOutcome.retry_later(reason, status, retry_after)
    return PushOutcome.permanent_failure(reason, status)


class FcmProvider(PushProvider):
    """Pushes to Android (and FCM-relayed iOS/web) registration tokens through FCM HTTP v1."""

    def __init__(
        self,
        *,
        account: ServiceAccount,
        base_url: str = DEFAULT_FCM_URL,
        token_uri: str | None = None,
        timeout: float = 10.0,
        verify: ssl.SSLContext | bool = True,
        ttl: int = 86_400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``token_uri`` overrides the service account's own; ``clock`` is wall time."""
        self._account = account
        self._ttl = ttl
        self._client = httpx.AsyncClient(timeout=timeout, verify=verify)
        self._url = f"{base_url.rstrip('/')}/v1/projects/{account.project_id}/messages:send"
        self._tokens = GoogleAccessTokens(account, self._client, token_uri=token_uri, clock=clock)

    @property
    def name(self) -> str:
        """``fcm``."""
        return "fcm"

    def render(self, notification: Notification) -> bytes:
        """The v1 ``{"message": ...}`` body; FCM ``data`` values must be strings."""
        thread = notification.thread_id
        message = {
            "token": notification.token.value,
            "notification": {"title": notification.title, "body": notification.body},
            "data": {key: str(value) for key, value in notification.data.items()},
            "android": {
                "collapse_key": thread,
                "priority": "HIGH",
                "ttl": f"{self._ttl}s",
                "notification": {"tag": thread, "notification_count": notification.badge},
            },
            "apns": {
                "headers": {"apns-collapse-id": thread, "apns-push-type": "alert"},
                "payload": {"aps": {"badge": notification.badge, "thread-id": thread}},
            },
        }
        return orjson.dumps({"message": message})

    async def send(self, notification: Notification) -> PushOutcome:
        """POST ``messages:send`` with a cached access token and classify FCM's answer."""
        if not isinstance(notification.token.value, str) or not notification.token.value:
            return PushOutcome.token_rejected("MalformedRegistrationToken")
        body = self.render(notification)
        if (refused := self.oversized(body)) is not None:
            return refused
        try:
            access_token = await self._tokens.get()
        except AccessTokenError as exc:
            _logger.warning(
                "fcm access token unavailable: message_id=%s error=%s", notification.message_id, exc
            )
            if exc.retryable:
                return PushOutcome.retry_later("access_token_unavailable")
            return PushOutcome.permanent_failure("access_token_refused")
        try:
            response = await self._client.post(
                self._url,
                content=body,
                headers={"Authorization": f"Bearer {access_token}", "Content-Type": "application/json"},
            )
        except httpx.HTTPError as exc:
            return transport_failure("fcm", notification, exc)
        return self._classify(notification, response, access_token)

    def _classify(
        self, notification: Notification, response: httpx.Response, access_token: str
    ) -> PushOutcome:
        status = response.status_code
        if status == HTTPStatus.OK:
            return PushOutcome.delivered(status)
        body = json_object(response.content)
        error = body.get("error")
        codes, _ = _details(error if isinstance(error, dict) else {})
        if status == HTTPStatus.UNAUTHORIZED and "THIRD_PARTY_AUTH_ERROR" not in codes:
            self._tokens.invalidate(access_token)  # revoked or expired early: get a new one
            return PushOutcome.retry_later("UNAUTHENTICATED", status)
        outcome = classify_error(status, body, parse_retry_after(response.headers.get("Retry-After")))
        if outcome.kind is OutcomeKind.PERMANENT_FAILURE:
            _logger.warning(
                "fcm refused a push: message_id=%s token_id=%s status=%d reason=%s",
                notification.message_id,
                notification.token.token_id,
                status,
                outcome.reason,
            )
        return outcome

    async def close(self) -> None:
        """Close the HTTP client's connections."""
        await self._client.aclose()
