"""A small Hubbub client: REST login, one MQTT connection, an outbox, ordered timelines.

What a serious chat client does, in a few hundred lines, so the tests and ``hubbub chat``
talk to the platform the way an app would:

- sends go to an outbox and are resent with the same cmid after every reconnect (and
  when no ack came for ``resend_after_s``) until their ``ack`` arrives;
- incoming messages merge into per-conversation timelines by ``seq``; a gap (41 then
  43) is filled from history over REST;
- after each (re)connect the client catches up through ``/v1/sync`` and moves its
  server-side cursors to what it holds; and again on a ``resync`` event (its broker node lost
  events for it while its own link to the cluster was down), once however many come in a row;
- when its broker node goes away it connects to another node its login listed, with the
  access token it holds (``client.connection``, ``client.route``): no refresh, no login;
- inbox events are parsed with the server's own types (``hubbub.events``): an event that
  breaks the contract is logged and dropped, never half-understood.

paho runs the network in its own thread, and the connection's keeper another; callbacks only
update state and hand slow work (REST calls) to a worker thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal, cast

import httpx
import orjson
import paho.mqtt.client as paho
from pydantic import ValidationError

from client.connection import BrokerConnection
from client.outbox import Outbox, Pending
from client.route import BrokerRoute, Endpoint
from client.timeline import Timeline
from hubbub import topics
from hubbub.events import AckEvent, ErrorEvent, InboxEvent, MessageEvent, parse_inbox_event

__all__ = ["HubbubClient", "LoginFailed"]

logger = logging.getLogger(__name__)

# Errors after which resending cannot help; anything else (rate_limited) is retried.
_FINAL_ERRORS = frozenset({"too_long", "empty", "invalid", "not_member"})

EventHandler = Callable[[InboxEvent], None]


class LoginFailed(Exception):
    """The platform refused the credentials."""


class HubbubClient:
    """One device of one user."""

    def __init__(
        self,
        base_url: str,
        *,
        transport: Literal["tcp", "websockets"] = "tcp",
        resend_after_s: float = 10.0,
        reconnect_delay_s: tuple[float, float] = (0.5, 5.0),
        failover: bool = True,
        on_event: EventHandler | None = None,
    ) -> None:
        """``reconnect_delay_s``: the backoff's first cap and its ceiling (``client.route``).

        ``failover``: move to another broker node when this one goes away (off: retry the one
        node ``connect`` started on, as a device that cannot reach the others would).
        """
        self.http = httpx.Client(base_url=base_url, timeout=30.0)
        self.transport = transport
        self.outbox = Outbox()
        self.timelines: dict[str, Timeline] = {}
        self.acks: dict[str, AckEvent] = {}
        self.errors: list[ErrorEvent] = []
        # Every inbox event, checked against its type, as the plain dict it is (easy to match on).
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.connected = threading.Event()
        self.user_id = ""
        self.device_id = ""
        self._on_event = on_event
        self._resend_after_s = resend_after_s
        self._lock = threading.RLock()
        self._tokens: dict[str, Any] = {}
        self._renewing = threading.RLock()  # one refresh at a time: a refresh token works once
        self._backoff = reconnect_delay_s
        self.failover = failover
        self._link: BrokerConnection | None = None
        self._work: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run_worker, name="hubbub-client-worker", daemon=True)
        self._worker.start()
        self._resender: threading.Timer | None = None
        self._catch_up_queued = False  # a catch-up waits in the work queue, not begun

    # -- REST ------------------------------------------------------------------------------

    def sign_up(self, username: str, password: str, display_name: str | None = None) -> dict[str, Any]:
        """Create an account."""
        body: dict[str, Any] = {"username": username, "password": password}
        if display_name:
            body["display_name"] = display_name
        response = self.http.post("/v1/users", json=body)
        response.raise_for_status()
        created: dict[str, Any] = response.json()
        return created

    def login(self, username: str, password: str, *, device_id: str | None = None) -> None:
        """Get tokens for this device (a new device unless ``device_id`` is given)."""
        body: dict[str, Any] = {"username": username, "password": password}
        if device_id:
            body["device_id"] = device_id
        response = self.http.post("/v1/auth/token", json=body)
        if response.status_code != httpx.codes.OK:
            raise LoginFailed(response.text)
        self._use_tokens(response.json())

    def _use_tokens(self, tokens: dict[str, Any]) -> None:
        with self._lock:
            self._tokens = tokens
            self.user_id = tokens["user_id"]
            self.device_id = tokens["device_id"]
            self.http.headers["Authorization"] = f"Bearer {tokens['access_token']}"

    def refresh(self) -> None:
        """Trade the refresh token for new tokens."""
        with self._renewing:
            response = self.http.post(
                "/v1/auth/refresh", json={"refresh_token": self._tokens["refresh_token"]}
            )
            response.raise_for_status()
            self._use_tokens(response.json())

    def _renew(self, stale: str) -> None:
        """Refresh, unless another thread already replaced the access token ``stale``.

        A refresh token presented twice ends the device (it looks stolen): never refresh twice.
        """
        with self._renewing:
            if self._tokens.get("access_token") == stale:
                self.refresh()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:  # noqa: ANN401 - httpx's keywords
        """A REST call as this device, refreshing the access token once if it expired."""
        used = self._tokens.get("access_token", "")
        response = self.http.request(method, path, **kwargs)
        if response.status_code == httpx.codes.UNAUTHORIZED and self._tokens.get("refresh_token"):
            self._renew(used)
            response = self.http.request(method, path, **kwargs)
        return response

    def subscribe_events(self, handler: EventHandler) -> None:
        """Call ``handler`` (on the network thread) for every inbox event from now on."""
        self._on_event = handler

    # -- MQTT ------------------------------------------------------------------------------

    def connect(self, timeout: float = 15.0) -> None:
        """Open the MQTT connection; it moves and reconnects by itself until ``disconnect``.

        The first node tried is ``mqtt`` of the last login or refresh, then the other nodes it
        listed (``brokers``), with the access token held: ``client.route`` says in what order.
        """
        with self._lock:
            if self._link is not None:
                raise RuntimeError("already connecting or connected: disconnect first")
            listed = [self._tokens["mqtt"], *(self._tokens.get("brokers", ()) if self.failover else ())]
            route = BrokerRoute(
                listed,
                first_delay_s=self._backoff[0],
                max_delay_s=self._backoff[1],
            )
            link = self._link = BrokerConnection(
                route,
                client_id=self.device_id,
                username=self.user_id,
                password=lambda: str(self._tokens["access_token"]),
                transport=self.transport,
                connected=self.connected,
                on_accepted=self._accepted,
                on_message=self._received,
                renew=self._renew_for_mqtt,
                live_brokers=self.live_brokers if self.failover else lambda: None,
            )
        link.start()
        if not self.connected.wait(timeout):
            raise TimeoutError("no MQTT connection")
        self._schedule_resend()

    @property
    def route(self) -> BrokerRoute | None:
        """The broker nodes the MQTT connection goes through, ``current`` first (``None`` offline)."""
        link = self._link
        return link.route if link is not None else None

    @property
    def _mqtt(self) -> paho.Client | None:
        link = self._link
        return link.client if link is not None else None

    def disconnect(self) -> None:
        """Go offline: close the MQTT connection (REST keeps working; ``connect`` again later)."""
        if self._resender is not None:
            self._resender.cancel()
        with self._lock:
            link, self._link = self._link, None
        if link is not None:
            link.stop()
        self.connected.clear()

    def close(self) -> None:
        """Disconnect, stop the threads, close HTTP."""
        self.disconnect()
        self._work.put(None)
        self._worker.join(timeout=10)
        self.http.close()

    def live_brokers(self) -> list[Endpoint] | None:
        """``GET /v1/brokers``: the live broker nodes, least loaded first (``None`` if unanswered)."""
        try:
            response = self.request("GET", "/v1/brokers")
            response.raise_for_status()
            brokers: list[Endpoint] = response.json()["brokers"]
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            logger.info("could not ask for the live broker nodes (%r)", exc)
            return None
        return brokers

    def _renew_for_mqtt(self, refused: str) -> bool:
        """New tokens after CONNACK refused ``refused``; ``False`` once the refresh is refused too."""
        try:
            self._renew(refused)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == httpx.codes.UNAUTHORIZED:
                return False
            logger.info("refresh after a refused CONNECT failed (%s); retrying", exc.response.status_code)
        except httpx.HTTPError as exc:
            logger.info("refresh after a refused CONNECT failed (%r); retrying", exc)
        return True

    def send(self, conversation_id: str, text: str, cmid: str | None = None) -> Pending:
        """Queue a message in the outbox and publish it."""
        pending = self.outbox.add(conversation_id, text, cmid)
        self._publish(pending)
        return pending

    def resend_unacked(self) -> None:
        """Publish everything in the outbox again, with the same cmids."""
        for pending in self.outbox.unsettled():
            self._publish(pending)

    def _publish(self, pending: Pending) -> None:
        with self._lock:
            client = self._mqtt
        if client is None or not client.is_connected():
            return  # the resend on the next connect carries it
        payload = orjson.dumps({"cmid": pending.cmid, "text": pending.text})
        client.publish(topics.conversation_send(int(pending.conversation_id)), payload, qos=1)

    def _schedule_resend(self) -> None:
        def tick() -> None:
            self.resend_unacked()
            self._schedule_resend()

        self._resender = threading.Timer(self._resend_after_s, tick)
        self._resender.daemon = True
        self._resender.start()

    def _accepted(self, client: paho.Client) -> None:
        """After every CONNACK that accepted us (on paho's thread): inbox, catch-up, outbox."""
        client.subscribe(topics.inbox(int(self.user_id)), qos=1)
        self._queue_catch_up()  # queued before ``connected`` is set: see ``settled``
        self.resend_unacked()

    def _received(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        """An inbox event (on paho's thread)."""
        try:
            event = parse_inbox_event(message.payload)
        except ValidationError as exc:
            problems = [(error["type"], error["loc"]) for error in exc.errors(include_input=False)]
            logger.warning("dropped an inbox event that breaks the contract: %s", problems)
            return
        if event["kind"] == "message":
            self._merge(event)
        elif event["kind"] == "ack":
            self.acks[event["cmid"]] = event
            pending = self.outbox.settle(event["cmid"])
            if pending is not None:  # the server echoes no message to its sender: the ack completes it
                self._merge(self._own_message(event, pending.text))
        elif event["kind"] == "error":
            self.errors.append(event)
            if event["code"] in _FINAL_ERRORS and event["cmid"]:
                self.outbox.settle(event["cmid"])
        elif event["kind"] == "resync":
            self._queue_catch_up()
        self.events.put(cast("dict[str, Any]", event))
        if self._on_event is not None:
            self._on_event(event)

    def _own_message(self, ack: AckEvent, text: str) -> MessageEvent:
        """This device's message as the ``message`` event the other devices got."""
        return {
            "kind": "message",
            "conversation_id": ack["conversation_id"],
            "message_id": ack["message_id"],
            "seq": ack["seq"],
            "sender_id": self.user_id,
            "cmid": ack["cmid"],
            "text": text,
            "created_at": ack["created_at"],
        }

    # -- timelines and catch-up ------------------------------------------------------------

    def _merge(self, message: Mapping[str, Any]) -> None:
        with self._lock:
            timeline = self.timelines.setdefault(message["conversation_id"], Timeline())
            timeline.add(message)
            gap = timeline.gap
        if gap is not None:
            self._work.put(lambda: self._fill(message["conversation_id"]))

    def _fill(self, conversation_id: str) -> None:
        """Fetch history after what is held until the gap is closed."""
        while True:
            with self._lock:
                timeline = self.timelines.setdefault(conversation_id, Timeline())
                gap = timeline.gap
            if gap is None:
                return
            page = self.request(
                "GET", f"/v1/conversations/{conversation_id}/messages", params={"after": gap[0]}
            )
            page.raise_for_status()
            rows = page.json()["messages"]
            with self._lock:
                for row in rows:
                    timeline.add(row)
            if not rows:
                return

    def _queue_catch_up(self) -> None:
        """Queue one catch-up, unless one already waits (a begun one may have read too early)."""
        with self._lock:
            if self._catch_up_queued:
                return
            self._catch_up_queued = True
        self._work.put(self._queued_catch_up)

    def _queued_catch_up(self) -> None:
        with self._lock:
            self._catch_up_queued = False
        self.catch_up()

    def catch_up(self) -> None:
        """Everything missed while away, from ``/v1/sync``; then move the cursors to what is held."""
        while True:
            response = self.request("GET", "/v1/sync")
            response.raise_for_status()
            moved = response.json()["conversations"]
            if not moved:
                return
            held: dict[str, int] = {}
            with self._lock:
                for conversation in moved:
                    timeline = self.timelines.setdefault(conversation["conversation_id"], Timeline())
                    for message in conversation["messages"]:
                        timeline.add(message)
                    held[conversation["conversation_id"]] = timeline.held
            self.request("POST", "/v1/sync/cursors", json={"cursors": held}).raise_for_status()
            if all(conversation["complete"] for conversation in moved):
                return

    def settled(self, timeout: float = 30.0) -> bool:
        """Wait until the background work queued so far is done; False after ``timeout``.

        That work is the catch-up after the last connect and the history fetched for every gap
        seen so far: an app shows "updating" until then.
        """
        done = threading.Event()
        self._work.put(done.set)
        return done.wait(timeout)

    def _run_worker(self) -> None:
        while (job := self._work.get()) is not None:
            try:
                job()
            except (httpx.HTTPError, KeyError, ValueError):
                logger.exception("client background work failed")
