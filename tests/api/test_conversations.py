"""Conversations over REST: groups, their limits, members and the events that changes send."""

from __future__ import annotations

from client import HubbubClient
from tests.support.api import ApiClient
from tests.support.chat import ClientFactory, expect_event


def _user_ids(api: ApiClient, count: int) -> list[str]:
    return [api.sign_up()["id"] for _ in range(count)]


def _create_group(client: HubbubClient, member_ids: list[str], title: str = "g") -> dict[str, object]:
    response = client.request(
        "POST", "/v1/conversations", json={"type": "group", "title": title, "member_ids": member_ids}
    )
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def test_a_group_holds_100_members_and_refuses_a_101st(clients: ClientFactory, api: ApiClient) -> None:
    admin = clients(connect=False)
    too_many = admin.request(
        "POST", "/v1/conversations", json={"type": "group", "title": "big", "member_ids": _user_ids(api, 100)}
    )
    assert too_many.status_code == 422
    assert too_many.json()["error"]["code"] == "too_many_members"
    group = _create_group(admin, _user_ids(api, 99), "full")
    assert len(group["members"]) == 100  # type: ignore[arg-type]
    extra = api.sign_up()["id"]
    refused = admin.request("POST", f"/v1/conversations/{group['id']}/members", json={"user_id": extra})
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "group_full"


def test_unknown_members_and_self_chats_are_refused(clients: ClientFactory) -> None:
    alice = clients(connect=False)
    unknown = alice.request(
        "POST", "/v1/conversations", json={"type": "group", "title": "x", "member_ids": ["42"]}
    )
    assert unknown.status_code == 422
    assert unknown.json()["error"]["data"] == {"user_ids": ["42"]}
    itself = alice.request("POST", "/v1/conversations", json={"type": "direct", "user_id": alice.user_id})
    assert itself.json()["error"]["code"] == "self_conversation"
    bad_type = alice.request("POST", "/v1/conversations", json={"type": "channel"})
    assert bad_type.status_code == 422


def test_changes_reach_the_members_as_conversation_events(clients: ClientFactory) -> None:
    admin, member, newcomer = clients(), clients(), clients()
    group = _create_group(admin, [member.user_id])
    created = expect_event(member, "conversation")
    assert (created["action"], created["conversation"]["id"]) == ("created", group["id"])
    renamed = admin.request("PATCH", f"/v1/conversations/{group['id']}", json={"title": "renamed"})
    assert renamed.json()["title"] == "renamed"
    assert expect_event(member, "conversation")["conversation"]["title"] == "renamed"
    admin.request("POST", f"/v1/conversations/{group['id']}/members", json={"user_id": newcomer.user_id})
    added = expect_event(newcomer, "conversation", lambda e: e["action"] == "member_added")
    assert added["user_id"] == newcomer.user_id


def test_only_admins_add_and_remove_others(clients: ClientFactory, api: ApiClient) -> None:
    admin, member = clients(connect=False), clients(connect=False)
    group = _create_group(admin, [member.user_id])
    outsider = api.sign_up()["id"]
    add = member.request("POST", f"/v1/conversations/{group['id']}/members", json={"user_id": outsider})
    assert add.status_code == 403
    kick = member.request("DELETE", f"/v1/conversations/{group['id']}/members/{admin.user_id}")
    assert kick.status_code == 403


def test_a_removed_member_cannot_send_at_once(clients: ClientFactory) -> None:
    admin, member = clients(), clients()
    group = _create_group(admin, [member.user_id])
    cid = str(group["id"])
    member.send(cid, "while a member")
    assert member.outbox.emptied.wait(20)  # its membership is now cached by the broker
    removed = admin.request("DELETE", f"/v1/conversations/{cid}/members/{member.user_id}")
    assert removed.status_code == 204
    expect_event(member, "conversation", lambda e: e["action"] == "member_removed")
    member.send(cid, "after removal")
    assert expect_event(member, "error")["code"] == "not_member"
    assert member.request("GET", f"/v1/conversations/{cid}/messages").status_code == 404


def test_leaving_hands_the_admin_role_on(clients: ClientFactory) -> None:
    admin, member = clients(connect=False), clients(connect=False)
    group = _create_group(admin, [member.user_id])
    assert (
        admin.request("DELETE", f"/v1/conversations/{group['id']}/members/{admin.user_id}").status_code == 204
    )
    now = member.request("GET", f"/v1/conversations/{group['id']}").json()
    assert [(m["user_id"], m["role"]) for m in now["members"]] == [(member.user_id, "admin")]


def test_direct_conversations_have_no_members_to_change(clients: ClientFactory, api: ApiClient) -> None:
    alice, bob = clients(connect=False), clients(connect=False)
    direct = alice.request(
        "POST", "/v1/conversations", json={"type": "direct", "user_id": bob.user_id}
    ).json()
    response = alice.request(
        "POST", f"/v1/conversations/{direct['id']}/members", json={"user_id": api.sign_up()["id"]}
    )
    assert response.json()["error"]["code"] == "not_a_group"
