"""Every NATS subject, stream and header name a Hubbub cluster uses: built and parsed here only.

``hubbub.topics`` is the same for MQTT topics. A cluster (``HUBBUB_NATS_URL``) carries its
cross-node hand-offs on these (DESIGN.md, "Scaling out"):

- ``hubbub.accepted.<shard>`` (JetStream stream ``HUBBUB_ACCEPTED``): messages ingest accepted,
  one subject per conversation shard, deduplicated by ``Nats-Msg-Id`` = ``accepted_msg_id``.
  A device's PUBLISH is acknowledged once the stream holds the message.
- ``hubbub.committed.<shard>`` (JetStream stream ``HUBBUB_COMMITTED``): what the shard's
  persister committed, for the notifiers (``Nats-Msg-Id`` = ``committed_msg_id``).
- ``hubbub.inbox.<uid>`` (core NATS, at most once): an event for a user's devices; a broker
  node subscribes while it holds one of that user's devices. ``ONLY_DEVICE`` / ``SKIP_DEVICE``
  headers narrow it, as ``DeviceConnections.to_inbox`` does.
- ``hubbub.reply.<process>`` (core NATS): commit results for a process that submitted messages
  on a REST caller's behalf; named in the accepted message's ``REPLY_TO`` header.
- ``hubbub.presence.events.<shard>`` (core NATS): devices connecting and disconnecting, to the
  single presence writer of the user shard; ``hubbub.presence.resync.<shard>``: that writer
  asks every broker node for its devices of the shard (after it gains the shard, and every
  reconciliation interval; a request naming one node in its ``PRESENCE_NODE`` header asks
  only that node). Each node answers on the request's reply subject.
- KV bucket ``hubbub_presence`` (``PRESENCE_BUCKET``): each user's presence as the writer
  decided it, key ``<user shard>.<uid>``, value the retained ``presence/{uid}`` payload. Nodes
  and readers follow its changes with a core subscription to ``kv_changes(bucket)``.
- ``hubbub.device.ended``, ``hubbub.membership.changed`` (core NATS, every node): a device was
  signed out for good (close its connections); a conversation's members changed (forget them).
- KV bucket ``hubbub_cluster`` (``CLUSTER_BUCKET``): what every process of the cluster shares
  once made (the VAPID key of Web Push).

Names are ASCII, dot-separated; ids are decimal, shards are ``0..shards-1``.
"""

from __future__ import annotations

__all__ = [
    "ACCEPTED_STREAM",
    "CLUSTER_BUCKET",
    "COMMITTED_STREAM",
    "ONLY_DEVICE",
    "PRESENCE_BUCKET",
    "PRESENCE_NODE",
    "REPLY_TO",
    "SKIP_DEVICE",
    "accepted",
    "accepted_consumer",
    "accepted_msg_id",
    "committed",
    "committed_msg_id",
    "device_ended",
    "every_accepted",
    "every_committed",
    "every_inbox",
    "every_presence_resync",
    "inbox",
    "kv_changes",
    "kv_key",
    "kv_stream",
    "membership_changed",
    "parse_inbox",
    "parse_kv_change",
    "parse_presence_key",
    "parse_shard",
    "presence_events",
    "presence_key",
    "presence_resync",
    "reply",
]

_ROOT = "hubbub"
ACCEPTED_STREAM = "HUBBUB_ACCEPTED"
COMMITTED_STREAM = "HUBBUB_COMMITTED"
CLUSTER_BUCKET = "hubbub_cluster"

ONLY_DEVICE = "Hubbub-Only-Device"
SKIP_DEVICE = "Hubbub-Skip-Device"
REPLY_TO = "Hubbub-Reply-To"
PRESENCE_NODE = "Hubbub-Presence-Node"
PRESENCE_BUCKET = "hubbub_presence"

_ACCEPTED = f"{_ROOT}.accepted."
_COMMITTED = f"{_ROOT}.committed."
_INBOX = f"{_ROOT}.inbox."


def _shard(prefix: str, shard: int) -> str:
    if shard < 0:
        raise ValueError(f"shards are non-negative, not {shard}")
    return f"{prefix}{shard}"


def accepted(shard: int) -> str:
    """The accepted messages of conversation shard ``shard``."""
    return _shard(_ACCEPTED, shard)


def every_accepted() -> str:
    """The ``HUBBUB_ACCEPTED`` stream's subjects."""
    return f"{_ACCEPTED}*"


