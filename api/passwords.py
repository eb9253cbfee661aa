"""Passwords: which ones are accepted (NIST SP 800-63B), and argon2id hashing off the event loop.

A password is at least 8 characters (the request schema says so) and any characters but
control characters; there are no composition rules. It is refused when it is one of the
30,000 most common passwords of zxcvbn's list (shipped with the library, read offline), one
character repeated or a run like ``12345678`` / ``abcdefgh``, or built from the username or
the service's name. Each refusal names its reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import unicodedata

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.profiles import RFC_9106_LOW_MEMORY
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from hubbub.errors import InvalidInput

__all__ = ["MIN_LENGTH", "Passwords", "check_password"]

MIN_LENGTH = 8
_COMMON = frozenset(FREQUENCY_LISTS["passwords"])
_SERVICE_NAMES = ("hubbub",)
_MIN_RUN = 4  # shorter pieces of a username or run are too common to refuse on


def check_password(password: str, username: str) -> None:
    """Refuse a password an attacker would try early, with ``weak_password`` and the reason."""
    if any(unicodedata.category(char) == "Cc" for char in password):
        _refuse("control_characters", "a password cannot contain control characters (such as NUL)")
    folded = password.casefold()
    if folded in _COMMON or folded.strip() in _COMMON:
        _refuse("common", "this password is one of the most common ones; choose another")
    if _is_run(folded):
        _refuse("repetitive", "a password cannot be one character repeated or a run like 12345678")
    for word in (username.casefold(), *_SERVICE_NAMES):
        if len(word) >= _MIN_RUN and _built_from(folded, word):
            _refuse("contains_username", "a password cannot be built from the username or the service name")


def _refuse(reason: str, message: str) -> None:
    raise InvalidInput(message, code="weak_password", data={"field": "password", "reason": reason})


def _is_run(password: str) -> bool:
    """One character repeated, or a run of code points going up or down by one."""
    steps = {ord(b) - ord(a) for a, b in itertools.pairwise(password)}
    return steps <= {0} or steps in ({1}, {-1})


def _built_from(password: str, word: str) -> bool:
    """``word`` (or its reverse) with fewer than ``MIN_LENGTH`` other characters around it."""
    rest = password
    for piece in (word, word[::-1]):
        rest = rest.replace(piece, "")
    return rest != password and len(rest) < MIN_LENGTH


class Passwords:
    """Hashes and checks passwords in a worker thread so the API keeps serving meanwhile.

    New hashes are argon2id with RFC 9106's second recommended parameters (3 passes, 4 lanes) and
    ``memory_kib`` of memory (``HUBBUB_PASSWORD_HASH_MEMORY_KIB``: 64 MiB unless a test suite
    lowers it). Each stored hash names its own parameters, so hashes made at another cost keep
    verifying.
    """

    def __init__(self, *, memory_kib: int) -> None:
        self._hasher = PasswordHasher.from_parameters(
            dataclasses.replace(RFC_9106_LOW_MEMORY, memory_cost=memory_kib)
        )
        # Checked against when the user does not exist, so both failures cost the same time.
        self._decoy = self._hasher.hash("decoy password for unknown users")

    async def hash(self, password: str) -> str:
        """An argon2id hash of ``password``."""
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; ``None`` (no such user) takes as long and is False."""
        try:
            await asyncio.to_thread(self._hasher.verify, password_hash or self._decoy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return password_hash is not None
