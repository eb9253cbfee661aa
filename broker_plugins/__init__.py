"""The MQTT server of Hubbub: it speaks MQTT only, and hands everything chat-shaped to the core.

What lives here: CONNECT authentication (``auth.py``, ``connect.py``), the SUBSCRIBE ACL
(``acl.py``), the subscription index (``subscriptions.py``), routing and retained messages
(``routing.py``), sessions (``sessions.py``), the per-connection protocol handler
(``handler.py``, an ``asyncio.Protocol`` with the framing of ``codec.py``), keepalive
deadlines (``keepalive.py``), packet limits (``limits.py``), what it sheds, counted for
``/metrics`` (``metrics.py``), what a handler needs of its connection (``transport.py``),
the WebSocket bridge (``websocket.py``), and the server with its CONNECT flow and the seam
to the messaging core (``broker.py``, through the Protocols of ``hubbub/connections.py``).

Decision: the broker owns its MQTT server, sessions and handler outright, and keeps amqtt
for what it does well, decoding the CONNECT. Bending amqtt's ``Broker`` had meant overriding
or reading about thirty of its private names (``_sessions``, ``_subscriptions``,
``_retained_messages``, ``_servers``, ``_client_connected``, ``_handle_disconnect``,
``_stop_handler``, ``_topic_filtering``, ``Session._init_states``, a skipped
``BrokerProtocolHandler.__init__``, ``session.retained_messages`` reused as the offline
queue, ...), pinned to one amqtt release. The evidence it was simpler to own: the handler
already parsed every packet after CONNECT itself (``codec.py``) and replaced amqtt's
delivery, routing and subscription code; what was left of amqtt's ``Broker`` was a
lifecycle the broker then had to patch at each step (authentication order, take-over,
clean-session expiry by a polling task, plugin events for presence). Owning it removed
the patches, amqtt's per-connection state (its ``Session`` and ``ProtocolHandler`` fields,
queues, locks and events), and the plugin indirections.

The remaining amqtt touches, all public names (each exercised by the tests named):

- the CONNACK return codes and ``amqtt.utils.gen_client_id`` in ``connect.py``, which decodes
  the CONNECT itself (``tests/broker_plugins/test_connect_auth.py``, ``test_connect_decoder.py``:
  refusals, protocol level, client id rules);
- ``amqtt.mqtt.connack.NOT_AUTHORIZED`` in ``broker.py`` (``test_connect_auth.py``);
- ``amqtt.errors.MQTTError``, what that decoder raises.

No private amqtt name is used.
"""

from broker_plugins.broker import BrokerOptions, HubbubBroker
from broker_plugins.websocket import WebSocketBridge

__all__ = ["BrokerOptions", "HubbubBroker", "WebSocketBridge"]
