"""A webhook provider: POST each push as JSON to one configured URL (``HUBBUB_PUSH_WEBHOOK_URL``).

For deployments that push through their own gateway (a Matrix-style push gateway, a bridge to
a service Hubbub does not speak). The body carries the token, so the gateway can address it;
with a ``secret`` each request is signed (``X-Hubbub-Signature: sha256=<hex HMAC of the
body>``) so the gateway can tell Hubbub's requests from anyone else's.
``Idempotency-Key: <message_id>:<token_id>`` is the same for every attempt of one push, so a
gateway can drop repeats. The gateway answers like
the push services do: 2xx delivered (optionally ``{"rejected": [token]}``, as a Matrix push
gateway answers), 404/410 the token is dead, 429/5xx retry (``Retry-After`` honoured), any other
status a permanent failure.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
from collections.abc import Mapping

import httpx
import orjson

from notifier.providers._http import json_object, status_outcome, transport_failure
from notifier.providers.base import Notification, PushOutcome, PushProvider

__all__ = ["IDEMPOTENCY_HEADER", "SIGNATURE_HEADER", "WebhookProvider", "sign"]


SIGNATURE_HEADER = "X-Hubbub-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookProvider(PushProvider):
    """POSTs ``{"token": {...}, "notification": {...}}`` to ``url``."""

    def __init__(
        self,
        *,
        url: str,
        secret: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        verify: ssl.SSLContext | bool = True,
        name: str = "webhook",
    ) -> None:
        self._url = url
        self._secret = secret
        self._name = name
        self._client = httpx.AsyncClient(
            headers={"Content-Type": "application/json", **(headers or {})},
            timeout=timeout,
            verify=verify,
            follow_redirects=False,
        )

    @property
    def name(self) -> str:
        """``webhook`` unless configured otherwise."""
        return self._name

    def render(self, notification: Notification) -> bytes:
        """The JSON body posted for ``notification``."""
        token = notification.token
        return orjson.dumps(
            {
                "token": {"id": token.token_id, "provider": token.provider, "value": token.value},
                "notification": {
                    "title": notification.title,
                    "body": notification.body,
                    "thread_id": notification.thread_id,
                    "badge": notification.badge,
                    "data": dict(notification.data),
                },
            }
        )

    async def send(self, notification: Notification) -> PushOutcome:
        """POST the push and classify the gateway's answer."""
        body = self.render(notification)
        if (refused := self.oversized(body)) is not None:
            return refused
        # The same key for every attempt, and for the rare repeat after a notifier died between the
        # gateway's answer and the delivery log's record: a gateway that honours it pushes once.
        headers = {IDEMPOTENCY_HEADER: f"{notification.message_id}:{notification.token.token_id}"}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return transport_failure("webhook", notification, exc)
        return self._classify(notification, response)

    def _classify(self, notification: Notification, response: httpx.Response) -> PushOutcome:
        if response.is_success:
            # A gateway may accept the request yet name tokens it knows are dead (Matrix style).
            rejected = json_object(response.content).get("rejected")
            token = notification.token
            if isinstance(rejected, list) and (token.token_id in rejected or token.value in rejected):
                return PushOutcome.token_rejected("rejected", response.status_code)
        return status_outcome("webhook", notification, response)

    async def close(self) -> None:
        """Close the HTTP client's connections."""
        await self._client.aclose()
