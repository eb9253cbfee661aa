"""Queries of conversations, members, read markers and device cursors (flushed; the caller commits)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.db.models import Conversation, Device, DeviceCursor, Member, User
from api.state import StatementReader

__all__ = [
    "ADMIN",
    "DIRECT",
    "GROUP",
    "MEMBER",
    "add_member",
    "create_direct",
    "create_group",
    "cursors",
    "direct_key",
    "get_membership",
    "member_count",
    "members",
    "memberships",
    "move_cursors",
    "remove_member",
    "sync_positions",
    "users_by_id",
]

DIRECT = "direct"
GROUP = "group"
ADMIN = "admin"
MEMBER = "member"
_ID_CHUNK = 500  # ids per IN (...): well inside every database's bound-parameter limit


def direct_key(a: int, b: int) -> str:
    """The one key of the pair's 1:1 conversation, whoever asks."""
    low, high = sorted((a, b))
    return f"{low}:{high}"


async def create_direct(
    session: AsyncSession, *, conversation_id: int, me: int, other: int, now: int
) -> tuple[Conversation, bool]:
    """The pair's conversation, created if it did not exist; ``True`` when created now."""
    key = direct_key(me, other)
    existing = await session.scalar(select(Conversation).where(Conversation.direct_key == key))
    if existing is not None:
        return existing, False
    conversation = Conversation(
        id=conversation_id, kind=DIRECT, title=None, direct_key=key, created_by=me, created_at=now
    )
    session.add(conversation)
    session.add_all(
        Member(conversation_id=conversation_id, user_id=user, role=MEMBER, joined_at=now, last_read_seq=0)
        for user in {me, other}
    )
    try:
        await session.flush()
    except IntegrityError:
        # The other side created it at the same moment: theirs is the one.
        await session.rollback()
        winner = await session.scalar(select(Conversation).where(Conversation.direct_key == key))
        if winner is None:
            raise
        return winner, False
    return conversation, True


async def create_group(
    session: AsyncSession,
    *,
    conversation_id: int,
    creator: int,
    title: str,
    member_ids: Sequence[int],
    now: int,
) -> Conversation:
    """A group whose creator is its admin."""
    conversation = Conversation(
        id=conversation_id, kind=GROUP, title=title, direct_key=None, created_by=creator, created_at=now
    )
    session.add(conversation)
    session.add(
        Member(conversation_id=conversation_id, user_id=creator, role=ADMIN, joined_at=now, last_read_seq=0)
    )
    session.add_all(
        Member(conversation_id=conversation_id, user_id=user, role=MEMBER, joined_at=now, last_read_seq=0)
        for user in member_ids
        if user != creator
    )
    await session.flush()
    return conversation


async def users_by_id(session: AsyncSession, user_ids: Sequence[int]) -> dict[int, User]:
    """The users among ``user_ids`` that exist."""
    ids = list(user_ids)
    found: dict[int, User] = {}
    for start in range(0, len(ids), _ID_CHUNK):
        query = select(User).where(User.id.in_(ids[start : start + _ID_CHUNK]))
        found.update({user.id: user for user in await session.scalars(query)})
    return found


async def get_membership(session: AsyncSession, conversation_id: int, user_id: int) -> Member | None:
    """``user_id``'s membership of ``conversation_id``."""
    return await session.get(Member, (conversation_id, user_id))


async def members(session: AsyncSession, conversation_id: int) -> list[Member]:
    """Everyone in ``conversation_id``, earliest first."""
    query = (
        select(Member)
        .where(Member.conversation_id == conversation_id)
        .order_by(Member.joined_at, Member.user_id)
    )
    return list(await session.scalars(query))


async def members_of(session: AsyncSession, conversation_ids: Sequence[int]) -> dict[int, list[Member]]:
    """Everyone in each of ``conversation_ids``, earliest first, in one query per chunk of ids."""
    found: dict[int, list[Member]] = {}
    for start in range(0, len(conversation_ids), _ID_CHUNK):
        query = (
            select(Member)
            .where(Member.conversation_id.in_(conversation_ids[start : start + _ID_CHUNK]))
            .order_by(Member.joined_at, Member.user_id)
        )
        for member in await session.scalars(query):
            found.setdefault(member.conversation_id, []).append(member)
    return found


async def member_count(session: AsyncSession, conversation_id: int) -> int:
    """How many members ``conversation_id`` has."""
    query = select(func.count()).select_from(Member).where(Member.conversation_id == conversation_id)
    return int(await session.scalar(query) or 0)


async def memberships(session: AsyncSession, user_id: int) -> list[tuple[Conversation, Member]]:
    """Every conversation of ``user_id`` with its membership row."""
    query = (
        select(Conversation, Member)
        .join(Member, Member.conversation_id == Conversation.id)
        .where(Member.user_id == user_id)
    )
    return [(conversation, member) for conversation, member in await session.execute(query)]


async def add_member(session: AsyncSession, *, conversation_id: int, user_id: int, now: int) -> None:
    """Add ``user_id``."""
    session.add(
        Member(conversation_id=conversation_id, user_id=user_id, role=MEMBER, joined_at=now, last_read_seq=0)
    )
    await session.flush()


async def remove_member(session: AsyncSession, membership: Member) -> None:
    """Remove a member; a group left without an admin gets its earliest member as one."""
    conversation_id = membership.conversation_id
    await session.delete(membership)
    await session.flush()
    remaining = await members(session, conversation_id)
    if remaining and not any(member.role == ADMIN for member in remaining):
        remaining[0].role = ADMIN
        await session.flush()


async def cursors(session: AsyncSession, device_id: str) -> dict[int, int]:
    """The device's sync cursor per conversation."""
    rows = await session.execute(
        select(DeviceCursor.conversation_id, DeviceCursor.seq).where(DeviceCursor.device_id == device_id)
    )
    return {int(cid): int(seq) for cid, seq in rows.tuples()}


# Built once: every sync asks it, and building the join is most of what it costs in Python.
_SYNC_POSITIONS = (
    select(Device.id, Member.conversation_id, DeviceCursor.seq)
    .select_from(Device)
    .outerjoin(Member, Member.user_id == Device.user_id)
    .outerjoin(
        DeviceCursor,
        and_(DeviceCursor.device_id == Device.id, DeviceCursor.conversation_id == Member.conversation_id),
    )
    .where(Device.id == bindparam("device_id"), Device.user_id == bindparam("user_id"))
)


async def sync_positions(reads: StatementReader, device_id: str, user_id: int) -> dict[int, int] | None:
    """Each conversation of the device's user with the device's cursor in it (0: none yet), in one query.

    ``None`` when the device is not ``user_id``'s (signed out, or its account deleted: devices go
    with their user). What ``GET /v1/sync`` needs from the account store, and all of it: one
    statement, run by ``reads`` (straight on the driver where it can: every device of a failed
    broker node asks it at once).
    """
    rows = await reads.rows(_SYNC_POSITIONS, {"device_id": device_id, "user_id": user_id})
    if not rows:
        return None
    return {int(cid): int(seq or 0) for _, cid, seq in rows if cid is not None}


async def move_cursors(session: AsyncSession, device_id: str, positions: dict[int, int]) -> None:
    """Move cursors forward (never back)."""
    for conversation_id, seq in positions.items():
        cursor = await session.get(DeviceCursor, (device_id, conversation_id))
        if cursor is None:
            session.add(DeviceCursor(device_id=device_id, conversation_id=conversation_id, seq=seq))
        elif seq > cursor.seq:
            cursor.seq = seq
    await session.flush()
