"""Passwords per NIST SP 800-63B: length, a list of common ones, the username; no composition rules."""

from __future__ import annotations

import pytest

from api.passwords import Passwords, check_password
from hubbub.errors import InvalidInput
from tests.support.api import ApiClient


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("12345678", "common"),
        ("password", "common"),
        ("PassWord", "common"),
        ("iloveyou", "common"),
        (" " * 8, "repetitive"),
        ("zzzzzzzzzz", "repetitive"),
        ("abcdefghij", "repetitive"),
        ("98765432", "repetitive"),
        ("\x00" * 8, "control_characters"),
        ("pass\x00word-long", "control_characters"),
        ("margaret_w", "contains_username"),
        ("Margaret_W2024", "contains_username"),
        ("w_teragram", "contains_username"),
        ("hubbub-2024!", "contains_username"),
    ],
)
def test_guessable_passwords_are_refused_naming_the_reason(password: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_password(password, "margaret_w")
    assert refused.value.code == "weak_password"
    assert refused.value.data == {"field": "password", "reason": reason}


@pytest.mark.parametrize(
    "password",
    [
        "correct horse 1",
        "all lower case words",
        "ÜñíçødéPässwört",
        "margaret_w likes long sentences",  # the username with plenty besides it
        "        a few spaces first",
    ],
)
def test_other_passwords_are_accepted_without_composition_rules(password: str) -> None:
    check_password(password, "margaret_w")


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("12345678", "common"),
        ("        ", "repetitive"),
        ("password", "common"),
        ("\x00" * 8, "control_characters"),
    ],
)
def test_sign_up_refuses_a_weak_password_with_a_clear_422(api: ApiClient, password: str, reason: str) -> None:
    response = api.http.post("/v1/users", json={"username": api.unique_username(), "password": password})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "weak_password"
    assert error["data"]["reason"] == reason
    assert error["message"]


def test_sign_up_refuses_the_username_as_password(api: ApiClient) -> None:
    username = api.unique_username("carol")
    response = api.http.post("/v1/users", json={"username": username, "password": username})
    assert response.status_code == 422
    assert response.json()["error"]["data"]["reason"] == "contains_username"


def test_a_password_change_to_a_weak_one_is_refused_and_changes_nothing(api: ApiClient) -> None:
    login = api.new_user()
    other = api.login(login.username)
    response = api.http.patch(
        "/v1/users/me",
        headers=login.headers,
        json={"password": "qwertyuiop", "current_password": login.password},
    )
    assert response.status_code == 422
    assert response.json()["error"]["data"]["reason"] == "common"
    assert api.http.get("/v1/users/me", headers=other.headers).status_code == 200  # nobody signed out
    api.login(login.username)  # the old password still works


async def test_hashes_made_at_another_memory_cost_keep_verifying() -> None:
    strong = Passwords(memory_kib=65_536)
    cheap = Passwords(memory_kib=32)
    strong_hash = await strong.hash("correct horse 1")
    cheap_hash = await cheap.hash("correct horse 1")
    assert strong_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert cheap_hash.startswith("$argon2id$v=19$m=32,t=3,p=4$")
    assert await cheap.verify(strong_hash, "correct horse 1")
    assert await strong.verify(cheap_hash, "correct horse 1")
    assert not await cheap.verify(strong_hash, "correct horse 2")
    assert not await cheap.verify(None, "correct horse 1")
