"""The MQTT contract, served: ``/asyncapi.json`` (AsyncAPI 3.0) and ``/asyncapi``, a page to read it.

The document comes from ``hubbub.asyncapi`` with this deployment's endpoints and message limit.
The page is plain HTML rendered here (no script, nothing fetched from elsewhere): a client team
reads it in a browser and generates code from the JSON.
"""

from __future__ import annotations

import functools
import json
from html import escape
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from api.deps import StateDep
from hubbub.asyncapi import build_asyncapi

__all__ = ["render_html", "router"]

router = APIRouter(tags=["contract"])


@functools.cache
def _document(
    version: str, max_message_chars: int, mqtt_host: str, mqtt_port: int, ws_url: str
) -> dict[str, Any]:
    return build_asyncapi(
        version=version,
        max_message_chars=max_message_chars,
        mqtt_host=mqtt_host,
        mqtt_port=mqtt_port,
        ws_url=ws_url,
    )


def _for(request: Request, state: StateDep) -> dict[str, Any]:
    return _document(
        request.app.version,
        state.settings.max_message_chars,
        state.broker.host,
        state.broker.port,
        state.broker.ws_url,
    )


@router.get("/asyncapi.json", response_class=Response, summary="The MQTT contract (AsyncAPI 3.0)")
async def asyncapi_json(request: Request, state: StateDep) -> Response:
    """The AsyncAPI 3.0 document of the MQTT side: topics, who may use them, every payload's schema."""
    return Response(orjson.dumps(_for(request, state)), media_type="application/json")


@router.get("/asyncapi", response_class=HTMLResponse, summary="The MQTT contract, to read")
async def asyncapi_page(request: Request, state: StateDep) -> HTMLResponse:
    """The same document as a page: channels, operations, messages with their schemas and examples."""
    return HTMLResponse(render_html(_for(request, state)))


def _pre(value: object) -> str:
    return f"<pre>{escape(json.dumps(value, indent=2, ensure_ascii=False))}</pre>"


def _resolve(document: dict[str, Any], ref: str) -> Any:  # noqa: ANN401 - any node of the document
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _message_html(document: dict[str, Any], ref: str) -> str:
    message = _resolve(document, ref)
    if "$ref" in message:
        message = _resolve(document, message["$ref"])
    schema_name = message["payload"]["$ref"].rsplit("/", 1)[-1]
    parts = [
        f'<section class="message" id="{escape(message["name"])}"><h4>{escape(message["title"])}</h4>',
        f"<p>{escape(message.get('summary', ''))}</p>",
    ]
    if "description" in message:
        parts.append(f"<p>{escape(message['description'])}</p>")
    parts.append(f'<details><summary>schema <a href="#schema-{schema_name}">{schema_name}</a></summary>')
    parts.append(f"{_pre(document['components']['schemas'][schema_name])}</details>")
    for example in message.get("examples", []):
        parts.append(
            f"<details><summary>example: {escape(example['name'])}</summary>{_pre(example['payload'])}"
        )
        parts.append("</details>")
    parts.append("</section>")
    return "".join(parts)


_STYLE = """<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em}
pre{background:#f4f4f4;padding:.6em;overflow:auto} code{background:#f4f4f4}
section.operation{border-top:1px solid #ccc;margin-top:1.5em} td,th{padding:.2em .8em;text-align:left}
</style>"""


def _operation_html(document: dict[str, Any], name: str, operation: dict[str, Any]) -> str:
    channel = _resolve(document, operation["channel"]["$ref"])
    mqtt = operation["bindings"]["mqtt"]
    retained = ", retained" if mqtt["retain"] else ""
    parts = [
        f'<section class="operation" id="{escape(name)}">',
        f"<h3>{escape(operation['title'])}: {escape(operation['action'])} ",
        f"<code>{escape(channel['address'])}</code></h3>",
        f"<p>QoS {mqtt['qos']}{retained}. Publishes: {escape(channel['x-hubbub-publishers'])}. ",
        f"Subscribes: {escape(channel['x-hubbub-subscribers'])}.</p>",
        f"<p>{escape(channel['description'])}</p><p>{escape(operation['description'])}</p>",
        *(_message_html(document, message["$ref"]) for message in operation["messages"]),
        "</section>",
    ]
    return "".join(parts)


def render_html(document: dict[str, Any]) -> str:
    """A self-contained HTML page listing the document's servers, operations and messages."""
    info = document["info"]
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{escape(info['title'])} {escape(info['version'])}</title>{_STYLE}</head><body>",
        f"<h1>{escape(info['title'])} <small>{escape(info['version'])}</small></h1>",
        f"<p>AsyncAPI {escape(document['asyncapi'])}: <a href=/asyncapi.json>asyncapi.json</a>",
        " (generate clients from it) · REST: <a href=/docs>/docs</a></p>",
        f"<pre>{escape(info['description'])}</pre>",
        "<h2>Servers</h2><table><tr><th>name<th>protocol<th>host<th>path",
    ]
    parts += [
        f"<tr><td>{escape(name)}<td>{escape(server['protocol'])}<td>{escape(server['host'])}"
        f"<td>{escape(server.get('pathname', ''))}"
        for name, server in document["servers"].items()
    ]
    parts.append("</table><h2>Operations</h2>")
    parts += [
        _operation_html(document, name, operation) for name, operation in document["operations"].items()
    ]
    parts.append("<h2>Schemas</h2>")
    parts += [
        f'<h3 id="schema-{escape(name)}">{escape(name)}</h3>{_pre(schema)}'
        for name, schema in document["components"]["schemas"].items()
    ]
    parts.append("</body></html>")
    return "\n".join(parts)
