"""Building the push providers the settings ask for (the embedded default logs pushes)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass

from config import Settings
from notifier.deliveries import SqlDeliveryLog
from notifier.providers.apns import ApnsProvider
from notifier.providers.base import PushProvider
from notifier.providers.fcm import FcmProvider, load_service_account
from notifier.providers.log import LogProvider
from notifier.providers.vapid import VapidKey
from notifier.providers.webhook import WebhookProvider
from notifier.providers.webpush import WebPushProvider

__all__ = ["PushProviders", "build_providers", "prune_deliveries"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushProviders:
    """Native providers by name, the fallback for tokens of unconfigured ones, the VAPID key."""

    native: list[PushProvider]
    fallback: PushProvider
    vapid_public_key: str


def build_providers(settings: Settings) -> PushProviders:
    """APNs and FCM when their credentials are set; Web Push always (its key is generated)."""
    vapid = VapidKey.load_or_create(settings.data_dir / "vapid.pem")
    native: list[PushProvider] = [WebPushProvider(vapid=vapid, subject=settings.webpush_subject)]
    if settings.apns_key_path is not None:
        verify: ssl.SSLContext | bool = True
        if settings.apns_ca_file is not None:
            verify = ssl.create_default_context(cafile=str(settings.apns_ca_file))
        native.append(
            ApnsProvider(
                key=settings.apns_key_path,
                key_id=str(settings.apns_key_id),
                team_id=str(settings.apns_team_id),
                topic=str(settings.apns_topic),
                base_url=settings.apns_url,
                verify=verify,
            )
        )
    if settings.fcm_credentials_path is not None:
        native.append(
            FcmProvider(
                credentials=load_service_account(settings.fcm_credentials_path), base_url=settings.fcm_url
            )
        )
    fallback: PushProvider
    if settings.push_webhook_url:
        secret = settings.push_webhook_secret.get_secret_value() if settings.push_webhook_secret else None
        fallback = WebhookProvider(url=settings.push_webhook_url, secret=secret)
    else:
        fallback = LogProvider()
    logger.info(
        "push providers: %s; others go to %s", ", ".join(p.name for p in native) or "none", fallback.name
    )
    return PushProviders(native, fallback, vapid.public_key)


_PRUNE_EVERY_S = 3600.0
# Push claims are kept long past any redelivery of a message, then forgotten.
_DELIVERY_MEMORY_S = 2 * 86_400.0


async def prune_deliveries(deliveries: SqlDeliveryLog) -> None:
    """Keep the push-delivery table small: claims matter only while a message may be retried."""
    while True:
        try:
            removed = await deliveries.prune(older_than_s=_DELIVERY_MEMORY_S)
        except Exception:  # a failed clean-up must not take the pipeline down; next hour again
            logger.exception("pruning old push deliveries failed")
        else:
            if removed:
                logger.info("forgot %d old push deliveries", removed)
        await asyncio.sleep(_PRUNE_EVERY_S)