def accepted_msg_id(conversation_id: int, sender_id: int, cmid: str, attempt: int | None = None) -> str:
    """The JetStream dedupe id of an accepted message: its idempotency key.

    With ``attempt`` (the ``message_id`` ingest stamped on this send), the id of one send of
    the message: a publish retried after a lost ack is dropped by the stream, while a device's
    resend (a new attempt) reaches the persister and is answered as a duplicate by the store,
    which is what gives the device its ``ack`` back (``cluster.accepted`` says why).
    """
    key = f"{conversation_id}:{sender_id}:{cmid}"
    return key if attempt is None else f"{key}:{attempt}"


def accepted_consumer(shard: int) -> str:
    """The durable consumer of ``accepted(shard)`` (one per shard, read by the shard's persister)."""
    return _shard("hubbub_accepted_", shard)


def committed(shard: int) -> str:
    """What conversation shard ``shard``'s persister committed."""
    return _shard(_COMMITTED, shard)


def every_committed() -> str:
    """The ``HUBBUB_COMMITTED`` stream's subjects."""
    return f"{_COMMITTED}*"


def committed_msg_id(conversation_id: int, seq: int) -> str:
    """The JetStream dedupe id of a committed message (a fenced-out owner may publish it twice)."""
    return f"{conversation_id}:{seq}"


def parse_shard(subject: str) -> int:
    """The shard at the end of an accepted/committed/presence subject; ``ValueError`` otherwise."""
    head, _, tail = subject.rpartition(".")
    if not head.startswith(_ROOT) or not tail.isdigit():
        raise ValueError(f"not a sharded Hubbub subject: {subject!r}")
    return int(tail)


def inbox(user_id: int) -> str:
    """Events for every device of ``user_id``, wherever it is connected."""
    return f"{_INBOX}{user_id}"


def every_inbox() -> str:
    """Every user's inbox subject (for tools and tests; nodes subscribe per user)."""
    return f"{_INBOX}*"


def parse_inbox(subject: str) -> int:
    """The user id of an ``inbox`` subject; ``ValueError`` otherwise."""
    if not subject.startswith(_INBOX) or not subject[len(_INBOX) :].isdigit():
        raise ValueError(f"not an inbox subject: {subject!r}")
    return int(subject[len(_INBOX) :])


def reply(process_id: str) -> str:
    """Commit results for the process ``process_id`` (letters, digits, ``-``, ``_``)."""
    if not process_id or not process_id.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"a process id is letters, digits, '-' or '_', not {process_id!r}")
    return f"{_ROOT}.reply.{process_id}"


def presence_events(shard: int) -> str:
    """Devices of user shard ``shard`` connecting and disconnecting, for its presence writer."""
    return _shard(f"{_ROOT}.presence.events.", shard)


def presence_resync(shard: int) -> str:
    """The presence writer of ``shard`` asking every broker node which of its devices it holds."""
    return _shard(f"{_ROOT}.presence.resync.", shard)


def every_presence_resync() -> str:
    """Resync requests of every user shard (a broker node answers them all)."""
    return f"{_ROOT}.presence.resync.*"


def presence_key(shard: int, user_id: int) -> str:
    """The key of ``user_id`` (of user shard ``shard``) in the presence bucket."""
    if user_id < 0:
        raise ValueError(f"ids are non-negative, not {user_id}")
    return f"{_shard('', shard)}.{user_id}"


def parse_presence_key(key: str) -> tuple[int, int]:
    """The (shard, user id) of a presence bucket key; ``ValueError`` otherwise."""
    shard, dot, user_id = key.partition(".")
    if not dot or not shard.isdigit() or not user_id.isdigit():
        raise ValueError(f"not a presence key: {key!r}")
    return int(shard), int(user_id)


def kv_changes(bucket: str) -> str:
    """Every write to KV bucket ``bucket``, as a core NATS subscription sees them."""
    return f"$KV.{bucket}.>"


def kv_key(bucket: str, key: str) -> str:
    """The subject holding ``key``'s values in KV bucket ``bucket``."""
    return f"$KV.{bucket}.{key}"


def kv_stream(bucket: str) -> str:
    """The JetStream stream behind KV bucket ``bucket``."""
    return f"KV_{bucket}"


def parse_kv_change(bucket: str, subject: str) -> str:
    """The key a ``kv_changes(bucket)`` message wrote; ``ValueError`` otherwise."""
    prefix = f"$KV.{bucket}."
    if not subject.startswith(prefix) or len(subject) == len(prefix):
        raise ValueError(f"not a change of bucket {bucket}: {subject!r}")
    return subject[len(prefix) :]


def device_ended() -> str:
    """A device signed out for good (``hubbub.sessions.DeviceEnded``): every node closes it."""
    return f"{_ROOT}.device.ended"


def membership_changed() -> str:
    """A conversation's members changed: every node forgets what it cached of them."""
    return f"{_ROOT}.membership.changed"
