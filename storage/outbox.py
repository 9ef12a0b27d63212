"""The outbox: rows written in the same transaction as the change that causes them."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.replies import ChoicesReply, NoReply, Reply, reply_to_json
from storage.models import OutboxMessage, OutboxStatus
from storage.sql import insert_ignore

_outbox = OutboxMessage.__table__  # type: ignore[attr-defined]

# Lower goes first (PRODUCT.md, the messaging budget).
PRIORITY_REPLY = 0  # a late answer to something the member just wrote
PRIORITY_DECISION = 10
PRIORITY_FOLLOW_UP = 20
PRIORITY_DIGEST = 30
PRIORITY_NUDGE = 40


async def enqueue(
    session: AsyncSession,
    *,
    member_id: int,
    reply: Reply,
    now: datetime,
    priority: int = PRIORITY_DECISION,
    dedupe_key: str | None = None,
) -> bool:
    """Queue a message for a member; False when nothing was queued (empty, or key seen before)."""
    if isinstance(reply, NoReply):
        return False
    values = {
        "member_id": member_id,
        "kind": "choices" if isinstance(reply, ChoicesReply) else "text",
        "payload": reply_to_json(reply),
        "priority": priority,
        "status": OutboxStatus.PENDING,
        "attempts": 0,
        "created_at": now,
        "next_attempt_at": now,
        "dedupe_key": dedupe_key,
    }
    if dedupe_key is None:
        await session.execute(sa.insert(_outbox).values(**values))
        return True
    return await insert_ignore(session, _outbox, values, conflict=["dedupe_key"])


async def release_held(session: AsyncSession, *, member_id: int, now: datetime) -> int:
    """The member wrote again, so their window is open: held messages become due."""
    result = await session.execute(
        sa.update(_outbox)
        .where(_outbox.c.member_id == member_id, _outbox.c.status == OutboxStatus.HELD)
        .values(status=OutboxStatus.PENDING, next_attempt_at=now)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
