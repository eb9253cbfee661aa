"""The tests' push gateway (tests/support/webhook.py): a request that is not a push is a clean 400."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.webhook import PushGateway


@pytest.fixture
def gateway() -> Iterator[PushGateway]:
    running = PushGateway()
    yield running
    running.close()


def _raw_post(url: str, head_lines: list[str], body: bytes) -> bytes:
    """Send a POST by hand (``body`` may be shorter than it claims), then half-close; the answer."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        head = "\r\n".join([f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}", *head_lines, "", ""])
        sock.sendall(head.encode() + body)
        sock.shutdown(socket.SHUT_WR)  # the sender is gone: the rest of the body never comes
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer


def test_a_push_is_recorded_and_a_gone_token_answered_410(gateway: PushGateway) -> None:
    gateway.gone.add("old")
    assert httpx.post(gateway.url, json={"token": {"id": "new"}}, timeout=10).status_code == 200
    assert httpx.post(gateway.url, json={"token": {"id": "old"}}, timeout=10).status_code == 410
    assert [gateway.next_push()["token"]["id"] for _ in range(2)] == ["new", "old"]


def test_a_truncated_body_is_answered_400_and_not_recorded(gateway: PushGateway) -> None:
    answer = _raw_post(gateway.url, ["Content-Length: 100", "Content-Type: application/json"], b'{"tok')
    assert answer.startswith(b"HTTP/1.0 400"), answer
    assert b"not JSON" in answer
    assert gateway.received.empty()


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({}, b"[1, 2]", b"no token.id"),
        ({}, b'{"token": {"id": 7}}', b"no token.id"),
        ({"Content-Length": "-1"}, b"", b"negative Content-Length"),
        ({"Content-Length": "many"}, b"", b"no valid Content-Length"),
    ],
)
def test_a_request_that_is_not_a_push_is_answered_400_with_the_reason(
    gateway: PushGateway, headers: dict[str, str], body: bytes, reason: bytes
) -> None:
    lines = [f"{name}: {value}" for name, value in ({"Content-Length": str(len(body))} | headers).items()]
    answer = _raw_post(gateway.url, lines, body)
    assert answer.startswith(b"HTTP/1.0 400"), answer
    assert reason in answer
    assert gateway.received.empty()
