"""A push gateway for end-to-end tests: a real HTTP server recording what the webhook provider posts."""

from __future__ import annotations

import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["PushGateway"]

WAIT_S = 20.0


class PushGateway:
    """Answers 200, or 410 for the token ids in ``gone``; every push lands in ``received``."""

    def __init__(self) -> None:
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self.gone: set[str] = set()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                gateway.received.put(body)
                status = 410 if body["token"]["id"] in gateway.gone else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

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
