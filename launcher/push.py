"""Building the push providers the settings ask for (the embedded default logs pushes)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from cluster.kv import ensure_bucket
from config import Settings
from hubbub import subjects
from notifier.deliveries import SqlDeliveryLog
from notifier.providers.apns import ApnsProvider
from notifier.providers.base import PushProvider
from notifier.providers.fcm import FcmProvider, load_service_account
from notifier.providers.log import LogProvider
from notifier.providers.vapid import VapidKey
from notifier.providers.webhook import WebhookProvider
from notifier.providers.webpush import WebPushProvider

__all__ = ["PushProviders", "build_providers", "prune_deliveries", "shared_vapid_key"]

_VAPID_FILE = "vapid.pem"
_VAPID_KEY = "vapid"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushProviders:
    """Native providers by name, the fallback for tokens of unconfigured ones, the VAPID key."""

    native: list[PushProvider]
    fallback: PushProvider
    vapid_public_key: str


def build_providers(settings: Settings, vapid: VapidKey | None = None) -> PushProviders:
    """APNs and FCM when their credentials are set; Web Push always (its key is generated).

    ``vapid``: the key Web Push signs with (a cluster's shared one); default the one in
    ``data_dir``, generated there once.
    """
    vapid = vapid or VapidKey.load_or_create(settings.data_dir / _VAPID_FILE)
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


async def shared_vapid_key(js: JetStreamContext, settings: Settings) -> VapidKey:
    """The cluster's one VAPID key, kept in NATS KV (bucket ``hubbub_cluster``).

    Browsers subscribe with the public key the API hands out, and every notifier must sign with
    its private half, wherever their data directories are. The first process to ask offers the
    key of its ``data_dir`` (so a node that grew into a cluster keeps the key its browsers
    subscribed with); every other process reads that one.
    """
    bucket = await ensure_bucket(js, subjects.CLUSTER_BUCKET, ttl_s=None, replicas=settings.nats_replicas)
    try:
        entry = await bucket.kv.get(_VAPID_KEY)
    except KeyNotFoundError:
        offered = VapidKey.load_or_create(settings.data_dir / _VAPID_FILE)
        try:
            await bucket.kv.create(_VAPID_KEY, offered.private_pem())
        except KeyWrongLastSequenceError:  # another process was first: use its key
            entry = await bucket.kv.get(_VAPID_KEY)
        else:
            logger.info("this cluster's VAPID key is the one of %s", settings.data_dir / _VAPID_FILE)
            return offered
    return VapidKey.from_pem(entry.value or b"")
