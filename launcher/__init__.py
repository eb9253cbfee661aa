"""The composition root: builds each component from the settings and runs them together.

It is the only package that imports several components; they never import each other.

- ``cli``: the ``hubbub`` command; without ``HUBBUB_NATS_URL`` one node (``platform``), with it
  a cluster process (``cluster_broker``, ``cluster_persister``, ``cluster_notifier``,
  ``cluster_api``), each on ``cluster_node`` (one NATS connection, the registry, leases,
  ``/healthz`` and ``/metrics`` from ``health``, loops kept by ``supervisor``).
- ``foundation`` (secrets, ids, migrated databases) and ``serving`` (uvicorn, the ready line)
  are what every process stands on; ``push`` builds the push providers.
"""
