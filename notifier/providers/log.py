"""The embedded default: no push service configured, so say (at INFO) that a push would be sent.

Useful on a laptop and in tests of the whole platform: the pipeline runs end to end and the log
shows who would have been notified. The title (a display name) and the body (message text) are
personal data and stay at DEBUG; INFO carries ids only.
"""

from __future__ import annotations

import logging

import orjson

from notifier.providers.base import Notification, PushOutcome, PushProvider

__all__ = ["LogProvider"]

_logger = logging.getLogger(__name__)


class LogProvider(PushProvider):
    """Logs each push instead of sending it; always ``delivered``."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or _logger

    @property
    def name(self) -> str:
        """``log``."""
        return "log"

    def render(self, notification: Notification) -> bytes:
        """The same JSON the webhook would post, so fitting behaves alike."""
        return orjson.dumps(
            {
                "title": notification.title,
                "body": notification.body,
                "thread_id": notification.thread_id,
                "badge": notification.badge,
                "data": dict(notification.data),
            }
        )

    async def send(self, notification: Notification) -> PushOutcome:
        """Log the push: ids at INFO, the text at DEBUG."""
        self._logger.info(
            "push would be sent (no provider configured): token_id=%s token_provider=%s "
            "message_id=%s conversation_id=%s badge=%d",
            notification.token.token_id,
            notification.token.provider,
            notification.message_id,
            notification.thread_id,
            notification.badge,
        )
        self._logger.debug(
            "push text: message_id=%s title=%r body=%r",
            notification.message_id,
            notification.title,
            notification.body,
        )
        return PushOutcome.delivered()

    async def close(self) -> None:
        """Nothing to release."""
