"""One future's outcome passed on to another: cancelled, raised, or answered.

The connect path waits with futures and callbacks, not tasks (``broker_plugins/broker.py``): a
CONNECT's step ends when the account store's answer does, that answer when its batch does
(``api/store/sessions.py``), and ``SignedInDevices`` (``hubbub/sessions.py``) answers for the
store. Each hop settles one future from another the same way, and each must get the same three
cases right: the source cancelled (cancel the target), failed (the target raises the same
error), or answered; and none may settle a target that is done already (its waiter gave up:
``set_result`` would raise ``InvalidStateError`` inside a callback). Compiled with mypyc, as its
callers on the connect path are (``build_compiled.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

__all__ = ["forward", "passed_failure"]

T = TypeVar("T")


def passed_failure(target: asyncio.Future[Any], source: asyncio.Future[Any]) -> bool:
    """Whether ``source`` (done) was cancelled or failed; if so ``target`` is too, unless already done.

    ``False``: ``source`` holds an answer, for the caller to act on.
    """
    if source.cancelled():
        target.cancel()  # a no-op on a done future
        return True
    failed = source.exception()
    if failed is None:
        return False
    if not target.done():
        target.set_exception(failed)
    return True


def forward(target: asyncio.Future[T], source: asyncio.Future[T]) -> None:
    """``target`` ends as ``source`` (done) did: a done callback, ``partial(forward, target)``."""
    if not target.done() and not passed_failure(target, source):
        target.set_result(source.result())
