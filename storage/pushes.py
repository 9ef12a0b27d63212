"""Inbound push deduplication, in the database so restarts and other workers see it too.

These run on every push, so they run on the driver's cursor (storage.sql.RawStatement).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from storage.models import InboundPush
from storage.sql import RawStatement, to_db

_push = InboundPush.__table__  # type: ignore[attr-defined]
_CLAIM = RawStatement(
    "INSERT INTO inbound_push (key, member_openid, received_at) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO NOTHING RETURNING 1"
)
_REPLY = RawStatement("SELECT reply FROM inbound_push WHERE key = ?")
_FINISH = RawStatement("UPDATE inbound_push SET reply = ? WHERE key = ?")


def claim(session: Session, *, key: str, openid: str, now: datetime) -> bool:
    """Claim a push for this transaction; False when it was handled before.

    Claim and handling commit together, so a crash in between leaves no claim and the retry is
    handled normally. On PostgreSQL a concurrent claim of the same key waits for ours to finish.
    """
    return _CLAIM.execute(session, (key, openid, to_db(session, now))).fetchone() is not None


def stored_reply(session: Session, *, key: str) -> str | None:
    """The serialised reply a handled push got."""
    row = _REPLY.execute(session, (key,)).fetchone()
    return row[0] if row else None


def finish(session: Session, *, key: str, reply: str | None) -> None:
    """Record the reply given to a claimed push."""
    _FINISH.execute(session, (reply, key))


def prune(session: Session, *, older_than: datetime) -> int:
    """Forget pushes WeChat can no longer retry; returns how many were removed."""
    result = session.execute(sa.delete(_push).where(_push.c.received_at < older_than))
    return int(result.rowcount)  # type: ignore[attr-defined]


def forget_replies(session: Session, *, older_than: datetime | None = None,
                   except_key: str | None = None) -> None:
    """Drop stored replies (they may quote members' cards); the keys keep deduplicating."""
    stmt = sa.update(_push).where(_push.c.reply.is_not(None))
    if older_than is not None:
        stmt = stmt.where(_push.c.received_at < older_than)
    if except_key is not None:
        stmt = stmt.where(_push.c.key != except_key)
    session.execute(stmt.values(reply=None))
