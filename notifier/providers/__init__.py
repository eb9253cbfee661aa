"""Push providers behind one base class: APNs, FCM, Web Push, a webhook, and the log."""

from notifier.providers.base import Notification, OutcomeKind, PushOutcome, PushProvider

__all__ = ["Notification", "OutcomeKind", "PushOutcome", "PushProvider"]
