"""Users with connected clients (the project's own SDK), and waiting for their events."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from client import HubbubClient
from tests.support.api import PASSWORD, ApiClient

__all__ = [
    "WAIT_S",
    "ClientFactory",
    "all_history",
    "client_factory",
    "direct_conversation",
    "expect_event",
    "no_event_before",
]

WAIT_S = 20.0
ClientFactory = Callable[..., HubbubClient]


@contextmanager
def client_factory(http_url: str) -> Iterator[ClientFactory]:
    """Make logged-in, connected clients; all closed afterwards."""
    made: list[HubbubClient] = []

    def make(
        username: str | None = None,
        *,
        device_id: str | None = None,
        transport: Literal["tcp", "websockets"] = "tcp",
        connect: bool = True,
    ) -> HubbubClient:
        client = HubbubClient(http_url, transport=transport)
        made.append(client)
        if username is None:
            username = ApiClient.unique_username()
            client.sign_up(username, PASSWORD)
        client.login(username, PASSWORD, device_id=device_id)
        if connect:
            client.connect()
        return client

    try:
        yield make
    finally:
        for client in made:
            client.close()


def expect_event(
    client: HubbubClient, kind: str, where: Callable[[dict[str, Any]], bool] = lambda _: True
) -> dict[str, Any]:
    """The next event of ``kind`` matching ``where`` (others of the same wait are skipped)."""
    while True:
        try:
            event = client.events.get(timeout=WAIT_S)
        except queue.Empty:
            raise AssertionError(f"no {kind} event arrived") from None
        if event.get("kind") == kind and where(event):
            return event


def no_event_before(client: HubbubClient, marker: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Every event up to the one matching ``marker``: what arrived before a known later event."""
    seen: list[dict[str, Any]] = []
    while True:
        try:
            event = client.events.get(timeout=WAIT_S)
        except queue.Empty:
            raise AssertionError("the marker event never arrived") from None
        if marker(event):
            return seen
        seen.append(event)


def all_history(client: HubbubClient, conversation_id: str) -> list[dict[str, Any]]:
    """Every message of a conversation, paged through REST in seq order."""
    messages: list[dict[str, Any]] = []
    while True:
        after = messages[-1]["seq"] if messages else 0
        page = client.request(
            "GET", f"/v1/conversations/{conversation_id}/messages", params={"after": after, "limit": 200}
        )
        assert page.status_code == 200, page.text
        messages += page.json()["messages"]
        if not page.json()["has_more"]:
            return messages


def direct_conversation(a: HubbubClient, b: HubbubClient) -> str:
    """The id of the 1:1 conversation of ``a`` and ``b`` (created, or the one they have)."""
    response = a.request("POST", "/v1/conversations", json={"type": "direct", "user_id": b.user_id})
    assert response.status_code in {200, 201}, response.text
    conversation_id: str = response.json()["id"]
    return conversation_id
