"""A push gateway for end-to-end tests: a real HTTP server recording what the webhook provider posts."""

from __future__ import annotations

import io
import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["PushGateway"]

WAIT_S = 20.0


class NotAPushError(Exception):
    """A request the gateway answers 400: the message says why."""


def _read_push(content_length: str | None, body: io.BufferedIOBase) -> tuple[dict[str, Any], str]:
    """The posted push and its token id; ``NotAPushError`` naming what is wrong with it.

    A sender killed mid-request leaves a truncated body: that is a 400 here, as a provider
    answers, not a traceback on the test's output.
    """
    try:
        length = int(content_length or "")
    except ValueError as exc:
        raise NotAPushError(f"no valid Content-Length: {exc}") from exc
    if length < 0:
        raise NotAPushError("a negative Content-Length")
    try:
        push = json.loads(body.read(length))
    except ValueError as exc:  # JSONDecodeError and bad UTF-8 alike
        raise NotAPushError(f"the body is not JSON: {exc}") from exc
    token = push.get("token") if isinstance(push, dict) else None
    token_id = token.get("id") if isinstance(token, dict) else None
    if not isinstance(token_id, str):
        raise NotAPushError("the push has no token.id")
    return push, token_id


class PushGateway:
    """Answers 200, or 410 for the token ids in ``gone``; every push lands in ``received``.

    A request that is not a push (no or a bad ``Content-Length``, a truncated or malformed
    body, no ``token.id``) gets a 400 with the reason and is not recorded.
    """

    def __init__(self) -> None:
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self.gone: set[str] = set()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                try:
                    push, token_id = _read_push(self.headers.get("Content-Length"), self.rfile)
                except NotAPushError as exc:
                    self._answer(400, json.dumps({"detail": str(exc)}).encode())
                    return
                gateway.received.put(push)
                self._answer(410 if token_id in gateway.gone else 200)

            def _answer(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                if body:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
                del format, args

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/push"

    def next_push(self, token_id: str | None = None) -> dict[str, Any]:
        """The next push (for ``token_id``, skipping others)."""
        while True:
            try:
                push = self.received.get(timeout=WAIT_S)
            except queue.Empty:
                raise AssertionError("no push arrived") from None
            if token_id is None or push["token"]["id"] == token_id:
                return push

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
