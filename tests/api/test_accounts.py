"""Accounts over REST, against the SQLite and the PostgreSQL account store."""

from __future__ import annotations

import pytest

from tests.support.api import ApiClient


def test_sign_up_returns_the_user_with_a_string_id(any_api: ApiClient) -> None:
    username = any_api.unique_username("Alice")
    body = any_api.sign_up(username, display_name="Alice A.")
    assert body["username"] == username.lower()
    assert body["display_name"] == "Alice A."
    assert isinstance(body["id"], str)
    assert body["id"].isdigit()


def test_a_taken_username_is_a_conflict_whatever_its_case(any_api: ApiClient) -> None:
    username = any_api.unique_username("bob")
    any_api.sign_up(username)
    response = any_api.http.post("/v1/users", json={"username": username.upper(), "password": "another pass"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "username_taken"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "ab", "password": "long enough"}, "username"),
        ({"username": "no spaces allowed", "password": "long enough"}, "username"),
        ({"username": "shortpass", "password": "1234567"}, "password"),
        ({"username": "extrafield", "password": "long enough", "admin": True}, "admin"),
        ({"password": "long enough"}, "username"),
    ],
)
def test_invalid_sign_up_is_422_naming_the_field(
    any_api: ApiClient, body: dict[str, object], field: str
) -> None:
    response = any_api.http.post("/v1/users", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["message"]


def test_login_binds_tokens_to_a_new_device_and_names_the_broker(any_api: ApiClient) -> None:
    first = any_api.new_user()
    second = any_api.login(first.username)
    assert first.user_id == second.user_id
    assert first.device_id != second.device_id
    assert set(first.mqtt) == {"host", "port", "ws_url"}
    assert first.mqtt["ws_url"].endswith("/mqtt")


def test_login_with_a_device_id_reuses_that_device(any_api: ApiClient) -> None:
    first = any_api.new_user()
    again = any_api.login(first.username, device_id=first.device_id)
    assert again.device_id == first.device_id


def test_a_device_of_another_user_cannot_be_claimed(any_api: ApiClient) -> None:
    victim = any_api.new_user()
    thief = any_api.new_user()
    response = any_api.http.post(
        "/v1/auth/token",
        json={"username": thief.username, "password": thief.password, "device_id": victim.device_id},
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unknown_device"


def test_wrong_password_and_unknown_user_get_the_same_401(any_api: ApiClient) -> None:
    known = any_api.new_user()
    wrong = any_api.http.post(
        "/v1/auth/token", json={"username": known.username, "password": "wrong password"}
    )
    unknown = any_api.http.post(
        "/v1/auth/token", json={"username": "nobody_here", "password": "wrong password"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


def test_refresh_rotates_the_refresh_token(any_api: ApiClient) -> None:
    login = any_api.new_user()
    response = any_api.http.post("/v1/auth/refresh", json={"refresh_token": login.refresh_token})
    assert response.status_code == 200
    body = response.json()
    assert body["device_id"] == login.device_id
    assert body["refresh_token"] != login.refresh_token
    assert any_api.http.get(
        "/v1/users/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    ).is_success
    replay = any_api.http.post("/v1/auth/refresh", json={"refresh_token": login.refresh_token})
    assert replay.status_code == 401


def test_logout_revokes_the_device_refresh_token(any_api: ApiClient) -> None:
    login = any_api.new_user()
    assert any_api.http.post("/v1/auth/logout", headers=login.headers).status_code == 204
    response = any_api.http.post("/v1/auth/refresh", json={"refresh_token": login.refresh_token})
    assert response.status_code == 401


def test_me_needs_a_valid_bearer_token(any_api: ApiClient) -> None:
    assert any_api.http.get("/v1/users/me").status_code == 401
    forged = any_api.http.get("/v1/users/me", headers={"Authorization": "Bearer not.a.jwt"})
    assert forged.status_code == 401
    assert forged.json()["error"]["code"] == "invalid_token"


def test_profile_update_and_password_change(any_api: ApiClient) -> None:
    login = any_api.new_user()
    renamed = any_api.http.patch("/v1/users/me", headers=login.headers, json={"display_name": "New Name"})
    assert renamed.json()["display_name"] == "New Name"
    no_current = any_api.http.patch(
        "/v1/users/me", headers=login.headers, json={"password": "brand new pass"}
    )
    assert no_current.status_code == 422
    wrong_current = any_api.http.patch(
        "/v1/users/me", headers=login.headers, json={"password": "brand new pass", "current_password": "nope"}
    )
    assert wrong_current.status_code == 401
    changed = any_api.http.patch(
        "/v1/users/me",
        headers=login.headers,
        json={"password": "brand new pass", "current_password": login.password},
    )
    assert changed.status_code == 200
    any_api.login(login.username, password="brand new pass")


def test_users_are_found_by_id_and_by_username(any_api: ApiClient) -> None:
    me = any_api.new_user()
    other = any_api.new_user()
    by_id = any_api.http.get(f"/v1/users/{other.user_id}", headers=me.headers)
    assert by_id.json()["username"] == other.username.lower()
    by_name = any_api.http.get("/v1/users", params={"username": other.username.upper()}, headers=me.headers)
    assert [user["id"] for user in by_name.json()] == [other.user_id]
    assert any_api.http.get("/v1/users", params={"username": "nobody_x"}, headers=me.headers).json() == []
    assert any_api.http.get("/v1/users/123", headers=me.headers).status_code == 404
    assert any_api.http.get("/v1/users/not-a-number", headers=me.headers).status_code == 404


def test_wrong_passwords_make_that_username_wait_from_that_address(any_api: ApiClient) -> None:
    login = any_api.new_user()
    statuses = [
        any_api.http.post(
            "/v1/auth/token", json={"username": login.username, "password": "wrong guess"}
        ).status_code
        for _ in range(6)
    ]
    assert statuses == [401] * 6  # five free failures; the sixth earns a delay
    waiting = any_api.http.post(
        "/v1/auth/token", json={"username": login.username, "password": login.password}
    )
    assert waiting.status_code == 429
    assert waiting.json()["error"]["code"] == "rate_limited"
    assert int(waiting.headers["Retry-After"]) >= 1


def test_health_and_openapi_docs(any_api: ApiClient) -> None:
    assert any_api.http.get("/healthz").json() == {"status": "ok"}
    assert any_api.http.get("/docs").status_code == 200
    assert "/v1/auth/token" in any_api.http.get("/openapi.json").json()["paths"]
