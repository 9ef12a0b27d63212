"""Deleting a member's personal data (PIPL): `delete me`, and after an unsubscribe's grace period.

Every table that holds a member's data must be cleared here; tests check that nothing of a
deleted member is left in any table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session

from storage import members, pushes
from storage.members import MemberRecord
from storage.models import (
    Card,
    Connection,
    Dialog,
    ExportLink,
    InboundPush,
    Invite,
    Member,
    MemberSettings,
    MemberStatus,
    OutboxAttempt,
    OutboxMessage,
)


def erase_member(session: Session, *, member: MemberRecord, keep_push_key: Optional[str] = None) -> None:
    """Delete everything about one member, and remove them from every other member's view.

    `keep_push_key` spares the push being answered right now, so that a retry of the very
    `delete me confirm` that caused this is still recognised as a duplicate.
    """
    mid = member.id
    outbox_ids = sa.select(OutboxMessage.id).where(OutboxMessage.member_id == mid)
    session.execute(sa.delete(OutboxAttempt).where(OutboxAttempt.outbox_id.in_(outbox_ids)))  # type: ignore[attr-defined]
    for stmt in (
        sa.delete(OutboxMessage).where(OutboxMessage.member_id == mid),
        sa.delete(ExportLink).where(ExportLink.member_id == mid),
        sa.delete(Dialog).where(Dialog.member_id == mid),
        sa.delete(Invite).where(Invite.inviter_id == mid),
        sa.delete(Connection).where(sa.or_(Connection.member_id == mid, Connection.contact_id == mid)),
        sa.delete(Card).where(Card.member_id == mid),
        sa.delete(MemberSettings).where(MemberSettings.member_id == mid),
    ):
        session.execute(stmt)  # type: ignore[arg-type]
    own_pushes = sa.delete(InboundPush).where(InboundPush.member_openid == member.openid)
    if keep_push_key is not None:
        own_pushes = own_pushes.where(InboundPush.key != keep_push_key)
        # The kept key is a message id; it no longer says whose message it was.
        session.execute(sa.update(InboundPush).where(InboundPush.key == keep_push_key)
                              .values(member_openid=""))
    session.execute(own_pushes)
    # Replies stored for other members' pushes may quote this member's card. WeChat retries
    # only within seconds, so forgetting them all costs at most a repeated answer.
    pushes.forget_replies(session, except_key=keep_push_key)
    session.execute(sa.delete(Member).where(Member.id == mid))  # type: ignore[arg-type]
    member.status = MemberStatus.ERASED


def deactivated_before(session: Session, *, cutoff: datetime, limit: int = 500) -> list[MemberRecord]:
    """Members who unsubscribed before `cutoff` and never came back."""
    stmt = (
        sa.select(Member.id)
        .where(Member.status == MemberStatus.DEACTIVATED, Member.deactivated_at < cutoff)  # type: ignore[operator]
        .order_by(Member.id)  # type: ignore[arg-type]
        .limit(limit)
    )
    found = (members.by_id(session, member_id=mid) for mid in session.execute(stmt).scalars())
    return [m for m in found if m is not None]


def erase_one_deactivated(session: Session, *, cutoff: datetime) -> bool:
    """Erase one member who left before `cutoff`; False when none is left."""
    due = deactivated_before(session, cutoff=cutoff, limit=1)
    if not due:
        return False
    erase_member(session, member=due[0])
    return True
