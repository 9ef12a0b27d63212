"""Inbound push deduplication, in the database so restarts and other workers see it too.

A push's key names its sender (FromUserName + MsgId, or + CreateTime + Event), so another
openid reusing a MsgId never gets someone else's reply. Only a SHA-256 digest of the key is
stored, so the key of a push kept after `delete me` carries no openid; every function here
takes the plain key and hashes it itself.

These run on every push, so they run on the driver's cursor (storage.sql.RawStatement).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from storage.models import InboundPush
from storage.sql import RawStatement, to_db

# A stored reply is for WeChat's retries, which come within seconds (5 s apart, three at most);
# it may quote members' cards, so it is never served, and not kept, much longer than that.
REPLY_TTL = timedelta(seconds=60)

_push = InboundPush.__table__  # type: ignore[attr-defined]
_CLAIM = RawStatement(
    "INSERT INTO inbound_push (key, member_openid, received_at) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO NOTHING RETURNING 1"
)
_REPLY = RawStatement("SELECT reply FROM inbound_push WHERE key = ? AND received_at >= ?")
_FINISH = RawStatement("UPDATE inbound_push SET reply = ? WHERE key = ?")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def claim(session: Session, *, key: str, openid: str, now: datetime) -> bool:
    """Claim a push for this transaction; False when it was handled before.

    Claim and handling commit together, so a crash in between leaves no claim and the retry is
    handled normally. On PostgreSQL a concurrent claim of the same key waits for ours to finish.
    """
    return _CLAIM.execute(session, (_digest(key), openid, to_db(session, now))).fetchone() is not None


def stored_reply(session: Session, *, key: str, now: datetime) -> str | None:
    """The serialised reply a handled push got, while WeChat may still retry it (REPLY_TTL)."""
    row = _REPLY.execute(session, (_digest(key), to_db(session, now - REPLY_TTL))).fetchone()
    return row[0] if row else None


def finish(session: Session, *, key: str, reply: str | None) -> None:
    """Record the reply given to a claimed push."""
    _FINISH.execute(session, (reply, _digest(key)))


def prune(session: Session, *, older_than: datetime) -> int:
    """Forget pushes WeChat can no longer retry; returns how many were removed."""
    result = session.execute(sa.delete(_push).where(_push.c.received_at < older_than))
    return int(result.rowcount)  # type: ignore[attr-defined]


def forget_replies(session: Session, *, older_than: datetime | None = None,
                   newer_than: datetime | None = None, except_key: str | None = None) -> None:
    """Drop stored replies (they may quote members' cards); the keys keep deduplicating.

    `newer_than` bounds the scan, for a sweeper that has already swept what came before.
    """
    stmt = sa.update(_push).where(_push.c.reply.is_not(None))
    if older_than is not None:
        stmt = stmt.where(_push.c.received_at < older_than)
    if newer_than is not None:
        stmt = stmt.where(_push.c.received_at >= newer_than)
    if except_key is not None:
        stmt = stmt.where(_push.c.key != _digest(except_key))
    session.execute(stmt.values(reply=None))


def forget_member(session: Session, *, openid: str, keep_key: str | None = None) -> None:
    """Erase a member's pushes, and every stored reply, which may quote their card.

    `keep_key` spares the push being answered right now (its retry must still be recognised),
    with its openid blanked: its stored key is a digest, so nothing of the member is left.
    WeChat retries within seconds, so forgetting the replies costs at most a repeated answer.
    """
    own = sa.delete(_push).where(_push.c.member_openid == openid)
    if keep_key is not None:
        kept = _digest(keep_key)
        own = own.where(_push.c.key != kept)
        session.execute(sa.update(_push).where(_push.c.key == kept).values(member_openid=""))
    session.execute(own)
    forget_replies(session, except_key=keep_key)
