"""The cross-node engine: NATS (JetStream) under Hubbub when it runs as a cluster.

One node needs none of this (``hubbub up``: in-process hand-offs, no other server). A cluster is
chosen by ``HUBBUB_NATS_URL``; this package holds the NATS side, written to what Debian's
``nats-server`` 2.9 offers: streams, consumers, ``Nats-Msg-Id`` dedupe, KV with compare-and-set
and a per-bucket max age.

Every cross-node hand-off has a Protocol in ``hubbub/`` and an in-process implementation in the
component that owns it; the NATS ones live here (subjects and headers: ``hubbub.subjects``):

- ``connection``: one supervised connection per process (reconnect forever, PING-based dead
  connection detection, state for ``/healthz``) and its JetStream context.
- ``kv``, ``streams``: KV buckets and streams created idempotently with the settings the code
  relies on (an existing stream whose retention or subjects differ is refused).
- ``leases``: shard leases (create / update-with-revision / delete-with-revision), the epoch as
  fencing token, local deadlines safe against clock skew, a balancer over the live members.
- ``registry``: node heartbeats with endpoints and load; ``best_broker()`` for login.
- ``accepted`` (ingest -> persister, ``hubbub.handoffs.AcceptedLog``): accepted messages on
  JetStream ``hubbub.accepted.<shard>``, deduplicated by ``Nats-Msg-Id``; a device's PUBLISH is
  acknowledged once the stream holds its message.
- ``intake`` (``AcceptedSource``): the persister's side under lease group ``persister``: on
  gaining a shard, fence the store with the epoch, then read the shard's consumer from its ack
  floor; batches carry ``Fence(shard, epoch)`` and are acked only after what follows a commit.
- ``committed``: committed results to JetStream ``hubbub.committed.<shard>`` (for notifiers)
  and commit results to the ``Hubbub-Reply-To`` of a process waiting on a REST submit.
- ``inbox``, ``node_inbox`` (``hubbub.connections.Inboxes``): events to a user's devices over
  core NATS ``hubbub.inbox.<uid>``, at most once on the wire; a broker node subscribes while it
  holds one of the user's devices (before the device's CONNACK); ``hubbub.device.ended`` and
  ``hubbub.membership.changed`` reach every node.
- ``inbox_resync``: after a broker node's NATS connection comes back, a ``resync`` inbox event
  to every user it holds (paced), so their devices catch up on what the gap lost.
- ``presence_writer``, ``presence_node``, ``presence_mirror`` (``hubbub.presence``): one writer
  per user shard under lease group ``presence`` decides online/offline (grace included) from
  the nodes' reports and resyncs, and writes each change to the ``hubbub_presence`` bucket;
  nodes apply changes to their retained presence, readers (API, notifier) keep a mirror.
- ``push_feed`` (``hubbub.push_feed.CommittedFeed``): notifiers under lease group ``notifier``
  read the committed stream per shard and ack a batch only when its pushes are over.

Newer NATS servers would help: 2.10 (subject transforms to shard a stream server-side by
``partition(n, ...)``, multiple filter subjects per consumer, KV watch and keys with several
filters); 2.11 (per-message TTL ``Nats-TTL``, so lease and heartbeat TTLs need not be one
bucket's max age; KV limit markers ``subject_delete_marker_ttl``, so an expired lease or node
wakes watchers instead of being found by polling; the consumer priority groups / pinned client
for one active consumer per shard); 2.12 (atomic batch publish, for a persister's batch of
commits).
"""
