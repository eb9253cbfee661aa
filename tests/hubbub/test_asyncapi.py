"""The AsyncAPI document: generated from the event types, checked in, internally consistent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args, get_type_hints

import jsonschema
import pytest

from hubbub import events
from hubbub.asyncapi import ERROR_MEANINGS, INBOX_KINDS, build_asyncapi, inbox_message_name
from launcher import asyncapi as command

DOCUMENT = build_asyncapi(
    version="1.2.3",
    max_message_chars=500,
    mqtt_host="chat.example",
    mqtt_port=8883,
    ws_url="wss://chat.example/mqtt",
)


def test_the_checked_in_document_is_the_generated_one() -> None:
    assert command.DOCUMENT_PATH.read_text(encoding="utf-8") == command.document_text(), (
        "docs/asyncapi.json is stale: run python -m launcher.asyncapi"
    )
    assert command.main(["--check"]) == 0


def test_the_command_writes_the_document(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.json"
    assert command.main(["--check", "--out", str(out)]) == 1
    assert command.main(["--out", str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(command.document_text())


def test_every_inbox_kind_and_error_code_is_in_the_document() -> None:
    union = get_args(events.InboxEvent)[0]
    assert {get_args(get_type_hints(shape)["kind"])[0]: shape for shape in get_args(union)} == INBOX_KINDS
    assert set(ERROR_MEANINGS) == events.ERROR_CODES
    inbox = DOCUMENT["channels"]["inbox"]["messages"]
    assert set(inbox) == {inbox_message_name(kind) for kind in INBOX_KINDS}
    error_schema = DOCUMENT["components"]["schemas"]["ErrorEvent"]["properties"]["code"]
    assert set(error_schema["enum"]) == events.ERROR_CODES
    examples = DOCUMENT["components"]["messages"]["errorEvent"]["examples"]
    assert {example["payload"]["code"] for example in examples} == events.ERROR_CODES


def test_the_device_channels_say_who_publishes_and_subscribes() -> None:
    addresses = {channel["address"] for channel in DOCUMENT["channels"].values()}
    assert addresses == {
        "conv/{conversation_id}/send",
        "conv/{conversation_id}/typing",
        "user/{user_id}/inbox",
        "presence/{user_id}",
    }
    for channel in DOCUMENT["channels"].values():
        assert channel["x-hubbub-publishers"]
        assert channel["x-hubbub-subscribers"]
    bindings = {name: op["bindings"]["mqtt"] for name, op in DOCUMENT["operations"].items()}
    assert bindings["sendMessage"]["qos"] == 1
    assert bindings["receiveInbox"]["qos"] == 1
    assert bindings["receivePresence"]["retain"] is True
    assert DOCUMENT["servers"]["tcp"]["host"] == "chat.example:8883"
    assert (DOCUMENT["servers"]["websocket"]["host"], DOCUMENT["servers"]["websocket"]["pathname"]) == (
        "chat.example",
        "/mqtt",
    )
    assert DOCUMENT["components"]["schemas"]["SendPayload"]["properties"]["text"]["maxLength"] == 500


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def _resolve(ref: str) -> object:
    node: Any = DOCUMENT
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_every_reference_resolves_and_every_channel_has_an_operation() -> None:
    for ref in _refs(DOCUMENT):
        assert ref.startswith("#/")
        _resolve(ref)
    used = {op["channel"]["$ref"] for op in DOCUMENT["operations"].values()}
    assert used == {f"#/channels/{name}" for name in DOCUMENT["channels"]}


@pytest.mark.parametrize("name", sorted(DOCUMENT["components"]["messages"]))
def test_every_example_meets_its_schema(name: str) -> None:
    message = DOCUMENT["components"]["messages"][name]
    schema = {**message["payload"], "components": DOCUMENT["components"]}
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    assert message["examples"]
    for example in message["examples"]:
        validator.validate(example["payload"])


def test_a_payload_that_breaks_a_schema_is_caught() -> None:
    schema = {
        **DOCUMENT["components"]["messages"]["ackEvent"]["payload"],
        "components": DOCUMENT["components"],
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate({"kind": "ack", "conversation_id": 5})
