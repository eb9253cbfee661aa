"""Local FCM (v1 API and its OAuth token endpoint), Web Push service and webhook receiver.

Each speaks the real protocol over HTTP and checks what the real service checks: FCM verifies
the service account's RS256 assertion and the bearer token; the push service verifies the VAPID
JWT against the ``k`` key (with PyJWT, not the signer under test) and decrypts the aes128gcm body
with the subscription's private key (with ``rfc8291``, not the encryption under test).
Replies are scripted per token: a list used in turn, the last one repeating.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from notifier.providers.ece import b64url_decode, b64url_encode
from notifier.providers.fcm import FCM_SCOPE
from tests.notifier import rfc8291

# The audience Google's token endpoint expects in a service account's assertion, whatever URL
# the assertion is posted to.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def _next(script: dict[str, list[Reply]], key: str, default: Reply) -> Reply:
    replies = script.get(key)
    if not replies:
        return default
    return replies.pop(0) if len(replies) > 1 else replies[0]


def _respond(reply: Reply) -> Response:
    content = orjson.dumps(reply.body) if reply.body is not None else b""
    return Response(content, reply.status, dict(reply.headers), media_type="application/json")


def fcm_error(
    code: int, status: str, message: str = "", error_code: str | None = None, field_name: str | None = None
) -> Reply:
    details: list[dict[str, Any]] = []
    if error_code:
        details.append(
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code}
        )
    if field_name:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field_name, "description": "Invalid value"}],
            }
        )
    return Reply(code, {"error": {"code": code, "message": message, "status": status, "details": details}})


class FcmService:
    def __init__(
        self, *, public_key: rsa.RSAPublicKey, client_email: str, project: str, clock: Callable[[], float]
    ) -> None:
        self._public_key = public_key
        self._client_email = client_email
        self._project = project
        self._clock = clock
        self.base_url = ""
        self.script: dict[str, list[Reply]] = {}
        self.token_script: list[Reply] = []
        self.token_lifetime = 3599
        self.token_gate: asyncio.Event | None = None  # when set, grants wait for it
        self.token_asked = asyncio.Event()
        self.token_requests = 0
        self.grants = 0
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._issued: set[str] = set()
        self._counter = itertools.count(1)
        self.app = Starlette(
            routes=[
                Route("/token", self._token, methods=["POST"]),
                Route("/v1/projects/{project}/messages:send", self._send, methods=["POST"]),
            ]
        )

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def revoke_all(self) -> None:
        self._issued.clear()

    async def _token(self, request: Request) -> Response:
        form = {key: values[0] for key, values in parse_qs((await request.body()).decode()).items()}
        self.token_requests += 1
        self.token_asked.set()
        if self.token_gate is not None:
            await self.token_gate.wait()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return _respond(Reply(400, {"error": "unsupported_grant_type"}))
        try:
            claims = jwt.decode(
                str(form.get("assertion")),
                self._public_key,
                algorithms=["RS256"],
                audience=GOOGLE_TOKEN_AUDIENCE,
                options={"verify_iat": False, "verify_exp": False},
            )
        except jwt.PyJWTError:
            return _respond(Reply(400, {"error": "invalid_grant"}))
        now = self._clock()
        if claims.get("iss") != self._client_email or claims.get("scope") != FCM_SCOPE:
            return _respond(Reply(400, {"error": "invalid_grant"}))
        if not claims["iat"] - 60 <= now <= claims["exp"] or claims["exp"] - claims["iat"] > 3600:
            return _respond(Reply(400, {"error": "invalid_grant", "error_description": "bad iat/exp"}))
        if self.token_script:
            reply = self.token_script.pop(0)
            if reply.status != 200:
                return _respond(reply)
        self.grants += 1
        token = f"ya29.test-{next(self._counter)}"
        self._issued.add(token)
        return _respond(
            Reply(200, {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"})
        )

    async def _send(self, request: Request) -> Response:
        if request.path_params["project"] != self._project:
            return _respond(fcm_error(403, "PERMISSION_DENIED"))
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or token not in self._issued:
            return _respond(
                fcm_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
            )
        body = await request.body()
        if len(body) > 4096:
            return _respond(fcm_error(400, "INVALID_ARGUMENT", "Message is too big", "INVALID_ARGUMENT"))
        message = orjson.loads(body)["message"]
        data = message.get("data", {})
        if not all(isinstance(value, str) for value in data.values()):
            return _respond(
                fcm_error(400, "INVALID_ARGUMENT", "data values must be strings", "INVALID_ARGUMENT")
            )
        self.messages.put_nowait(message)
        reply = _next(
            self.script, message["token"], Reply(200, {"name": f"projects/{self._project}/messages/1"})
        )
        return _respond(reply)


@dataclass
class Subscriber:
    """A browser's side of a subscription: the private key that decrypts what it is sent."""

    subscription: dict[str, Any]
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes


