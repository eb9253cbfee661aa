from __future__ import annotations

import orjson
import pytest

from hubbub.envelope import format_time, parse_send
from hubbub.errors import MessageRejected

LIMIT = 100_000


def test_a_valid_send_parses() -> None:
    request = parse_send(b'{"cmid": "c-1", "text": "hi \\ud83c\\udf89"}', LIMIT)
    assert (request.cmid, request.text) == ("c-1", "hi 🎉")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\xff\xfe", "invalid"),
        (b'"just a string"', "invalid"),
        (b'{"text": "no cmid"}', "invalid"),
        (b'{"cmid": "", "text": "x"}', "invalid"),
        (orjson.dumps({"cmid": "c" * 65, "text": "x"}), "invalid"),
        (b'{"cmid": "c", "text": null}', "invalid"),
        (b'{"cmid": "c", "text": "hi", "attachment": {}}', "invalid"),
        (b'{"cmid": "c", "text": ""}', "empty"),
        (b'{"cmid": "c", "text": "\\n\\t "}', "empty"),
    ],
)
def test_bad_sends_are_rejected_with_a_code(payload: bytes, code: str) -> None:
    with pytest.raises(MessageRejected) as rejected:
        parse_send(payload, LIMIT)
    assert rejected.value.code == code


def test_length_counts_characters_not_bytes() -> None:
    assert parse_send(orjson.dumps({"cmid": "c", "text": "🎉" * LIMIT}), LIMIT).text == "🎉" * LIMIT
    with pytest.raises(MessageRejected) as rejected:
        parse_send(orjson.dumps({"cmid": "c", "text": "a" * (LIMIT + 1)}), LIMIT)
    assert rejected.value.code == "too_long"


def test_times_are_iso_8601_utc_with_milliseconds() -> None:
    assert format_time(1_764_000_000_123) == "2025-11-24T16:00:00.123Z"
    assert format_time(1_764_000_000_007) == "2025-11-24T16:00:00.007Z"
    assert format_time(999) == "1970-01-01T00:00:00.999Z"
