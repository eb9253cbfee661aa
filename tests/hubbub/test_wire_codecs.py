"""Wire codecs of accepted messages and commit results: ids as strings, every field checked."""

from __future__ import annotations

import orjson
import pytest

from hubbub.envelope import (
    AcceptedMessage,
    CommitResult,
    CommittedMessage,
    WireFormatError,
    decode_accepted,
    decode_commit_result,
    decode_commit_results,
    encode_accepted,
    encode_commit_result,
    encode_commit_results,
)

BIG = 2**63 - 1  # beyond JavaScript's safe integers: why ids travel as strings
ACCEPTED = AcceptedMessage(BIG, BIG - 1, 7, "phone-1", "c-1", "héllo 👋", 1_700_000_000_123)
RESULT = CommitResult(
    CommittedMessage(BIG, BIG - 1, 42, 7, "c-1", "héllo 👋", 1_700_000_000_123),
    duplicate=True,
    sender_device_id="phone-1",
)


def test_an_accepted_message_round_trips_with_ids_as_strings() -> None:
    wire = encode_accepted(ACCEPTED)
    assert orjson.loads(wire)["message_id"] == str(BIG - 1)
    assert decode_accepted(wire) == ACCEPTED


def test_commit_results_round_trip_alone_and_as_a_list() -> None:
    assert decode_commit_result(encode_commit_result(RESULT)) == RESULT
    assert decode_commit_results(encode_commit_results([RESULT, RESULT])) == [RESULT, RESULT]
    body = orjson.loads(encode_commit_result(RESULT))
    assert (body["conversation_id"], body["seq"], body["duplicate"]) == (str(BIG), 42, True)


@pytest.mark.parametrize(
    "wire",
    [
        b"not json",
        b"[]",
        orjson.dumps({**orjson.loads(encode_accepted(ACCEPTED)), "sender_id": 7}),
        orjson.dumps({**orjson.loads(encode_accepted(ACCEPTED)), "created_at_ms": "1"}),
        orjson.dumps({k: v for k, v in orjson.loads(encode_accepted(ACCEPTED)).items() if k != "cmid"}),
    ],
)
def test_a_malformed_accepted_message_is_refused(wire: bytes) -> None:
    with pytest.raises(WireFormatError):
        decode_accepted(wire)


def test_malformed_commit_results_are_refused() -> None:
    with pytest.raises(WireFormatError):
        decode_commit_results(encode_commit_result(RESULT))  # one, not a list
    with pytest.raises(WireFormatError):
        decode_commit_result(orjson.dumps({**orjson.loads(encode_commit_result(RESULT)), "duplicate": 1}))
