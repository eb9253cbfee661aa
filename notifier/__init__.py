"""The notifier: pushes committed messages to recipients with no online device.

The caller (the component that sees committed messages and knows presence, mutes and tokens)
builds a ``PushJob`` per message and hands it to ``Dispatcher.enqueue``, which never blocks;
the dispatcher coalesces bursts, fits payloads to 4 KB, sends through one provider per push
service (APNs, FCM, Web Push, a webhook, or the log when nothing is configured), retries
transient failures, hands dead tokens back for removal and counts everything in ``PushMetrics``.

Modules: ``jobs`` (what to push), ``dispatcher`` (the engine), ``coalesce``, ``lanes``,
``retry``, ``payload``, ``deliveries`` (at-most-once across restarts), ``metrics``, and
``providers`` (``base``, ``apns``, ``fcm``, ``webpush`` with ``vapid`` and ``ece``, ``webhook``,
``log``), and ``planner`` (committed messages to jobs). Import what you need from those
modules; this package imports nothing on purpose. ``migrations`` holds the ``deliveries``
branch of the schema.
"""

from pathlib import Path

__all__ = ["MIGRATIONS"]

MIGRATIONS = Path(__file__).with_name("migrations")
