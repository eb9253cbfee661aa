"""Friends over REST: request, accept, decline, remove, list, and the events they send."""

from __future__ import annotations

from tests.support.chat import ClientFactory, expect_event


def test_request_accept_list_and_remove(clients: ClientFactory) -> None:
    alice, bob = clients(connect=False), clients()
    asked = alice.request("POST", "/v1/friends/requests", json={"user_id": bob.user_id})
    assert (asked.status_code, asked.json()) == (201, {"status": "pending"})
    assert expect_event(bob, "friend")["action"] == "requested"
    pending = bob.request("GET", "/v1/friends").json()
    assert [user["id"] for user in pending["incoming"]] == [alice.user_id]
    accepted = bob.request("POST", f"/v1/friends/requests/{alice.user_id}/accept")
    assert accepted.json() == {"status": "friends"}
    assert [user["id"] for user in alice.request("GET", "/v1/friends").json()["friends"]] == [bob.user_id]
    assert alice.request("DELETE", f"/v1/friends/{bob.user_id}").status_code == 204
    assert bob.request("GET", "/v1/friends").json() == {"friends": [], "incoming": [], "outgoing": []}


def test_crossed_requests_make_friends_and_declines_forget(clients: ClientFactory) -> None:
    alice, bob, carol = clients(connect=False), clients(connect=False), clients(connect=False)
    alice.request("POST", "/v1/friends/requests", json={"user_id": bob.user_id})
    crossed = bob.request("POST", "/v1/friends/requests", json={"user_id": alice.user_id})
    assert (crossed.status_code, crossed.json()["status"]) == (200, "friends")
    carol.request("POST", "/v1/friends/requests", json={"user_id": alice.user_id})
    assert alice.request("POST", f"/v1/friends/requests/{carol.user_id}/decline").status_code == 204
    assert alice.request("POST", f"/v1/friends/requests/{carol.user_id}/accept").status_code == 404


def test_bad_friend_requests(clients: ClientFactory) -> None:
    alice = clients(connect=False)
    assert alice.request("POST", "/v1/friends/requests", json={"user_id": alice.user_id}).status_code == 422
    assert alice.request("POST", "/v1/friends/requests", json={"user_id": "12345"}).status_code == 404
