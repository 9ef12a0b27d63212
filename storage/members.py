"""Members: recorded on their first push, with the start of their messaging window."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.models import Member, MemberStatus
from storage.sql import dialect


def touch(
    session: Session,
    *,
    platform: str,
    openid: str,
    now: datetime,
    user_message: bool,
    event: bool,
) -> Member:
    """Record the member (their first push creates them) and lock their row for this transaction.

    One upsert does it all. Its row lock serialises two pushes from the same member across
    PostgreSQL workers, so a handler never races itself.
    """
    values: dict[str, object] = {"platform": platform, "openid": openid,
                                 "status": MemberStatus.ACTIVE, "created_at": now}
    changes: dict[str, object] = {}
    if user_message:
        values["last_message_at"] = changes["last_message_at"] = now
    if event:
        values["last_event_at"] = changes["last_event_at"] = now
    insert = postgresql.insert(Member) if dialect(session) == "postgresql" else sqlite.insert(Member)
    stmt = insert.values(**values).on_conflict_do_update(
        index_elements=["platform", "openid"],
        # With nothing to change, a no-op update still locks and returns the row.
        set_=changes or {"openid": insert.excluded.openid},
    ).returning(Member)
    return session.scalars(stmt, execution_options={"populate_existing": True}).one()


def get(session: Session, *, platform: str, openid: str) -> Member | None:
    """The member with this platform id, if they ever wrote."""
    stmt = sa.select(Member).where(Member.platform == platform, Member.openid == openid)
    return (session.execute(stmt)).scalar_one_or_none()


def set_lang(session: Session, *, member: Member, lang: str, explicit: bool) -> None:
    """Set the reply language (explicitly by `lang`, or by the member's first command)."""
    member.lang = lang
    session.add(member)


def deactivate(session: Session, *, member: Member, now: datetime) -> None:
    """Unsubscribe: the member stops receiving anything at once."""
    if member.status != MemberStatus.DEACTIVATED:
        member.status = MemberStatus.DEACTIVATED
        member.deactivated_at = now
        session.add(member)


def reactivate(session: Session, *, member: Member, now: datetime) -> bool:
    """Follow again; True when the member had been deactivated."""
    if member.status == MemberStatus.DEACTIVATED:
        member.status = MemberStatus.ACTIVE
        member.deactivated_at = None
        session.add(member)
        return True
    return False
