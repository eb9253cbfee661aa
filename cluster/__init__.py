"""The cross-node engine: NATS (JetStream) under Hubbub when it runs as a cluster.

One node needs none of this (``hubbub up``: in-process hand-offs, no other server). A cluster is
chosen by ``HUBBUB_NATS_URL``; this package holds the NATS side, written to what Debian's
``nats-server`` 2.9 offers: streams, consumers, ``Nats-Msg-Id`` dedupe, KV with compare-and-set
and a per-bucket max age.

Built so far (the foundations, not yet wired into any process):

- ``connection``: one supervised connection per process (reconnect forever, PING-based dead
  connection detection, state for ``/healthz``) and its JetStream context.
- ``kv``: KV buckets created with the settings the code relies on, and snapshots of their live
  values (2.9 expires entries silently, so "alive" means "present in a fresh snapshot"), read
  without a consumer so they keep working while a NATS server is down.
- ``leases``: shard leases (create / update-with-revision / delete-with-revision), the epoch as
  fencing token, local deadlines that are safe against clock skew, and a balancer that spreads
  the fixed shards (``hubbub.shards``) over the live members of a group, so persisters and
  notifiers can be added and removed while running.
- ``registry``: node heartbeats with endpoints and load, expiring within seconds; the directory
  answering ``best_broker()`` for login (service discovery).

What the next step wires (each hand-off a Protocol in the shared domain, with an in-process and a
NATS implementation and one contract suite run against both):

- Ingest -> persister: accepted messages are published to a JetStream stream (R3, file storage)
  on ``hubbub.accepted.<shard>`` with ``Nats-Msg-Id = <conversation>:<sender>:<cmid>`` so a resend
  inside the duplicate window is dropped by NATS (the store's unique key is the real guard);
  the broker PUBACKs the device when the publish ack arrives.
- Persisters hold leases of group ``persister``; on gaining a shard: fence the store with the
  epoch, read the last committed seq, consume the shard's subject with a durable consumer per
  shard from its ack floor, commit batches with the epoch checked in the same write, ack after
  the commit; on losing it, stop the consumer.
- Committed delivery: at most once on the wire over core NATS, one subject per recipient user
  (``hubbub.deliver.user.<uid>``) that a broker node subscribes to while it holds one of that
  user's devices; devices catch up from history on a seq gap.
- Presence: connect/disconnect events go to ``hubbub.presence.<user shard>``; the holder of that
  shard's lease (group ``presence``) is the single writer of online/offline, grace included, and
  publishes changes every broker node applies to its retained ``presence/{uid}``. The registry
  tells it which nodes died, so their devices go offline after the grace period.
- Notifiers hold leases of group ``notifier`` and consume committed messages per shard.
- The API anywhere: sends, conversation events and presence reads go through the same
  Protocols' NATS implementations; login picks the broker with ``NodeDirectory.best_broker()``.

Newer NATS servers would help: 2.10 (subject transforms to shard a stream server-side by
``partition(n, ...)``, multiple filter subjects per consumer, KV watch and keys with several
filters); 2.11 (per-message TTL ``Nats-TTL``, so lease and heartbeat TTLs need not be one
bucket's max age; KV limit markers ``subject_delete_marker_ttl``, so an expired lease or node
wakes watchers instead of being found by polling; the consumer priority groups / pinned client
for one active consumer per shard); 2.12 (atomic batch publish, for a persister's batch of
commits).
"""
