"""The account store's answer at CONNECT, read on a SQLite connection of its own, and batched.

``SqlDeviceSessions(own_sqlite_reader=True)`` (what the launcher builds) reads the devices table
with the standard library's ``sqlite3`` on a thread of its own, not through the engine: its
answers must be the store's, a sign-out must bite at the very next question, and concurrent
questions must still be asked together (``BatchedLookup``), one caller giving up without
taking its batch-mates' answer with it. ``close`` (at shutdown) ends its thread and connection.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Collection

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from api import SqlDeviceSessions
from api.store.batched import BatchedLookup
from tests.support.api import ApiClient, Login, sign_in_questions
from tests.support.platform import Platform


def _user(login: Login) -> int:
    return int(login.user_id)


async def _ask(platform: Platform, questions: list[tuple[int, str]]) -> list[bool]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{platform.data_dir / 'hubbub.db'}")
    try:
        devices = SqlDeviceSessions(async_sessionmaker(engine), own_sqlite_reader=True)
        try:
            return list(await asyncio.gather(*(devices.is_signed_in(u, d) for u, d in questions)))
        finally:
            await devices.close()
    finally:
        await engine.dispose()


def test_the_own_reader_answers_as_the_store(platform: Platform, api: ApiClient) -> None:
    questions, answers = sign_in_questions(api)
    assert asyncio.run(_ask(platform, questions)) == answers


def test_a_sign_out_bites_at_the_next_question(platform: Platform, api: ApiClient) -> None:
    login = api.new_user()
    question = [(_user(login), login.device_id)]

    async def before_and_after() -> tuple[list[bool], list[bool]]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{platform.data_dir / 'hubbub.db'}")
        try:
            devices = SqlDeviceSessions(async_sessionmaker(engine), own_sqlite_reader=True)
            before = [await devices.is_signed_in(*question[0])]
            response = await asyncio.to_thread(api.http.post, "/v1/auth/logout", headers=login.headers)
            assert response.status_code == 204
            after = [await devices.is_signed_in(*question[0])]  # the same connection, asked again
            await devices.close()
            return before, after
        finally:
            await engine.dispose()

    assert asyncio.run(before_and_after()) == ([True], [False])


def test_concurrent_lookups_are_one_load_and_a_caller_giving_up_takes_no_answer_away() -> None:
    loads: list[list[str]] = []

    async def load(keys: Collection[str]) -> dict[str, int]:
        loads.append(sorted(keys))
        await asyncio.sleep(0)
        return {key: len(key) for key in keys if key != "missing"}

    async def run() -> tuple[list[int | None], bool]:
        lookup: BatchedLookup[str, int] = BatchedLookup(load)
        quitter = asyncio.ensure_future(lookup.get("bb"))
        asked = [lookup.get(key) for key in ("a", "bb", "missing", "bb")]
        quitter.cancel()
        answers = await asyncio.gather(*asked)
        return list(answers), quitter.cancelled()

    answers, cancelled = asyncio.run(run())
    assert answers == [1, 2, None, 2]
    assert cancelled
    assert loads == [["a", "bb", "missing"]]


def test_a_failed_load_fails_its_batch_only() -> None:
    async def load(keys: Collection[str]) -> dict[str, int]:
        if "bad" in keys:
            raise RuntimeError("the store is down")
        return dict.fromkeys(keys, 1)

    async def run() -> int | None:
        lookup: BatchedLookup[str, int] = BatchedLookup(load)
        with pytest.raises(RuntimeError, match="down"):
            await lookup.get("bad")
        return await lookup.get("good")

    assert asyncio.run(run()) == 1


def _reader_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("device-sessions")]


def test_close_ends_the_readers_thread_and_a_question_after_it_fails_clearly(
    platform: Platform, api: ApiClient
) -> None:
    login = api.new_user()
    question = (_user(login), login.device_id)

    async def ask_close_ask() -> tuple[bool, list[str]]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{platform.data_dir / 'hubbub.db'}")
        try:
            devices = SqlDeviceSessions(async_sessionmaker(engine), own_sqlite_reader=True)
            answer = await devices.is_signed_in(*question)
            running = _reader_threads()
            await devices.close()
            await devices.close()  # idempotent
            with pytest.raises(RuntimeError, match="closed"):
                await devices.is_signed_in(*question)
            return answer, running
        finally:
            await engine.dispose()

    answer, running = asyncio.run(ask_close_ask())
    assert answer
    assert running  # it had a thread of its own
    assert _reader_threads() == []
