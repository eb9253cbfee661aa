"""What a push says, and making it fit: every provider caps a payload at about 4 KB of bytes.

The cap counts bytes of the *whole* provider payload (JSON keys, ids, the token for FCM), not
characters of the text, and a message may hold 100,000 characters of multi-byte UTF-8. So the
text is fitted against the provider's own ``render``: a binary search for the longest prefix
whose rendered payload fits, cut where no character is split (not even a ZWJ emoji sequence,
a flag or a combining accent), then an ellipsis. The count prefix of a coalesced push ("3 new
messages: ") is never cut; the title is cut only when an empty body still does not fit.
"""

from __future__ import annotations

import dataclasses
import unicodedata

from notifier.providers.base import Notification, PushProvider

__all__ = [
    "ELLIPSIS",
    "MAX_TITLE_CHARS",
    "cut_text",
    "fit_notification",
    "notification_body",
    "notification_title",
    "safe_cut",
]

ELLIPSIS = "\u2026"
MAX_TITLE_CHARS = 120
_JOINERS = frozenset({0x200D, 0x20E3})  # zero-width joiner, combining enclosing keycap
_ZWJ = 0x200D
_EXTENDERS = (
    range(0xFE00, 0xFE10),  # variation selectors (emoji vs text presentation)
    range(0x1F3FB, 0x1F400),  # skin-tone modifiers
    range(0xE0020, 0xE0080),  # tag sequences (subdivision flags)
)
_REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)


def notification_title(sender_name: str, conversation_title: str | None) -> str:
    """The sender's display name, with the group's title for a group ("Ann · Climbing")."""
    title = sender_name if not conversation_title else f"{sender_name} \u00b7 {conversation_title}"
    return cut_text(title, MAX_TITLE_CHARS)


def notification_body(text: str, count: int) -> tuple[str, str]:
    """``(prefix, text)``: the prefix is kept whole when fitting, the text may be cut.

    A coalesced push (``count`` > 1) says how many messages it stands for, then the last text.
    """
    if count <= 1:
        return "", text
    return f"{count} new messages: ", text


def _extends_previous(char: str) -> bool:
    """True for a code point that belongs to the grapheme before it (UAX #29's Extend, roughly)."""
    point = ord(char)
    return (
        unicodedata.category(char) in {"Mn", "Me", "Mc"}
        or point in _JOINERS
        or any(point in extenders for extenders in _EXTENDERS)
    )


def _regional_indicator(char: str) -> bool:
    return ord(char) in _REGIONAL_INDICATORS


def safe_cut(text: str, end: int) -> int:
    """The largest index ``<= end`` that does not split a user-perceived character."""
    end = max(0, min(end, len(text)))
    while 0 < end < len(text) and (_extends_previous(text[end]) or ord(text[end - 1]) == _ZWJ):
        end -= 1
    if 0 < end < len(text) and _regional_indicator(text[end]) and _regional_indicator(text[end - 1]):
        run = 0
        while end - run - 1 >= 0 and _regional_indicator(text[end - run - 1]):
            run += 1
        if run % 2 == 1:  # the cut would split a flag (a pair of regional indicators)
            end -= 1
    if 0 < end < len(text) and text[end - 1] == "\r" and text[end] == "\n":
        end -= 1
    return end


def cut_text(text: str, max_chars: int) -> str:
    """``text`` if it has at most ``max_chars`` characters, else a safe prefix and an ellipsis."""
    if len(text) <= max_chars:
        return text
    end = safe_cut(text, max(0, max_chars - 1))
    return text[:end].rstrip() + ELLIPSIS


def _truncated(text: str, keep: int) -> str:
    if keep >= len(text):
        return text
    return text[: safe_cut(text, keep)].rstrip() + ELLIPSIS


def _fits(provider: PushProvider, notification: Notification) -> bool:
    return len(provider.render(notification)) <= provider.max_payload_bytes


def _longest_fitting(
    provider: PushProvider, notification: Notification, prefix: str, text: str, *, in_title: bool
) -> Notification | None:
    """The notification with its body (or title) ``prefix + text`` cut as little as possible."""

    def candidate(keep: int) -> Notification:
        value = prefix + _truncated(text, keep)
        if in_title:
            return dataclasses.replace(notification, title=value)
        return dataclasses.replace(notification, body=value)

    # Every character costs at least one byte, so no more than the limit's worth can fit.
    low, high = 0, min(len(text), provider.max_payload_bytes)
    if not _fits(provider, candidate(low)):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if _fits(provider, candidate(middle)):
            low = middle
        else:
            high = middle - 1
    return candidate(low)


def fit_notification(notification: Notification, provider: PushProvider, keep: int = 0) -> Notification:
    """``notification`` with its text cut until ``provider.render`` fits ``max_payload_bytes``.

    ``keep`` leading characters of the body (a coalesced push's count) are never cut. When not
    even an empty body fits, the title is cut too; if that still does not fit (huge ids?) the
    notification is returned as small as it gets and the provider refuses it as too large.
    """
    if _fits(provider, notification):
        return notification
    prefix, text = notification.body[:keep], notification.body[keep:]
    fitted = _longest_fitting(provider, notification, prefix, text, in_title=False)
    if fitted is not None:
        return fitted
    bodiless = dataclasses.replace(notification, body=prefix + (ELLIPSIS if text else ""))
    fitted = _longest_fitting(provider, bodiless, "", notification.title, in_title=True)
    return fitted if fitted is not None else dataclasses.replace(bodiless, title="")
