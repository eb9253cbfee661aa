"""A local APNs: HTTP/2 over TLS (ALPN h2), checking what Apple checks, answering as scripted.

It verifies the ES256 provider token against the .p8 key's public half (kid, iss, age), the
headers (apns-topic, apns-push-type, apns-collapse-id) and the 4 KB payload limit, then answers
per device token from ``script``: a list of replies used in turn (the last one repeats), or
``HANG`` to never answer (until the server stops).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec

HANG: Final = "hang"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class ApnsRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    alpn: str | None
    claims: dict[str, Any] = field(default_factory=dict)

    @property
    def device_token(self) -> str:
        return self.path.removeprefix("/3/device/")

    def json(self) -> dict[str, Any]:
        payload: dict[str, Any] = orjson.loads(self.body)
        return payload


class ApnsServer:
    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        public_key: ec.EllipticCurvePublicKey,
        key_id: str,
        team_id: str,
        topic: str,
        clock: Callable[[], float],
    ) -> None:
        self._ssl = ssl_context
        self._public_key = public_key
        self._key_id = key_id
        self._team_id = team_id
        self._topic = topic
        self._clock = clock
        self.script: dict[str, list[Reply] | str] = {}
        self.requests: asyncio.Queue[ApnsRequest] = asyncio.Queue()
        self.connections = 0
        self._release = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._ssl)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"https://127.0.0.1:{port}"

    async def stop(self) -> None:
        self._release.set()
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        ssl_object = writer.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        handlers: dict[int, asyncio.Task[None]] = {}
        try:
            while data := await reader.read(65535):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived) and event.stream_id is not None:
                        headers = {str(k): str(v) for k, v in event.headers or []}
                        streams[event.stream_id] = (headers, bytearray())
                    elif isinstance(event, h2.events.DataReceived) and event.stream_id is not None:
                        streams[event.stream_id][1].extend(event.data or b"")
                        conn.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id is not None:
                        headers, body = streams.pop(event.stream_id)
                        request = ApnsRequest(headers[":path"], headers, bytes(body), alpn)
                        task = asyncio.create_task(self._respond(conn, writer, event.stream_id, request))
                        handlers[event.stream_id] = task
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                    elif isinstance(event, h2.events.StreamReset) and event.stream_id in handlers:
                        handlers.pop(event.stream_id).cancel()
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, ssl.SSLError, h2.exceptions.ProtocolError):
            pass
        finally:
            for task in handlers.values():
                task.cancel()
            self._writers.discard(writer)
            writer.close()

    async def _respond(
        self,
        conn: h2.connection.H2Connection,
        writer: asyncio.StreamWriter,
        stream_id: int,
        request: ApnsRequest,
    ) -> None:
        reply = self._check(request)
        self.requests.put_nowait(request)
        if reply is None:
            await self._release.wait()
            return
        headers = [(":status", str(reply.status)), ("apns-id", "00000000-0000-0000-0000-000000000001")]
        headers.extend(reply.headers)
        body = orjson.dumps({"reason": reply.reason}) if reply.reason else b""
        with contextlib.suppress(
            h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, ConnectionError
        ):
            conn.send_headers(stream_id, headers, end_stream=not body)
            if body:
                conn.send_data(stream_id, body, end_stream=True)
            writer.write(conn.data_to_send())
            await writer.drain()

    def _check(self, request: ApnsRequest) -> Reply | None:  # noqa: C901, PLR0911 - one answer per APNs error
        """What Apple would answer; ``None`` to hang."""
        headers = request.headers
        if headers.get(":method") != "POST" or not request.path.startswith("/3/device/"):
            return Reply(405, "MethodNotAllowed")
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme != "bearer":
            return Reply(403, "MissingProviderToken")
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, self._public_key, algorithms=["ES256"], options={"verify_iat": False})
        except jwt.PyJWTError:
            return Reply(403, "InvalidProviderToken")
        if header.get("kid") != self._key_id or claims.get("iss") != self._team_id:
            return Reply(403, "InvalidProviderToken")
        if not self._clock() - 3600 <= claims["iat"] <= self._clock() + 60:
            return Reply(403, "ExpiredProviderToken")
        request.claims = claims
        if headers.get("apns-topic") != self._topic:
            return Reply(400, "BadTopic")
        if headers.get("apns-push-type") != "alert":
            return Reply(400, "InvalidPushType")
        collapse_id = headers.get("apns-collapse-id", "")
        if not collapse_id or len(collapse_id.encode()) > 64:
            return Reply(400, "BadCollapseId")
        if len(request.body) > 4096:
            return Reply(413, "PayloadTooLarge")
        if not isinstance(orjson.loads(request.body).get("aps"), dict):
            return Reply(400, "PayloadEmpty")
        script = self.script.get(request.device_token, [Reply()])
        if script == HANG:
            return None
        assert isinstance(script, list)
        return script.pop(0) if len(script) > 1 else script[0]
