"""The notifier's counters, exposed in the Prometheus text format (the API serves ``/metrics``).

Built on ``prometheus_client`` rather than a hand-written renderer: the exposition format's
escaping, ``# HELP``/``# TYPE`` lines and ``_total`` naming are its job, it is typed and has no
dependencies. The counters live in their own ``CollectorRegistry`` (not the process-global
default), so several dispatchers — in tests, or one per shard — never collide; pass a shared
registry to publish them together with other components' metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "PushMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST


class PushMetrics:
    """Counters per provider: sent, failed, retried, removed; plus dropped, coalesced, duplicate."""

    def __init__(self, registry: CollectorRegistry | None = None, namespace: str = "hubbub") -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._prefix = f"{namespace}_push_"

        def counter(name: str, documentation: str, labels: tuple[str, ...] = ("provider",)) -> Counter:
            return Counter(
                name, documentation, labels, namespace=namespace, subsystem="push", registry=self.registry
            )

        self._sent = counter("sent", "Pushes a provider accepted.")
        self._failed = counter("failed", "Pushes given up: permanent failures and retries exhausted.")
        self._retried = counter("retried", "Attempts that failed transiently and were scheduled again.")
        self._removed = counter("tokens_removed", "Tokens a provider rejected for good, handed for removal.")
        self._dropped = counter("dropped", "Work dropped because a queue was full.", ("stage",))
        self._coalesced = counter("coalesced", "Pushes folded into a later push of the same burst.", ())
        self._duplicates = counter("duplicates", "Pushes skipped: the message went to the token already.", ())

    def sent(self, provider: str) -> None:
        """Count a delivered push."""
        self._sent.labels(provider).inc()

    def failed(self, provider: str) -> None:
        """Count a push given up on."""
        self._failed.labels(provider).inc()

    def retried(self, provider: str) -> None:
        """Count a scheduled retry."""
        self._retried.labels(provider).inc()

    def removed(self, provider: str) -> None:
        """Count a rejected token."""
        self._removed.labels(provider).inc()

    def dropped(self, stage: str) -> None:
        """Count work dropped at ``stage`` (``intake``, ``provider``, ``retry``)."""
        self._dropped.labels(stage).inc()

    def coalesced(self) -> None:
        """Count a message folded into a burst's later push."""
        self._coalesced.inc()

    def duplicate(self) -> None:
        """Count a push skipped by the delivery log."""
        self._duplicates.inc()

    def value(self, name: str, **labels: str) -> float:
        """A counter's current value, e.g. ``value("sent", provider="apns")`` (0 if never set)."""
        sample = self.registry.get_sample_value(f"{self._prefix}{name}_total", labels)
        return 0.0 if sample is None else sample

    def render(self) -> bytes:
        """The text exposition of every metric in the registry (``Content-Type: CONTENT_TYPE``)."""
        return generate_latest(self.registry)
