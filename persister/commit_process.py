"""SQLite commits in a process of their own.

Why a process: in the broker's process a commit thread shares the GIL with the event loop.
In the chat benchmark the platform was at the limit of that one GIL, and a commit-free
run delivered 29k messages/s against 17k with commits: the statements, the binding of
every row and the WAL writes all competed with ingest and fan-out. A child process does
them on the other core; the broker only encodes the batch and decodes the answer.

The parent (``ProcessCommitter``) talks to the child (``serve``) over the child's stdin and
stdout in frames: a 4-byte big-endian length, then orjson. A request is a batch, each
message ``[conversation_id, message_id, sender_id, device_id, cmid, text, created_at_ms]``;
the reply is ``{"results": [...]}`` with, per message, its new ``seq`` or, for a resend, the
stored original as ``[message_id, seq, text, created_at_ms]``, or ``{"error": "..."}``.
The child is the single writer and keeps the seq cache. It is started as soon as the
committer is made inside a running event loop (the platform's start-up), so the first message
does not wait for the child's imports (seconds on a busy machine). If it dies, the batches in
flight fail and the next batch starts a new child. None of them was acknowledged to its senders,
so they resend; a batch the child had committed before dying is then answered as a resend
(the original ``ack``), and the other members, who had no live event for it, get it through
sync or when the next message shows them the gap — as after a crash of the whole process.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import struct
from collections import deque
from collections.abc import Sequence
from typing import IO, Any, cast

import orjson
from sqlalchemy import Engine

from hubbub.envelope import AcceptedMessage, CommitResult, CommittedMessage
from hubbub.errors import CommitFailed
from hubbub.failure_log import FailureLog, describe_failure
from hubbub.stores import Fence
from persister.sql_commit import BatchCommitter, Outcome, SqliteStatements, commit_outcomes, committed_results
from persister.sql_fencing import single_node

__all__ = ["ProcessCommitter", "serve"]

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("!I")
_STOP_TIMEOUT_S = 10.0
_ENDED = "the writer process ended; the next batch starts another"


def serve(engine: Engine, requests: IO[bytes], replies: IO[bytes]) -> None:
    """The child: commit each batch read from ``requests`` and answer on ``replies``, until EOF."""
    committer = BatchCommitter()
    failures = FailureLog(logger, "the writer process's commit")  # a full disk fails every batch
    with engine.connect() as connection:  # the engine's pragmas ran on it; its sqlite3 connection commits
        raw = connection.connection.driver_connection
        if not isinstance(raw, sqlite3.Connection):
            raise TypeError(f"the writer process commits to a SQLite file, not through {type(raw).__name__}")
        statements = SqliteStatements(raw)
        while (body := _read_frame(requests)) is not None:
            batch = [AcceptedMessage(*fields) for fields in orjson.loads(body)]
            try:
                reply: dict[str, Any] = {
                    "results": [_encode_outcome(o) for o in commit_outcomes(committer, statements, batch)]
                }
            except Exception as exc:  # noqa: BLE001 - any failure: answered, and the next batch tried
                # A database's refusal (locked, disk full) is told by its message: no traceback.
                failures.failed(exc, traceback=not isinstance(exc, sqlite3.Error))
                reply = {"error": describe_failure(exc)}  # not str(exc): it holds the statement's values
            else:
                failures.succeeded()
            payload = orjson.dumps(reply)
            replies.write(_HEADER.pack(len(payload)) + payload)  # one write: no frame split in two
            replies.flush()


def _read_frame(stream: IO[bytes]) -> bytes | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    body = stream.read(size)
    return body if len(body) == size else None


def _encode_outcome(outcome: Outcome) -> int | list[Any]:
    if isinstance(outcome, int):  # new: the seq it was given
        return outcome
    return [outcome.message_id, outcome.seq, outcome.text, outcome.created_at_ms]  # a resend: the original


def _encode_request(m: AcceptedMessage) -> list[Any]:
    return [m.conversation_id, m.message_id, m.sender_id, m.sender_device_id, m.cmid, m.text, m.created_at_ms]


def _decode_outcome(accepted: AcceptedMessage, encoded: int | list[Any]) -> Outcome:
    if isinstance(encoded, int):
        return encoded
    message_id, seq, text, created_at_ms = encoded
    a = accepted
    return CommittedMessage(a.conversation_id, message_id, seq, a.sender_id, a.cmid, text, created_at_ms)


class ProcessCommitter:
    """The parent: ships batches to the writer process started with ``command``.

    Several batches may be on their way at once (the persister sends the next while the
    last one commits): the child commits them in the order sent and answers in that order.
    """

    def __init__(self, command: Sequence[str]) -> None:
        self._command = list(command)
        self._child: _Child | None = None
        self._sending = asyncio.Lock()
        # Started now when there is a loop to start it on; else by the first batch.
        self._starting: asyncio.Task[_Child] | None = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._starting = loop.create_task(_Child.start(self._command), name="sqlite-writer-start")

    @property
    def pid(self) -> int | None:
        """The writer process's pid, while one runs."""
        return None if self._child is None else self._child.process_id

    async def commit(
        self, batch: Sequence[AcceptedMessage], *, fence: Fence | None = None
    ) -> list[CommitResult]:
        """See ``hubbub.stores.MessageStore.commit``; raises ``CommitFailed``, at once for a fence."""
        if fence is not None:
            raise single_node(fence)
        if not batch:
            return []
        request = orjson.dumps([_encode_request(message) for message in batch])
        async with self._sending:
            child = await self._running_child()
            reply = child.send(request)
        decoded = orjson.loads(await reply)
        if "error" in decoded:
            raise CommitFailed(f"the writer process failed the batch: {decoded['error']}")
        outcomes = [_decode_outcome(m, r) for m, r in zip(batch, decoded["results"], strict=True)]
        return committed_results(batch, outcomes)

    async def _running_child(self) -> _Child:
        """The live child: the one started early, or a new one if none runs (called under ``_sending``)."""
        starting, self._starting = self._starting, None
        if starting is not None:
            try:
                self._child = await starting
            except OSError as exc:  # could not even be spawned: the batch fails, the next one tries again
                raise CommitFailed(f"the writer process could not start: {exc}") from exc
        if self._child is None or not self._child.alive:
            if self._child is not None:
                await self._child.stop()  # the one that ended: release its pipes
            self._child = await _Child.start(self._command)
        return self._child

    async def fence(self, fence: Fence) -> None:
        """Refused: a SQLite file serves a single node (``persister.sql_fencing.single_node``)."""
        raise single_node(fence)

    async def close(self) -> None:
        """End the writer process: EOF on its stdin, then a kill if it lingers."""
        async with self._sending:
            starting, self._starting = self._starting, None
            if starting is not None:
                try:
                    self._child = await starting
                except OSError:
                    logger.warning("the writer process started early could not start")
            child, self._child = self._child, None
            if child is not None:
                await child.stop()


