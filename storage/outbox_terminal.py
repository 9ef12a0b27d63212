"""The terminal's side of the outbox: messages for `yinjian chat` members are shown, not sent."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import OutboxAttempt, OutboxMessage, OutboxStatus


async def queued_for(session: AsyncSession, *, member_id: int) -> list[OutboxMessage]:
    """Messages waiting for this member, most important first, then oldest first."""
    stmt = (
        sa.select(OutboxMessage)
        .where(OutboxMessage.member_id == member_id,
               OutboxMessage.status.in_([OutboxStatus.PENDING, OutboxStatus.HELD]))  # type: ignore[attr-defined]
        .order_by(OutboxMessage.priority, OutboxMessage.id)  # type: ignore[arg-type]
    )
    return list((await session.execute(stmt)).scalars())


async def mark_shown(session: AsyncSession, *, messages: list[OutboxMessage], now: datetime) -> None:
    """The terminal displayed these: they count as delivered and are never shown again."""
    for message in messages:
        message.status = OutboxStatus.SENT
        message.sent_at = now
        message.attempts += 1
        session.add(message)
        session.add(OutboxAttempt(outbox_id=message.id or 0, attempted_at=now, errcode=0,
                                  outcome="terminal"))
