"""The notifier: pushes committed messages to recipients with no online device.

The caller (the component that sees committed messages and knows presence, mutes and tokens)
builds a ``PushJob`` per message and hands it to ``Dispatcher.enqueue``, which never blocks;
the dispatcher coalesces bursts, fits payloads to 4 KB, sends through one provider per push
service (APNs, FCM, Web Push, a webhook, or the log when nothing is configured), retries
transient failures, hands dead tokens back for removal and counts everything in ``PushMetrics``.

Modules: ``jobs`` (what to push, and what a batch still owes), ``dispatcher`` (the engine),
``coalesce``, ``lanes``, ``retry``, ``payload``, ``deliveries`` (two-phase claims: a push at most
once per message and token across restarts and notifiers, none lost when one dies), ``metrics``,
``providers`` (``base``, ``apns``, ``fcm``, ``webpush`` with ``vapid`` and ``ece``, ``webhook``,
``log``), and ``planner`` (a ``hubbub.push_feed.CommittedFeed``'s batches to jobs, each batch
settled once its pushes are over). Import what you need from those
modules; this package imports nothing on purpose. ``migrations`` holds the ``deliveries``
branch of the schema (``n0001`` the table, ``n0002`` its settled column).
"""

from pathlib import Path

__all__ = ["MIGRATIONS"]

MIGRATIONS = Path(__file__).with_name("migrations")
