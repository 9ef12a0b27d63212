"""Deleting a member's personal data (PIPL): `delete me`, and after an unsubscribe's grace period.

Every table that holds a member's data must be cleared here; tests check that nothing of a
deleted member is left in any table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlmodel import col

from storage import asks, followups, members, outbox, pushes, search
from storage import intros as intro_store
from storage.members import MemberRecord
from storage.models import (
    Card,
    Connection,
    ContactSeq,
    Dialog,
    ExportLink,
    Invite,
    LinkCode,
    Member,
    MemberSettings,
    MemberStatus,
    OutboxMessage,
    OutboxStatus,
)


def erase_member(session: Session, *, member: MemberRecord, keep_push_key: Optional[str] = None) -> None:
    """Delete everything about one member, and remove them from every other member's view.

    `keep_push_key` spares the push being answered right now, so that a retry of the very
    `delete me confirm` that caused this is still recognised as a duplicate.
    """
    mid = member.id
    # Their asks and the nudges about them or to them go, with the nudges still queued.
    asks.erase_member(session, member_id=mid)
    # Follow-ups of their introductions go first: they point at the introductions.
    followups.erase_intros(session, intro_ids=[i.id for i in intro_store.involving(session, member_id=mid)])
    followups.erase_member(session, member_id=mid)
    # Their introductions go whole, with the messages about them still queued for others.
    intro_store.erase_member(session, member_id=mid)
    _forget_unsent_digests_around(session, member_id=mid)
    # Messages to others that show this member's card data lose it, sent or not; their own go.
    outbox.erase_mentions(session, member_id=mid)
    outbox.forget_member(session, member_id=mid)
    search.forget_member(session, member_id=mid)
    for stmt in (
        sa.delete(ExportLink).where(col(ExportLink.member_id) == mid),
        sa.delete(Dialog).where(col(Dialog.member_id) == mid),
        sa.delete(Invite).where(col(Invite.inviter_id) == mid),
        sa.delete(Connection).where(sa.or_(col(Connection.member_id) == mid, col(Connection.contact_id) == mid)),
        sa.delete(ContactSeq).where(col(ContactSeq.member_id) == mid),
        sa.delete(Card).where(col(Card.member_id) == mid),
        sa.delete(MemberSettings).where(col(MemberSettings.member_id) == mid),
    ):
        session.execute(stmt)
    session.execute(sa.delete(LinkCode).where(col(LinkCode.member_id) == mid))
    # Their pushes go, on every platform they wrote from, but for the one being answered,
    # whose stored key (a digest) must keep deduplicating; replies stored for others may quote
    # this member's card, so they go too.
    aliases = session.execute(sa.select(col(Member.id), col(Member.openid))
                              .where(col(Member.merged_into) == mid)).all()
    for openid in [member.openid, *(o for _, o in aliases)]:
        pushes.forget_member(session, openid=openid, keep_key=keep_push_key)
    for alias_id, _ in aliases:
        session.execute(sa.delete(LinkCode).where(col(LinkCode.member_id) == alias_id))
    session.execute(sa.delete(Member).where(col(Member.merged_into) == mid))
    session.execute(sa.delete(Member).where(col(Member.id) == mid))
    member.status = MemberStatus.ERASED


def _forget_unsent_digests_around(session: Session, *, member_id: int) -> None:
    """Unsent digests of members up to two hops away may name this member: drop them.

    Their dedupe keys go with them, so the next `digests` run builds those digests again,
    without the erased member.
    """
    first = sa.select(col(Connection.contact_id)).where(col(Connection.member_id) == member_id)
    second = sa.select(col(Connection.contact_id)).where(col(Connection.member_id).in_(first))
    unsent = (
        sa.select(col(OutboxMessage.id))
        .where(col(OutboxMessage.dedupe_key).like("digest:%"),
               col(OutboxMessage.status).in_([OutboxStatus.PENDING, OutboxStatus.HELD]),
               sa.or_(col(OutboxMessage.member_id).in_(first), col(OutboxMessage.member_id).in_(second)))
    )
    outbox.delete_rows(session, outbox_ids=[i for i in session.execute(unsent).scalars() if i is not None])


def deactivated_before(session: Session, *, cutoff: datetime, limit: int = 500) -> list[MemberRecord]:
    """Members who unsubscribed before `cutoff` and never came back."""
    stmt = (
        sa.select(col(Member.id))
        .where(col(Member.status) == MemberStatus.DEACTIVATED, col(Member.deactivated_at) < cutoff)
        .order_by(col(Member.id))
        .limit(limit)
    )
    # A primary key is never NULL, whatever the model's Optional[int] says.
    ids = cast("sa.ScalarResult[int]", session.execute(stmt).scalars())
    found = (members.by_id(session, member_id=mid) for mid in ids)
    return [m for m in found if m is not None]


def erase_one_deactivated(session: Session, *, cutoff: datetime) -> bool:
    """Erase one member who left before `cutoff`; False when none is left."""
    due = deactivated_before(session, cutoff=cutoff, limit=1)
    if not due:
        return False
    erase_member(session, member=due[0])
    return True
