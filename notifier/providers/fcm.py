"""FCM: Firebase Cloud Messaging's HTTP v1 API, authenticated with a service account.

The OAuth2 access token is ``google-auth``'s: its service-account credentials sign the
JWT-bearer assertion (RFC 7523), exchange it at the account's ``token_uri``, parse the expiry,
decide when the token is stale (3 min 45 s before expiry), retry a token endpoint that answers
500/503/504/408/429 (three attempts with backoff) and say whether a failure is retryable.
Its refresh is synchronous (there is no public asyncio service-account credential), so it runs
in a worker thread, over urllib3 with a bounded timeout: one refresh at a time, shared by every
push that needs it and shielded from their cancellation, so a push that times out does not leave
a second refresh running beside the first. The refresh happens about once an hour.

The send is one ``POST {base}/v1/projects/{project}/messages:send`` on httpx, as async as the
other providers. Google ships no asyncio FCM client: ``firebase-admin``'s ``messaging.send`` and
``pyfcm`` 2.x are synchronous (requests; pyfcm also sleeps on ``Retry-After`` itself), and
neither sorts FCM's answers into token-rejected / retry-later / permanent, which is most of this
module. The FCM URL is configurable (``HUBBUB_FCM_URL``), the token URL is the service account's.

Outcomes: 200 delivered; ``UNREGISTERED``/``NOT_FOUND``, ``SENDER_ID_MISMATCH`` and an
``INVALID_ARGUMENT`` that is about the token (a ``message.token`` field violation, or FCM's
"not a valid FCM registration token") reject the token; 429/500/503 (``QUOTA_EXCEEDED``,
``INTERNAL``, ``UNAVAILABLE``) and any 5xx retry, honouring ``Retry-After``; a 401 for our access
token drops it and retries; anything else (a payload FCM refuses, ``THIRD_PARTY_AUTH_ERROR``) is
permanent. No access token: retry later, unless the token endpoint refused the account itself
(an OAuth ``error`` such as ``invalid_grant`` that google-auth deems final), which is permanent.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import orjson
import urllib3
from google.auth import exceptions as google_auth_errors
from google.auth.transport.urllib3 import Request as Urllib3Request
from google.oauth2 import service_account

from notifier.providers._http import json_object, parse_retry_after, transport_failure
from notifier.providers.base import Notification, OutcomeKind, PushOutcome, PushProvider

__all__ = [
    "DEFAULT_FCM_URL",
    "FCM_SCOPE",
    "AccessTokenError",
    "FcmProvider",
    "GoogleAccessTokens",
    "classify_error",
    "load_service_account",
]

_logger = logging.getLogger(__name__)

DEFAULT_FCM_URL = "https://fcm.googleapis.com"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
_RETRYABLE_STATUS = frozenset({HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.INTERNAL_SERVER_ERROR})
_REJECTED_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
_RETRYABLE_CODES = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"})


def load_service_account(source: Mapping[str, Any] | str | Path) -> service_account.Credentials:
    """FCM-scoped credentials from a service-account JSON key (parsed, or its file's path).

    Raises ``ValueError`` saying what is missing or unusable (google-auth's own checks, plus the
    ``project_id`` that FCM's URL needs).
    """
    if isinstance(source, Mapping):
        info = dict(source)
    else:
        try:
            info = orjson.loads(Path(source).read_bytes())
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{source} is not a service-account JSON file") from exc
        if not isinstance(info, dict):
            raise ValueError(f"{source} is not a service-account JSON object")  # noqa: TRY004
    if not info.get("project_id"):
        raise ValueError("the service account JSON lacks project_id")
    try:
        # google-auth's annotations are partial: these few calls are untyped.
        credentials: service_account.Credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=[FCM_SCOPE]
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"the service account JSON is unusable: {exc}") from exc
    return credentials


class AccessTokenError(Exception):
    """No access token could be had; ``retryable`` when the token endpoint may recover."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def _token_error(exc: google_auth_errors.GoogleAuthError) -> AccessTokenError:
    """Final only when the endpoint answered an OAuth error google-auth does not retry.

    A transport failure, or an answer that is no OAuth error (a 502 page from a proxy), says
    nothing about the account: retry later rather than drop the push.
    """
    body = exc.args[1] if len(exc.args) > 1 else None
    refused = (
        isinstance(exc, google_auth_errors.RefreshError)
        and not exc.retryable
        and isinstance(body, Mapping)
        and "error" in body
    )
    reason = body.get("error") if isinstance(body, Mapping) else type(exc).__name__
    return AccessTokenError(f"token endpoint failed: {reason}", retryable=not refused)


class GoogleAccessTokens:
    """google-auth's cached access token, refreshed in a worker thread, one refresh at a time."""

    def __init__(self, credentials: service_account.Credentials, *, timeout: float = 10.0) -> None:
        self._credentials = credentials
        # retries=False: google-auth retries the token endpoint itself; urllib3 follows no redirect.
        http = urllib3.PoolManager(timeout=urllib3.Timeout(total=timeout), retries=False)
        self._request = Urllib3Request(http)  # type: ignore[no-untyped-call]
        self._refresh: asyncio.Future[None] | None = None

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (it was refused); the next ``get`` asks for a new one."""
        if self._credentials.token == token:
            self._credentials.token = None

    async def get(self) -> str:
        """A valid access token, from google-auth's cache or freshly granted."""
        if not self._credentials.valid:
            if self._refresh is None:
                self._refresh = asyncio.ensure_future(asyncio.to_thread(self._refresh_now))
                self._refresh.add_done_callback(self._refreshed)
            await asyncio.shield(self._refresh)
        token = self._credentials.token
        if not isinstance(token, str):
            raise AccessTokenError("the refresh left no access token", retryable=True)
        return token

    def _refresh_now(self) -> None:
        try:
            self._credentials.refresh(self._request)  # type: ignore[no-untyped-call]
        except google_auth_errors.GoogleAuthError as exc:
            raise _token_error(exc) from exc

    def _refreshed(self, refresh: asyncio.Future[None]) -> None:
        self._refresh = None
        if not refresh.cancelled():
            refresh.exception()  # retrieved here too, in case every waiter was cancelled

    def close(self) -> None:
        """Close the token endpoint's connections."""
        self._request.http.clear()


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
        credentials: service_account.Credentials,
        base_url: str = DEFAULT_FCM_URL,
        timeout: float = 10.0,
        verify: ssl.SSLContext | bool = True,
        ttl: int = 86_400,
    ) -> None:
        """``credentials`` from ``load_service_account`` (their project is FCM's project)."""
        self._ttl = ttl
        self._client = httpx.AsyncClient(timeout=timeout, verify=verify)
        self._url = f"{base_url.rstrip('/')}/v1/projects/{credentials.project_id}/messages:send"
        self._tokens = GoogleAccessTokens(credentials, timeout=timeout)

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
        """Close the HTTP clients' connections."""
        self._tokens.close()
        await self._client.aclose()
