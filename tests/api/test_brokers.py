"""Where devices connect: login's list of broker nodes, ``GET /v1/brokers``, and sync's one read.

One node (``hubbub up``) lists its one broker; the cluster's list of live nodes is
tests/cluster/test_cluster_device_failover.py's. ``GET /v1/brokers`` is what a device asks once every node
it was given has failed, so it must cost no durable write: its token is checked by signature.
"""

from __future__ import annotations

import httpx

from tests.support.api import ApiClient
from tests.support.platform import Platform


def _brokers(api: ApiClient, headers: dict[str, str]) -> httpx.Response:
    return api.http.get("/v1/brokers", headers=headers)


def test_login_and_refresh_list_the_one_node_as_where_to_connect(api: ApiClient, platform: Platform) -> None:
    phone = api.new_user()
    body = api.http.post(
        "/v1/auth/token", json={"username": phone.username, "password": phone.password}
    ).json()
    assert body["brokers"] == [body["mqtt"]]
    assert body["mqtt"]["port"] == platform.mqtt_port
    refreshed = api.http.post("/v1/auth/refresh", json={"refresh_token": body["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["brokers"] == [body["mqtt"]]


def test_brokers_answers_a_device_with_a_valid_token_a_cacheable_list(api: ApiClient) -> None:
    phone = api.new_user()
    response = _brokers(api, phone.headers)
    assert response.status_code == 200, response.text
    assert response.json()["brokers"] == [phone.mqtt]
    assert response.headers["cache-control"].startswith("private, max-age=")


def test_brokers_refuses_a_missing_or_forged_token(api: ApiClient) -> None:
    phone = api.new_user()
    assert _brokers(api, {}).status_code == 401
    forged = phone.access_token[:-4] + ("AAAA" if not phone.access_token.endswith("AAAA") else "BBBB")
    refused = _brokers(api, {"Authorization": f"Bearer {forged}"})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_token"
    assert _brokers(api, {"Authorization": f"Bearer {phone.refresh_token}"}).status_code == 401


def test_sync_refuses_a_signed_out_device_and_answers_one_without_conversations(api: ApiClient) -> None:
    phone = api.new_user()
    laptop = api.login(phone.username)
    empty = api.http.get("/v1/sync", headers=laptop.headers)
    assert (empty.status_code, empty.json()) == (200, {"conversations": []})
    assert api.http.post("/v1/auth/logout", headers=phone.headers).status_code == 204
    ended = api.http.get("/v1/sync", headers=phone.headers)
    assert ended.status_code == 401
    assert ended.json()["error"]["code"] == "signed_out"
    assert api.http.get("/v1/sync", headers=laptop.headers).status_code == 200
