"""Building the push providers the settings ask for (the embedded default logs pushes)."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

from config import Settings
from notifier.providers.apns import ApnsProvider
from notifier.providers.base import PushProvider
from notifier.providers.fcm import FcmProvider, load_service_account
from notifier.providers.log import LogProvider
from notifier.providers.vapid import VapidKey
from notifier.providers.webhook import WebhookProvider
from notifier.providers.webpush import WebPushProvider

__all__ = ["PushProviders", "build_providers"]

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
