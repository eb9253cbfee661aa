"""Messages end to end: real platform, real MQTT clients (the project's SDK), real history."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from client import HubbubClient
from hubbub import topics
from tests.support.api import ApiClient
from tests.support.chat import (
    ClientFactory,
    direct_conversation,
    expect_event,
    no_event_before,
)


def _group(creator: HubbubClient, members: list[HubbubClient], title: str = "team") -> str:
    body = {"type": "group", "title": title, "member_ids": [member.user_id for member in members]}
    response = creator.request("POST", "/v1/conversations", json=body)
    assert response.status_code == 201, response.text
    conversation_id: str = response.json()["id"]
    return conversation_id


def _history(client: HubbubClient, conversation_id: str, **params: int) -> dict[str, Any]:
    response = client.request("GET", f"/v1/conversations/{conversation_id}/messages", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def _is_message(conversation_id: str, text: str) -> Any:  # noqa: ANN401 - a predicate
    return lambda event: event.get("conversation_id") == conversation_id and event.get("text") == text


def test_one_to_one_both_ways(clients: ClientFactory) -> None:
    alice, bob = clients(), clients()
    cid = direct_conversation(alice, bob)
    alice.send(cid, "hi bob")
    got = expect_event(bob, "message", _is_message(cid, "hi bob"))
    assert got["sender_id"] == alice.user_id
    assert got["seq"] == 1
    assert isinstance(got["message_id"], str)
    ack = expect_event(alice, "ack")
    assert (ack["cmid"], ack["message_id"], ack["seq"]) == (got["cmid"], got["message_id"], 1)
    bob.send(cid, "hello alice")
    assert expect_event(alice, "message", _is_message(cid, "hello alice"))["seq"] == 2
    assert [m["text"] for m in _history(alice, cid)["messages"]] == ["hi bob", "hello alice"]


def test_the_direct_conversation_of_a_pair_is_one(clients: ClientFactory) -> None:
    alice, bob = clients(connect=False), clients(connect=False)
    first = alice.request("POST", "/v1/conversations", json={"type": "direct", "user_id": bob.user_id})
    second = bob.request("POST", "/v1/conversations", json={"type": "direct", "user_id": alice.user_id})
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]


def test_every_device_of_a_user_sees_everything_its_own_sends_included(clients: ClientFactory) -> None:
    alice = clients()
    phone, laptop = clients(alice_name := _username(alice)), clients(alice_name)
    bob = clients()
    cid = direct_conversation(alice, bob)
    phone.send(cid, "from my phone")
    for device in (alice, laptop, bob):
        assert expect_event(device, "message", _is_message(cid, "from my phone"))["seq"] == 1
    bob.send(cid, "after")  # a later event on every inbox: all before it has arrived
    after = _is_message(cid, "after")
    phone_events = no_event_before(phone, after)
    # The sending device is answered with the ack alone (no copy of what it sent), and only it.
    assert [(e["kind"], e["seq"]) for e in phone_events if e["kind"] in {"message", "ack"}] == [("ack", 1)]
    assert [m["text"] for m in phone.timelines[cid].ordered()] == ["from my phone", "after"]
    for other in (alice, laptop):
        assert not [e for e in no_event_before(other, after) if e["kind"] == "ack"]


def _username(client: HubbubClient) -> str:
    response = client.request("GET", "/v1/users/me")
    username: str = response.json()["username"]
    return username


def test_a_group_of_100_each_member_gets_every_message_once_in_order(clients: ClientFactory) -> None:
    members = [clients() for _ in range(100)]
    cid = _group(members[0], members[1:])
    senders = members[:5]
    for index, sender in enumerate(senders):
        sender.send(cid, f"message {index}")
        assert sender.outbox.emptied.wait(20)  # acked: the order of sends is the order of seqs
    for member in members:
        expected = [i for i, sender in enumerate(senders) if sender is not member]  # not its own
        received = [
            expect_event(member, "message", lambda e: e.get("conversation_id") == cid) for _ in expected
        ]
        assert [event["text"] for event in received] == [f"message {i}" for i in expected]
        assert [event["seq"] for event in received] == [i + 1 for i in expected]
        assert [m["seq"] for m in member.timelines[cid].ordered()] == [1, 2, 3, 4, 5]
    last = members[-1]
    assert not [e for e in _drain(last) if e.get("kind") == "message"]


def _drain(client: HubbubClient) -> list[dict[str, Any]]:
    """Events already queued (the marker round trip below makes sure nothing is in flight)."""
    marker = f"marker-{client.device_id}"
    client.request("PATCH", "/v1/users/me", json={"display_name": marker})
    events = []
    while not client.events.empty():
        events.append(client.events.get_nowait())
    return events


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"not json", "invalid"),
        (b"[1, 2]", "invalid"),
        (orjson.dumps({"cmid": 5, "text": "hi"}), "invalid"),
        (orjson.dumps({"cmid": "c", "text": 5}), "invalid"),
        (orjson.dumps({"cmid": "c", "text": "hi", "image": "x"}), "invalid"),
        (orjson.dumps({"cmid": "c", "text": "   "}), "empty"),
        (orjson.dumps({"cmid": "c", "text": "x" * 100_001}), "too_long"),
        (orjson.dumps({"cmid": "c", "text": "🎉" * 100_001}), "too_long"),
    ],
)
def test_bad_payloads_get_an_error_event_and_the_connection_stays(
    clients: ClientFactory, payload: bytes, code: str
) -> None:
    alice, bob = clients(), clients()
    cid = direct_conversation(alice, bob)
    assert alice._mqtt is not None
    alice._mqtt.publish(topics.conversation_send(int(cid)), payload, qos=1).wait_for_publish(10)
    error = expect_event(alice, "error")
    assert error["code"] == code
    assert error["conversation_id"] == cid
    alice.send(cid, "still here")
    assert expect_event(bob, "message", _is_message(cid, "still here"))["seq"] == 1


def test_the_longest_message_passes_whole(clients: ClientFactory) -> None:
    alice, bob = clients(), clients()
    cid = direct_conversation(alice, bob)
    text = "🎉" * 99_999 + "!"
    alice.send(cid, text)
    assert expect_event(bob, "message", lambda e: e.get("conversation_id") == cid)["text"] == text
    assert _history(bob, cid)["messages"][0]["text"] == text


def test_a_non_members_publish_is_refused_and_reaches_nobody(clients: ClientFactory) -> None:
    alice, bob, mallory = clients(), clients(), clients()
    cid = direct_conversation(alice, bob)
    mallory.send(cid, "let me in")
    assert expect_event(mallory, "error")["code"] == "not_member"
    alice.send(cid, "just us")
    before = no_event_before(bob, _is_message(cid, "just us"))
    assert not [event for event in before if event.get("kind") == "message"]
    assert [m["text"] for m in _history(alice, cid)["messages"]] == ["just us"]


def test_an_unknown_conversation_is_not_member(clients: ClientFactory) -> None:
    alice = clients()
    alice.send("999999999", "anyone?")
    assert expect_event(alice, "error")["code"] == "not_member"


def test_a_resent_cmid_is_stored_once_and_answered_with_the_original_ack(clients: ClientFactory) -> None:
    alice, bob = clients(), clients()
    cid = direct_conversation(alice, bob)
    first = alice.send(cid, "only once")
    ack = expect_event(alice, "ack")
    alice.send(cid, "only once", cmid=first.cmid)
    again = expect_event(alice, "ack")
    assert (again["message_id"], again["seq"]) == (ack["message_id"], ack["seq"])
    assert len(_history(alice, cid)["messages"]) == 1


def test_rest_sends_go_through_the_same_pipeline(clients: ClientFactory) -> None:
    alice, bob = clients(), clients()
    cid = direct_conversation(alice, bob)
    sent = alice.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"cmid": "rest-1", "text": "via REST"}
    )
    assert sent.status_code == 201, sent.text
    assert (
        expect_event(bob, "message", _is_message(cid, "via REST"))["message_id"] == sent.json()["message_id"]
    )
    repeat = alice.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"cmid": "rest-1", "text": "via REST"}
    )
    assert repeat.status_code == 200
    assert repeat.json()["message_id"] == sent.json()["message_id"]
    too_long = alice.request(
        "POST", f"/v1/conversations/{cid}/messages", json={"cmid": "r2", "text": "x" * 100_001}
    )
    assert too_long.status_code == 422
    assert too_long.json()["error"]["code"] == "too_long"


def test_history_pages_before_after_and_around(clients: ClientFactory) -> None:
    alice, bob = clients(), clients(connect=False)
    cid = direct_conversation(alice, bob)
    for index in range(1, 11):
        alice.send(cid, f"m{index}")
    alice.outbox.emptied.wait(20)
    assert not len(alice.outbox)

    def seqs(page: dict[str, Any]) -> list[int]:
        return [message["seq"] for message in page["messages"]]

    newest = _history(alice, cid, limit=3)
    assert (seqs(newest), newest["has_more"]) == ([8, 9, 10], True)
    older = _history(alice, cid, before=8, limit=3)
    assert seqs(older) == [5, 6, 7]
    assert seqs(_history(alice, cid, before=3, limit=5)) == [1, 2]
    assert not _history(alice, cid, before=3, limit=5)["has_more"]
    assert seqs(_history(alice, cid, after=7, limit=5)) == [8, 9, 10]
    assert seqs(_history(alice, cid, around=5, limit=4)) == [3, 4, 5, 6]
    both = alice.request("GET", f"/v1/conversations/{cid}/messages", params={"before": 3, "after": 1})
    assert both.status_code == 422


def test_history_is_for_members_only(clients: ClientFactory, api: ApiClient) -> None:
    alice, bob = clients(connect=False), clients(connect=False)
    cid = direct_conversation(alice, bob)
    stranger = api.new_user()
    response = api.http.get(f"/v1/conversations/{cid}/messages", headers=stranger.headers)
    assert response.status_code == 404
    assert api.http.get(f"/v1/conversations/{cid}", headers=stranger.headers).status_code == 404


def test_sync_after_an_offline_period_returns_exactly_what_was_missed(clients: ClientFactory) -> None:
    alice, bob = clients(), clients()
    cid = direct_conversation(alice, bob)
    alice.send(cid, "before")
    expect_event(bob, "message")
    bob.catch_up()  # holds seq 1, cursor moved to 1
    bob.disconnect()
    for index in range(3):
        alice.send(cid, f"while away {index}")
    alice.outbox.emptied.wait(20)
    response = bob.http.get("/v1/sync")
    assert response.status_code == 200
    [conversation] = response.json()["conversations"]
    assert conversation["cursor"] == 1
    assert [m["text"] for m in conversation["messages"]] == [f"while away {i}" for i in range(3)]
    assert conversation["complete"] is True
    partial = bob.http.get("/v1/sync", params={"limit": 2}).json()["conversations"][0]
    assert partial["complete"] is False
    assert partial["missing"] == {"after": 3, "up_to": 4}
    bob.http.post("/v1/sync/cursors", json={"cursors": {cid: 4}})
    assert bob.http.get("/v1/sync").json()["conversations"] == []


def test_the_conversation_list_shows_each_with_its_members_unread_and_newest_first(
    clients: ClientFactory,
) -> None:
    me, carol, dave = clients(), clients(), clients()
    quiet, read, busy = (
        direct_conversation(me, carol),
        _group(me, [carol, dave], "read"),
        _group(carol, [me, dave]),
    )
    for cid, sender, texts in [(read, carol, ["r1", "r2"]), (read, me, ["mine"]), (busy, dave, ["b1", "b2"])]:
        for text in texts:
            sender.send(cid, text)
        assert sender.outbox.emptied.wait(20)
    me.request("POST", f"/v1/conversations/{read}/read", json={"seq": 2}).raise_for_status()
    listed = me.request("GET", "/v1/conversations").json()["conversations"]
    assert [c["id"] for c in listed] == [busy, read, quiet]  # newest message first, empty last
    by_id = {c["id"]: c for c in listed}
    assert {m["user_id"] for m in by_id[quiet]["members"]} == {me.user_id, carol.user_id}
    assert {m["user_id"] for m in by_id[busy]["members"]} == {me.user_id, carol.user_id, dave.user_id}
    # read: everything up to my marker read, and my own message never counts as unread.
    assert [(c["unread_count"], c["last_read_seq"]) for c in listed] == [(2, 0), (0, 2), (0, 0)]
    assert [c["last_message"] and c["last_message"]["text"] for c in listed] == ["b2", "mine", None]


def test_read_markers_give_unread_counts_and_receipts(clients: ClientFactory) -> None:
    alice, bob = clients(), clients()
    cid = direct_conversation(alice, bob)
    for index in range(3):
        alice.send(cid, f"unread {index}")
    alice.outbox.emptied.wait(20)
    listed = bob.request("GET", "/v1/conversations").json()["conversations"]
    [mine] = [conversation for conversation in listed if conversation["id"] == cid]
    assert (mine["unread_count"], mine["last_message"]["text"]) == (3, "unread 2")
    state = bob.request("POST", f"/v1/conversations/{cid}/read", json={"seq": 2}).json()
    assert state == {"last_read_seq": 2, "unread_count": 1}
    receipt = expect_event(alice, "receipt")
    assert (receipt["user_id"], receipt["seq"]) == (bob.user_id, 2)
    back = bob.request("POST", f"/v1/conversations/{cid}/read", json={"seq": 1}).json()
    assert back["last_read_seq"] == 2
