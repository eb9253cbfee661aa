from __future__ import annotations

from pathlib import Path

import orjson
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from config import Settings
from hubbub.stores import PushToken
from launcher.push import build_providers
from notifier.providers.base import OutcomeKind
from tests.notifier.conftest import FCM_EMAIL, FCM_PROJECT, notification
from tests.notifier.http_services import FcmService


async def test_the_configured_providers_reach_their_services(
    tmp_path: Path, fcm_key: rsa.RSAPrivateKey, fcm_service: FcmService
) -> None:
    """From the settings as an operator writes them: a service-account file and the FCM URL."""
    pem = fcm_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    key_file = tmp_path / "service-account.json"
    key_file.write_bytes(
        orjson.dumps(
            {
                "type": "service_account",
                "project_id": FCM_PROJECT,
                "private_key": pem,
                "client_email": FCM_EMAIL,
                "token_uri": fcm_service.token_uri,
            }
        )
    )
    settings = Settings(
        data_dir=tmp_path / "data", fcm_credentials_path=key_file, fcm_url=fcm_service.base_url
    )
    providers, restarted = build_providers(settings), build_providers(settings)
    try:
        by_name = {provider.name: provider for provider in providers.native}
        assert set(by_name) == {"webpush", "fcm"}
        outcome = await by_name["fcm"].send(notification(PushToken("t-1", "fcm", "device-1")))
        assert outcome.kind is OutcomeKind.DELIVERED
        assert fcm_service.messages.get_nowait()["token"] == "device-1"
        assert restarted.vapid_public_key == providers.vapid_public_key  # the key file outlives a restart
    finally:
        for built in (providers, restarted):
            for provider in [*built.native, built.fallback]:
                await provider.close()
