"""The terminal's side of the outbox: messages for `yinjian chat` members are shown, not sent."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlmodel import col

from storage.models import OutboxAttempt, OutboxMessage, OutboxStatus


def queued_for(session: Session, *, member_id: int) -> list[OutboxMessage]:
    """Messages waiting for this member, most important first, then oldest first."""
    stmt = (
        sa.select(OutboxMessage)
        .where(col(OutboxMessage.member_id) == member_id,
               col(OutboxMessage.status).in_([OutboxStatus.PENDING, OutboxStatus.HELD]))
        .order_by(col(OutboxMessage.priority), col(OutboxMessage.id))
    )
    return list((session.execute(stmt)).scalars())


def mark_shown(session: Session, *, messages: list[OutboxMessage], now: datetime) -> None:
    """The terminal displayed these: they count as delivered and are never shown again."""
    for message in messages:
        message.status = OutboxStatus.SENT
        message.sent_at = now
        message.attempts += 1
        session.add(message)
        session.add(OutboxAttempt(outbox_id=message.id or 0, attempted_at=now, errcode=0,
                                  outcome="terminal"))


def take_for(session: Session, *, platform: str, openid: str, now: datetime) -> list[str]:
    """The payloads waiting for a terminal member, marked delivered as they are taken."""
    from storage import members

    member = members.get(session, platform=platform, openid=openid)
    if member is None or member.id is None:
        return []
    queued = queued_for(session, member_id=member.id)
    mark_shown(session, messages=queued, now=now)
    return [message.payload for message in queued]