@dataclass
class ReceivedPush:
    subscription_id: str
    headers: dict[str, str]
    claims: dict[str, Any]
    plaintext: bytes

    def json(self) -> dict[str, Any]:
        payload: dict[str, Any] = orjson.loads(self.plaintext)
        return payload


class WebPushService:
    def __init__(self, *, application_server_key: str, clock: Callable[[], float]) -> None:
        self._application_server_key = application_server_key
        self._clock = clock
        self.base_url = ""
        self.script: dict[str, list[Reply]] = {}
        self.received: asyncio.Queue[ReceivedPush] = asyncio.Queue()
        self._subscribers: dict[str, Subscriber] = {}
        self._ids = itertools.count(1)
        self.app = Starlette(routes=[Route("/push/{sid}", self._push, methods=["POST"])])

    def subscribe(self) -> dict[str, Any]:
        sid = str(next(self._ids))
        key = ec.generate_private_key(ec.SECP256R1())
        auth = hashlib.sha256(sid.encode()).digest()[:16]
        public = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        subscription = {
            "endpoint": f"{self.base_url}/push/{sid}",
            "expirationTime": None,
            "keys": {"p256dh": b64url_encode(public), "auth": b64url_encode(auth)},
        }
        self._subscribers[sid] = Subscriber(subscription, key, auth)
        return subscription

    async def _push(self, request: Request) -> Response:  # noqa: PLR0911 - one answer per check
        sid = request.path_params["sid"]
        subscriber = self._subscribers.get(sid)
        if subscriber is None:
            return Response(status_code=404)
        headers = {k.lower(): v for k, v in request.headers.items()}
        if headers.get("content-encoding") != "aes128gcm" or "ttl" not in headers:
            return Response(status_code=400)
        fields = dict(
            part.strip().split("=", 1)
            for part in headers.get("authorization", "").removeprefix("vapid ").split(",")
        )
        if fields.get("k") != self._application_server_key:
            return Response(status_code=403)
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(fields["k"]))
        try:
            claims = jwt.decode(
                fields["t"],
                public,
                algorithms=["ES256"],
                audience=self.base_url,
                options={"verify_exp": False},
            )
        except jwt.PyJWTError:
            return Response(status_code=403)
        if not self._clock() < claims["exp"] <= self._clock() + 24 * 3600 or not claims.get("sub"):
            return Response(status_code=403)
        body = await request.body()
        if len(body) > 4096:
            return Response(status_code=413)
        plaintext = rfc8291.decrypt(body, subscriber.private_key, subscriber.auth)
        self.received.put_nowait(ReceivedPush(sid, headers, claims, plaintext))
        return _respond(_next(self.script, sid, Reply(201)))


@dataclass
class WebhookCall:
    body: dict[str, Any]
    signature: str | None
    idempotency_key: str | None = None


class WebhookReceiver:
    def __init__(self, secret: str | None = None) -> None:
        self._secret = secret
        self.base_url = ""
        self.script: dict[str, list[Reply]] = {}
        self.calls: asyncio.Queue[WebhookCall] = asyncio.Queue()
        self.app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])

    @property
    def url(self) -> str:
        return f"{self.base_url}/hook"

    async def _hook(self, request: Request) -> Response:
        raw = await request.body()
        signature = request.headers.get("x-hubbub-signature")
        if self._secret is not None:
            expected = "sha256=" + hmac.new(self._secret.encode(), raw, hashlib.sha256).hexdigest()
            if signature is None or not hmac.compare_digest(signature, expected):
                return Response(status_code=401)
        body = orjson.loads(raw)
        self.calls.put_nowait(WebhookCall(body, signature, request.headers.get("idempotency-key")))
        return _respond(_next(self.script, str(body["token"]["value"]), Reply(200, {"rejected": []})))
