"""Connections between members and degrees of separation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlmodel import col

from storage.models import Connection, Member, MemberStatus
from storage.sql import RawStatement, insert_ignore

_conn = Connection.__table__  # type: ignore[attr-defined]
MAX_DEGREE = 3


_LOCK_SEQ = RawStatement(
    # Takes the row lock of the member's counter (creating it at 0) and reads it.
    "INSERT INTO contact_seq (member_id, last) VALUES (?, 0) "
    "ON CONFLICT (member_id) DO UPDATE SET last = contact_seq.last RETURNING last"
)
_SET_SEQ = RawStatement("UPDATE contact_seq SET last = ? WHERE member_id = ?")


def connect(session: Session, *, a: int, b: int, source: str, now: datetime) -> bool:
    """Connect two members both ways; False when they already were connected.

    Each side's new contact gets the next number of that side's list, which is never handed
    out again. Both counters are locked in member-id order before anything is written, so two
    workers connecting the same pair at once (each joining the other's invite) queue one
    behind the other instead of deadlocking; the second then finds them connected.
    """
    if a == b:
        raise ValueError("a member cannot connect to themselves")
    lo, hi = sorted((a, b))
    last = {m: int(_LOCK_SEQ.execute(session, (m,)).fetchone()[0]) for m in (lo, hi)}
    made = False
    for member_id, contact_id in ((lo, hi), (hi, lo)):
        if are_connected(session, a=member_id, b=contact_id):
            continue
        number = last[member_id] + 1
        _SET_SEQ.execute(session, (number, member_id))
        made |= insert_ignore(
            session, _conn,
            {"member_id": member_id, "contact_id": contact_id, "source": source, "created_at": now,
             "number": number},
            conflict=["member_id", "contact_id"],
        )
    return made


def are_connected(session: Session, *, a: int, b: int) -> bool:
    """True when a and b are connected."""
    stmt = sa.select(_conn.c.id).where(_conn.c.member_id == a, _conn.c.contact_id == b)
    return (session.execute(stmt)).first() is not None


@dataclass(frozen=True)
class ContactRow:
    """One of a member's connections, for listing."""

    number: int
    contact_id: int
    strength: Optional[int]
    since: datetime


def contacts(session: Session, *, member_id: int) -> list[ContactRow]:
    """A member's active connections with their numbers, which never shift or repeat.

    A contact who left is not listed, and their number is not given to anyone else.
    """
    stmt = (
        sa.select(col(Connection.number), col(Connection.contact_id), col(Connection.strength),
                  col(Connection.created_at))
        .join(Member, col(Member.id) == col(Connection.contact_id))
        .where(col(Connection.member_id) == member_id, col(Member.status) == MemberStatus.ACTIVE)
        .order_by(col(Connection.number))
    )
    return [ContactRow(number=n, contact_id=cid, strength=strength, since=since)
            for n, cid, strength, since in session.execute(stmt).all()]


def set_name_pending(session: Session, *, member_id: int, contact_id: int, pending: bool) -> bool:
    """Whether member_id still waits to learn contact_id's name; False when nothing changed."""
    result = session.execute(
        sa.update(_conn).where(_conn.c.member_id == member_id, _conn.c.contact_id == contact_id,
                               _conn.c.name_pending.is_not(pending))
        .values(name_pending=pending)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def waiting_for_name(session: Session, *, contact_id: int) -> list[ContactRow]:
    """The active members who wait to learn contact_id's name, as rows of their own lists.

    Each row's contact_id is the waiting member (the one to tell), its number the number
    contact_id has in that member's list.
    """
    rows = session.execute(
        sa.select(_conn.c.number, _conn.c.member_id, _conn.c.strength, _conn.c.created_at)
        .join(Member.__table__, Member.__table__.c.id == _conn.c.member_id)  # type: ignore[attr-defined]
        .where(_conn.c.contact_id == contact_id, _conn.c.name_pending.is_(True),
               Member.__table__.c.status == MemberStatus.ACTIVE)  # type: ignore[attr-defined]
        .order_by(_conn.c.member_id)
    ).all()
    return [ContactRow(number=n, contact_id=m, strength=st, since=at) for n, m, st, at in rows]


def set_strength(session: Session, *, member_id: int, contact_id: int, strength: int) -> bool:
    """How well member knows contact (this direction only); False when they are not connected."""
    result = session.execute(
        sa.update(_conn).where(_conn.c.member_id == member_id, _conn.c.contact_id == contact_id)
        .values(strength=strength)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def degree(session: Session, *, viewer_id: int, owner_id: int) -> Optional[int]:
    """0 for oneself, 1-3 for the network, None beyond the 3rd degree (active members only)."""
    if viewer_id == owner_id:
        return 0
    frontier, seen = {viewer_id}, {viewer_id}
    for hop in range(1, MAX_DEGREE + 1):
        stmt = (
            sa.select(_conn.c.contact_id)
            .join(Member.__table__, Member.__table__.c.id == _conn.c.contact_id)  # type: ignore[attr-defined]
            .where(_conn.c.member_id.in_(frontier),
                   Member.__table__.c.status == MemberStatus.ACTIVE)  # type: ignore[attr-defined]
        )
        nxt = {cid for (cid,) in (session.execute(stmt)).all()} - seen
        if owner_id in nxt:
            return hop
        if not nxt:
            return None
        seen |= nxt
        frontier = nxt
    return None
