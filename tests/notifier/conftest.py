"""Real push protocols on 127.0.0.1, each with its provider pointed at it.

APNs (HTTP/2 + TLS), FCM and its OAuth endpoint, a Web Push service and a webhook receiver.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from google.oauth2 import service_account

from hubbub.stores import PushToken
from notifier.deliveries import MemoryDeliveryLog
from notifier.dispatcher import Dispatcher
from notifier.providers.apns import ApnsProvider
from notifier.providers.base import Notification, PushProvider
from notifier.providers.fcm import FcmProvider, load_service_account
from notifier.providers.vapid import VapidKey
from notifier.providers.webhook import WebhookProvider
from notifier.providers.webpush import WebPushProvider
from notifier.retry import RetryPolicy
from tests.notifier.apns_server import ApnsServer
from tests.notifier.clock import FakeClock
from tests.notifier.http_server import serve
from tests.notifier.http_services import FcmService, WebhookReceiver, WebPushService

APNS_KEY_ID = "ABC123DEFG"
APNS_TEAM_ID = "TEAM123456"
APNS_TOPIC = "chat.hubbub.app"
FCM_PROJECT = "hubbub-test"
FCM_EMAIL = "notifier@hubbub-test.iam.gserviceaccount.com"
WEBHOOK_SECRET = "webhook-secret"


def apns_token(name: str) -> str:
    """A hex device token, distinct per name."""
    return name.encode().hex().ljust(64, "0")


def notification(
    token: PushToken, body: str = "hello", *, title: str = "Ann", badge: int = 3
) -> Notification:
    return Notification(
        token=token,
        title=title,
        body=body,
        thread_id="4200",
        badge=badge,
        data={"conversation_id": "4200", "message_id": "987654321012345678", "seq": 17},
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture(scope="session")
def apns_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
async def apns_server(
    ca: trustme.CA, apns_key: ec.EllipticCurvePrivateKey, clock: FakeClock
) -> AsyncIterator[ApnsServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    context.set_alpn_protocols(["h2"])
    server = ApnsServer(
        ssl_context=context,
        public_key=apns_key.public_key(),
        key_id=APNS_KEY_ID,
        team_id=APNS_TEAM_ID,
        topic=APNS_TOPIC,
        clock=clock,
    )
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def apns_p8(apns_key: ec.EllipticCurvePrivateKey) -> bytes:
    """The key as Apple hands it out: an AuthKey_XXXX.p8 file (PKCS#8 PEM)."""
    return apns_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


@pytest.fixture
async def apns(
    apns_server: ApnsServer, apns_p8: bytes, client_tls: ssl.SSLContext, clock: FakeClock
) -> AsyncIterator[ApnsProvider]:
    provider = ApnsProvider(
        key=apns_p8,
        key_id=APNS_KEY_ID,
        team_id=APNS_TEAM_ID,
        topic=APNS_TOPIC,
        base_url=apns_server.url,
        verify=client_tls,
        clock=clock,
    )
    yield provider
    await provider.close()


@pytest.fixture(scope="session")
def fcm_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def fcm_service(fcm_key: rsa.RSAPrivateKey) -> AsyncIterator[FcmService]:
    """On wall time: google-auth dates its assertions with the real clock, and so does Google."""
    service = FcmService(
        public_key=fcm_key.public_key(), client_email=FCM_EMAIL, project=FCM_PROJECT, clock=time.time
    )
    async with serve(service.app) as base_url:
        service.base_url = base_url
        yield service


@pytest.fixture
def fcm_credentials(fcm_key: rsa.RSAPrivateKey, fcm_service: FcmService) -> service_account.Credentials:
    pem = fcm_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    return load_service_account(
        {
            "type": "service_account",
            "project_id": FCM_PROJECT,
            "private_key_id": "key-1",
            "private_key": pem,
            "client_email": FCM_EMAIL,
            "token_uri": fcm_service.token_uri,
        }
    )


@pytest.fixture
async def fcm(
    fcm_service: FcmService, fcm_credentials: service_account.Credentials
) -> AsyncIterator[FcmProvider]:
    provider = FcmProvider(credentials=fcm_credentials, base_url=fcm_service.base_url)
    yield provider
    await provider.close()


@pytest.fixture(scope="session")
def vapid() -> VapidKey:
    return VapidKey.generate()


@pytest.fixture
async def webpush_service(vapid: VapidKey, clock: FakeClock) -> AsyncIterator[WebPushService]:
    service = WebPushService(application_server_key=vapid.public_key, clock=clock)
    async with serve(service.app) as base_url:
        service.base_url = base_url
        yield service


@pytest.fixture
async def webpush(vapid: VapidKey, clock: FakeClock) -> AsyncIterator[WebPushProvider]:
    provider = WebPushProvider(
        vapid=vapid, subject="mailto:ops@hubbub.test", require_https=False, clock=clock
    )
    yield provider
    await provider.close()


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret=WEBHOOK_SECRET)
    async with serve(receiver.app) as base_url:
        receiver.base_url = base_url
        yield receiver


@pytest.fixture
async def webhook(webhook_receiver: WebhookReceiver) -> AsyncIterator[WebhookProvider]:
    provider = WebhookProvider(url=webhook_receiver.url, secret=WEBHOOK_SECRET)
    yield provider
    await provider.close()


class Removed:
    def __init__(self) -> None:
        self.tokens: list[PushToken] = []

    async def __call__(self, token: PushToken) -> None:
        self.tokens.append(token)


@pytest.fixture
def removed() -> Removed:
    return Removed()


@pytest.fixture
def make(clock: FakeClock, removed: Removed) -> Callable[..., Dispatcher]:
    """A dispatcher of these providers on the fake clock, webhook-friendly defaults overridable."""

    def build(*providers: PushProvider, **options: object) -> Dispatcher:
        settings: dict[str, Any] = {
            "remove_token": removed,
            "delivery_log": MemoryDeliveryLog(),
            "coalesce_window": 0.0,
            "send_timeout": 15.0,
            "retry": RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=60.0),
            "clock": clock,
            "sleep": clock.sleep,
            "jitter": lambda: 0.5,
        }
        settings.update(options)
        return Dispatcher(providers=providers, **settings)

    return build
