"""Members: recorded on their first push, with the start of their messaging window.

Every push runs `touch`, so it is one prebuilt statement. It returns a MemberRecord, a plain
value rather than an ORM object: changes go through the functions here, which update the row
and the record together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session

from storage.models import Member, MemberStatus, UTCDateTime

@dataclass
class MemberRecord:
    """One member's row, as handlers see it."""

    id: int
    platform: str
    openid: str
    lang: Optional[str]
    status: str
    created_at: datetime
    last_message_at: Optional[datetime]
    last_event_at: Optional[datetime]
    deactivated_at: Optional[datetime]


_COLUMNS = ("id", "platform", "openid", "lang", "status", "created_at", "last_message_at",
            "last_event_at", "deactivated_at")
_TYPED = [sa.column(name, UTCDateTime) if name.endswith("_at") else sa.column(name) for name in _COLUMNS]


def _upsert(moves: str) -> sa.TextClause:
    # ON CONFLICT … DO UPDATE locks the row for the transaction on PostgreSQL, which serialises
    # two pushes from the same member across workers, so a handler never races itself.
    return sa.text(
        "INSERT INTO member (platform, openid, status, created_at, last_message_at, last_event_at) "
        "VALUES (:platform, :openid, 'active', :now, :message_at, :event_at) "
        f"ON CONFLICT (platform, openid) DO UPDATE SET {moves} "
        f"RETURNING {', '.join(_COLUMNS)}"
    ).bindparams(*(sa.bindparam(n, type_=UTCDateTime) for n in ("now", "message_at", "event_at"))
                 ).columns(*_TYPED)


_TOUCH = {
    (True, False): _upsert("last_message_at = excluded.last_message_at"),
    (False, True): _upsert("last_event_at = excluded.last_event_at"),
    (True, True): _upsert("last_message_at = excluded.last_message_at, last_event_at = excluded.last_event_at"),
    (False, False): _upsert("openid = excluded.openid"),  # changes nothing, still locks and returns
}
_GET = sa.text(f"SELECT {', '.join(_COLUMNS)} FROM member WHERE platform = :platform AND openid = :openid"
               ).columns(*_TYPED)


_BY_ID = sa.text(f"SELECT {', '.join(_COLUMNS)} FROM member WHERE id = :id").columns(*_TYPED)


def _record(row: sa.Row[tuple[object, ...]]) -> MemberRecord:
    return MemberRecord(*row)  # type: ignore[arg-type]


def touch(
    session: Session,
    *,
    platform: str,
    openid: str,
    now: datetime,
    user_message: bool,
    event: bool,
) -> MemberRecord:
    """Record the member (their first push creates them) and lock their row for this transaction."""
    row = session.connection().execute(_TOUCH[(user_message, event)], {
        "platform": platform, "openid": openid, "now": now,
        "message_at": now if user_message else None, "event_at": now if event else None,
    }).one()
    return _record(row)


def get(session: Session, *, platform: str, openid: str) -> MemberRecord | None:
    """The member with this platform id, if they ever wrote."""
    row = session.connection().execute(_GET, {"platform": platform, "openid": openid}).first()
    return _record(row) if row else None


def by_id(session: Session, *, member_id: int) -> MemberRecord | None:
    """The member with this id."""
    row = session.connection().execute(_BY_ID, {"id": member_id}).first()
    return _record(row) if row else None


def _update(session: Session, member: MemberRecord, **values: object) -> None:
    session.execute(sa.update(Member).where(Member.id == member.id).values(**values))  # type: ignore[arg-type]
    for key, value in values.items():
        setattr(member, key, value)


def set_lang(session: Session, *, member: MemberRecord, lang: str, explicit: bool) -> None:
    """Set the reply language (explicitly by `lang`, or by the member's first command)."""
    _update(session, member, lang=lang)


def deactivate(session: Session, *, member: MemberRecord, now: datetime) -> None:
    """Unsubscribe: the member stops receiving anything at once."""
    if member.status != MemberStatus.DEACTIVATED:
        _update(session, member, status=MemberStatus.DEACTIVATED, deactivated_at=now)


def reactivate(session: Session, *, member: MemberRecord, now: datetime) -> bool:
    """Follow again; True when the member had been deactivated."""
    if member.status == MemberStatus.DEACTIVATED:
        _update(session, member, status=MemberStatus.ACTIVE, deactivated_at=None)
        return True
    return False
