"""Members: recorded on their first push, with the start of their messaging window.

Every push runs `touch`, so it is one statement on the driver's cursor (storage.sql.RawStatement). It returns a MemberRecord, a plain
value rather than an ORM object: changes go through the functions here, which update the row
and the record together.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional

from sqlalchemy.orm import Session

from storage.models import MemberStatus
from storage.sql import RawStatement, from_db, to_db

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
    merged_into: Optional[int] = None  # this identity was linked into that member


_COLUMNS = ("id", "platform", "openid", "lang", "status", "created_at", "last_message_at",
            "last_event_at", "deactivated_at", "merged_into")
_TIMES = {i for i, name in enumerate(_COLUMNS) if name.endswith("_at")}


def _upsert(moves: str) -> RawStatement:
    # ON CONFLICT … DO UPDATE locks the row for the transaction on PostgreSQL, which serialises
    # two pushes from the same member across workers, so a handler never races itself.
    return RawStatement(
        "INSERT INTO member (platform, openid, status, created_at, last_message_at, last_event_at) "
        f"VALUES (?, ?, '{MemberStatus.ACTIVE}', ?, ?, ?) "
        f"ON CONFLICT (platform, openid) DO UPDATE SET {moves} "
        f"RETURNING {', '.join(_COLUMNS)}"
    )


_TOUCH = {
    (True, False): _upsert("last_message_at = excluded.last_message_at"),
    (False, True): _upsert("last_event_at = excluded.last_event_at"),
    (True, True): _upsert("last_message_at = excluded.last_message_at, last_event_at = excluded.last_event_at"),
    (False, False): _upsert("openid = excluded.openid"),  # changes nothing, still locks and returns
}
_GET = RawStatement(f"SELECT {', '.join(_COLUMNS)} FROM member WHERE platform = ? AND openid = ?")
_BY_ID = RawStatement(f"SELECT {', '.join(_COLUMNS)} FROM member WHERE id = ?")


def _record(row: tuple[Any, ...]) -> MemberRecord:
    # Values as the driver returned them, in MemberRecord's field order.
    values: Iterator[Any] = (from_db(v) if i in _TIMES else v for i, v in enumerate(row))
    return MemberRecord(*values)


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
    at = to_db(session, now)
    row = _TOUCH[(user_message, event)].execute(session, (
        platform, openid, at, at if user_message else None, at if event else None)).fetchone()
    return _record(row)


_LOCK = RawStatement(f"SELECT {', '.join(_COLUMNS)} FROM member WHERE id = ? FOR UPDATE")


def acting(session: Session, *, identity: MemberRecord) -> MemberRecord:
    """The member a platform identity acts as: itself, or the member it was linked into.

    The member's row is locked for the transaction on PostgreSQL, as `touch` locks the
    identity's, so pushes from both of a member's platforms are handled one at a time.
    """
    if identity.merged_into is None:
        return identity
    lock = _LOCK if session.get_bind().dialect.name == "postgresql" else _BY_ID
    row = lock.execute(session, (identity.merged_into,)).fetchone()
    return _record(row) if row else identity


def get(session: Session, *, platform: str, openid: str) -> MemberRecord | None:
    """The member with this platform id, if they ever wrote."""
    row = _GET.execute(session, (platform, openid)).fetchone()
    return _record(row) if row else None


def by_id(session: Session, *, member_id: int) -> MemberRecord | None:
    """The member with this id."""
    row = _BY_ID.execute(session, (member_id,)).fetchone()
    return _record(row) if row else None


_SET_LANG = RawStatement("UPDATE member SET lang = ? WHERE id = ?")
_SET_STATUS = RawStatement("UPDATE member SET status = ?, deactivated_at = ? WHERE id = ?")


def set_lang(session: Session, *, member: MemberRecord, lang: str, explicit: bool) -> None:
    """Set the reply language (explicitly by `lang`, or by the member's first command)."""
    _SET_LANG.execute(session, (lang, member.id))
    member.lang = lang


def _set_status(session: Session, member: MemberRecord, status: str, at: datetime | None) -> None:
    _SET_STATUS.execute(session, (status, to_db(session, at), member.id))
    member.status, member.deactivated_at = status, at


def deactivate(session: Session, *, member: MemberRecord, now: datetime) -> None:
    """Unsubscribe: the member stops receiving anything at once."""
    if member.status != MemberStatus.DEACTIVATED:
        _set_status(session, member, MemberStatus.DEACTIVATED, now)


def reactivate(session: Session, *, member: MemberRecord, now: datetime) -> bool:
    """Follow again; True when the member had been deactivated."""
    if member.status == MemberStatus.DEACTIVATED:
        _set_status(session, member, MemberStatus.ACTIVE, None)
        return True
    return False