class _Child(asyncio.SubprocessProtocol):
    """One writer process; its replies are matched to the requests in the order sent.

    A protocol, not streams: each reply's bytes, as the event loop reads them, answer the oldest
    request at once, with no reader task to wake and no ``readexactly`` per header and body. What
    is sent is bounded by the persister (its commits in flight), so writes do not wait to drain.
    """

    def __init__(self) -> None:
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._buffer = b""  # the start of a reply not complete yet
        self._waiting: deque[asyncio.Future[bytes]] = deque()
        self._ended = False  # its stdout closed: no reply comes any more
        self._exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def start(cls, command: Sequence[str]) -> _Child:
        loop = asyncio.get_running_loop()
        _, child = await loop.subprocess_exec(
            cls, *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None
        )
        return child

    @property
    def process_id(self) -> int | None:
        return None if self._transport is None else self._transport.get_pid()

    @property
    def alive(self) -> bool:
        return not self._ended

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The process started: its stdin is where requests go."""
        subprocess = cast("asyncio.SubprocessTransport", transport)
        self._transport = subprocess
        stdin = subprocess.get_pipe_transport(0)
        if stdin is None:
            raise CommitFailed("the writer process has no stdin")
        self._stdin = cast("asyncio.WriteTransport", stdin)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        """Bytes of replies (stdout): each complete one answers the oldest request."""
        del fd  # stdout: stderr is inherited, not piped
        buffer = self._buffer + data if self._buffer else data
        position = 0
        while len(buffer) - position >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, position)
            end = position + _HEADER.size + size
            if len(buffer) < end:
                break
            body = buffer[position + _HEADER.size : end]
            position = end
            if not self._waiting:  # a reply nobody asked for: the child is not ours to trust
                logger.error("the writer process answered a request never sent; ending it")
                self._end()
                if self._transport is not None:
                    self._transport.kill()
                return
            reply = self._waiting.popleft()
            if not reply.done():
                reply.set_result(body)
        self._buffer = buffer[position:]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        """Its stdout closed (it ended, or was killed): the requests still waiting fail."""
        del exc
        if fd == 1:
            self._end()

    def process_exited(self) -> None:
        """The process is gone (what ``stop`` waits for)."""
        if not self._exited.done():
            self._exited.set_result(None)

    def _end(self) -> None:
        self._ended = True
        while self._waiting:
            reply = self._waiting.popleft()
            if not reply.done():
                reply.set_exception(CommitFailed(_ENDED))

    def send(self, request: bytes) -> asyncio.Future[bytes]:
        """Write ``request``; the future is its reply (or ``CommitFailed`` if the child ends)."""
        stdin = self._stdin
        if self._ended or stdin is None or stdin.is_closing():
            raise CommitFailed(_ENDED)
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.append(reply)
        # One write per frame: written apart, the header cost a system call of its own and
        # could wake the child for a frame it cannot read yet.
        stdin.write(_HEADER.pack(len(request)) + request)
        return reply

    async def stop(self) -> None:
        stdin = self._stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()  # EOF: the child commits nothing more and exits
        try:
            await asyncio.wait_for(asyncio.shield(self._exited), _STOP_TIMEOUT_S)
        except TimeoutError:
            logger.warning("writer process %s did not stop; killing it", self.process_id)
            if self._transport is not None:
                self._transport.kill()
            await self._exited
        if self._transport is not None:
            self._transport.close()
        self._end()
