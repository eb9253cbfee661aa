from __future__ import annotations

import dataclasses

import pytest

from hubbub.stores import PushToken
from notifier.payload import (
    ELLIPSIS,
    cut_text,
    fit_notification,
    notification_body,
    notification_title,
    safe_cut,
)
from notifier.providers.apns import ApnsProvider
from notifier.providers.base import Notification
from notifier.providers.log import LogProvider
from tests.notifier.conftest import notification

TOKEN = PushToken(token_id="t", provider="log", value="x")
FAMILY = "👨‍👩‍👧‍👦"  # one grapheme, seven code points, 25 bytes
FLAG = "🇫🇷"
THUMB = "👍🏽"
ACCENT = "e\u0301"


def test_titles_name_the_sender_and_the_group() -> None:
    assert notification_title("Ann", None) == "Ann"
    assert notification_title("Ann", "Climbing") == "Ann · Climbing"
    assert len(notification_title("A" * 500, "B" * 500)) == 120


def test_bodies_count_a_burst() -> None:
    assert notification_body("hi", 1) == ("", "hi")
    assert notification_body("hi", 3) == ("3 new messages: ", "hi")


@pytest.mark.parametrize("cluster", [FAMILY, FLAG, THUMB, ACCENT, "1️⃣"])
def test_cuts_never_split_a_character(cluster: str) -> None:
    text = "ab" + cluster * 3
    for end in range(2, len(text) + 1):
        kept = text[: safe_cut(text, end)]
        assert kept.startswith("ab")
        assert (len(kept) - 2) % len(cluster) == 0, (end, kept)


def test_flags_are_cut_between_pairs() -> None:
    text = FLAG * 3
    assert [safe_cut(text, end) for end in range(7)] == [0, 0, 2, 2, 4, 4, 6]


def test_short_text_is_left_alone_and_long_text_gets_an_ellipsis() -> None:
    assert cut_text("hello", 5) == "hello"
    assert cut_text("hello world", 7) == "hello" + ELLIPSIS


@pytest.mark.parametrize(
    ("unit", "boundaries"),
    [("a", {""}), ("é", {""}), ("語", {""}), ("😀", {""}), (FAMILY, {""}), (FLAG + THUMB, {"", FLAG})],
)
def test_any_text_is_fitted_to_4096_bytes_at_a_character_boundary(unit: str, boundaries: set[str]) -> None:
    provider = LogProvider()
    text = unit * 5000
    fitted = fit_notification(notification(TOKEN, text), provider)

    size = len(provider.render(fitted))
    assert size <= 4096
    assert size > 4096 - len(unit.encode()) - 8  # as much text as fits
    assert fitted.body.endswith(ELLIPSIS)
    kept = fitted.body.removesuffix(ELLIPSIS)
    whole = unit * (len(kept) // len(unit))
    assert kept.startswith(whole)
    assert kept.removeprefix(whole) in boundaries


def test_a_fitting_notification_is_unchanged() -> None:
    original = notification(TOKEN, "short")
    assert fit_notification(original, LogProvider()) is original


def test_the_burst_count_is_never_cut() -> None:
    prefix = "50 new messages: "
    fitted = fit_notification(notification(TOKEN, prefix + "😀" * 3000), LogProvider(), keep=len(prefix))
    assert fitted.body.startswith(prefix + "😀")
    assert len(LogProvider().render(fitted)) <= 4096


def test_the_title_is_cut_when_even_an_empty_body_does_not_fit() -> None:
    huge: Notification = dataclasses.replace(notification(TOKEN, "body"), title="T" * 5000)
    fitted = fit_notification(huge, LogProvider())
    assert fitted.body == ELLIPSIS
    assert fitted.title.endswith(ELLIPSIS)
    assert len(LogProvider().render(fitted)) <= 4096


def test_fitting_counts_the_whole_apns_payload(apns_p8: bytes) -> None:
    provider = ApnsProvider(key=apns_p8, key_id="k", team_id="t", topic="x")
    fitted = fit_notification(notification(TOKEN, "ü" * 5000), provider)
    assert 4090 <= len(provider.render(fitted)) <= 4096
