"""Jobs, tokens and waits the dispatcher's tests share (the fixtures are in ``conftest``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from hubbub.envelope import CommittedMessage
from hubbub.stores import PushRecipient, PushToken
from notifier.jobs import Outstanding, PushJob
from tests.notifier.conftest import apns_token
from tests.notifier.http_services import WebhookCall, WebhookReceiver

__all__ = ["PATIENCE", "apple", "hook", "job", "message", "next_call", "to", "within"]

_T = TypeVar("_T")
PATIENCE = 10.0  # a bound on waiting for an event, never a measurement


def message(
    message_id: int, text: str = "hi", conversation_id: int = 4200, seq: int | None = None
) -> CommittedMessage:
    return CommittedMessage(
        conversation_id=conversation_id,
        message_id=message_id,
        seq=message_id if seq is None else seq,
        sender_id=7,
        cmid=f"c{message_id}",
        text=text,
        created_at_ms=1_800_000_000_000,
    )


def hook(name: str) -> PushToken:
    return PushToken(token_id=f"hook-{name}", provider="webhook", value=name)


def apple(name: str) -> PushToken:
    return PushToken(token_id=f"apns-{name}", provider="apns", value=apns_token(name))


def job(
    msg: CommittedMessage,
    *recipients: PushRecipient,
    title: str | None = None,
    outstanding: Outstanding | None = None,
) -> PushJob:
    return PushJob(
        message=msg,
        sender_name="Ann",
        recipients=recipients,
        conversation_title=title,
        outstanding=outstanding,
    )


def to(user_id: int, *tokens: PushToken, badge: int = 1) -> PushRecipient:
    return PushRecipient(user_id=user_id, badge=badge, tokens=tokens)


async def within(awaitable: Awaitable[_T]) -> _T:
    async with asyncio.timeout(PATIENCE):
        result: _T = await awaitable
        return result


async def next_call(receiver: WebhookReceiver) -> WebhookCall:
    return await within(receiver.calls.get())
