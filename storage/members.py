"""Members: recorded on their first push, with the start of their messaging window."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Member, MemberStatus
from storage.sql import dialect, insert_ignore

_member = Member.__table__  # type: ignore[attr-defined]


async def touch(
    session: AsyncSession,
    *,
    platform: str,
    openid: str,
    now: datetime,
    user_message: bool,
    event: bool,
) -> Member:
    """Record the member (first push creates them) and lock their row for this transaction.

    The row lock serialises two pushes from the same member across workers, so a handler never
    races itself; the window timestamps move forward only.
    """
    await insert_ignore(
        session,
        _member,
        {"platform": platform, "openid": openid, "status": MemberStatus.ACTIVE, "created_at": now},
        conflict=["platform", "openid"],
    )
    values: dict[str, datetime] = {}
    if user_message:
        values["last_message_at"] = now
    if event:
        values["last_event_at"] = now
    stmt = sa.select(Member).where(Member.platform == platform, Member.openid == openid)
    if dialect(session) == "postgresql":
        stmt = stmt.with_for_update()
    member = (await session.execute(stmt)).scalar_one()
    for key, value in values.items():
        current = getattr(member, key)
        if current is None or current < value:
            setattr(member, key, value)
    return member


async def get(session: AsyncSession, *, platform: str, openid: str) -> Member | None:
    """The member with this platform id, if they ever wrote."""
    stmt = sa.select(Member).where(Member.platform == platform, Member.openid == openid)
    return (await session.execute(stmt)).scalar_one_or_none()


async def set_lang(session: AsyncSession, *, member: Member, lang: str, explicit: bool) -> None:
    """Set the reply language (explicitly by `lang`, or by the member's first command)."""
    member.lang = lang
    session.add(member)


async def deactivate(session: AsyncSession, *, member: Member, now: datetime) -> None:
    """Unsubscribe: the member stops receiving anything at once."""
    if member.status != MemberStatus.DEACTIVATED:
        member.status = MemberStatus.DEACTIVATED
        member.deactivated_at = now
        session.add(member)


async def reactivate(session: AsyncSession, *, member: Member, now: datetime) -> bool:
    """Follow again; True when the member had been deactivated."""
    if member.status == MemberStatus.DEACTIVATED:
        member.status = MemberStatus.ACTIVE
        member.deactivated_at = None
        session.add(member)
        return True
    return False
