"""The MQTT contract served by the HTTP port: the document, a page to read it, a link from /docs."""

from __future__ import annotations

from hubbub.asyncapi import build_asyncapi
from tests.support.api import ApiClient


def test_the_document_names_this_deployments_endpoints_and_limits(api: ApiClient) -> None:
    served = api.http.get("/asyncapi.json")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    login = api.login(api.sign_up()["username"])
    expected = build_asyncapi(
        version=api.http.get("/openapi.json").json()["info"]["version"],
        max_message_chars=served.json()["components"]["schemas"]["SendPayload"]["properties"]["text"][
            "maxLength"
        ],
        mqtt_host=login.mqtt["host"],
        mqtt_port=login.mqtt["port"],
        ws_url=login.mqtt["ws_url"],
    )
    assert served.json() == expected


def test_the_page_lists_every_channel_and_message(api: ApiClient) -> None:
    document = api.http.get("/asyncapi.json").json()
    page = api.http.get("/asyncapi")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text
    for channel in document["channels"].values():
        assert f"<code>{channel['address']}</code>" in page.text
    for message in document["components"]["messages"]:
        assert f'id="{message}"' in page.text


def test_the_rest_docs_link_the_mqtt_contract(api: ApiClient) -> None:
    description = api.http.get("/openapi.json").json()["info"]["description"]
    assert "(/asyncapi)" in description
    assert "(/asyncapi.json)" in description
