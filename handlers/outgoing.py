"""Telling a member something outside the reply to their own message: always the outbox.

Handlers and jobs say what to tell whom; the outbox row, its delivery and the members it
mentions are storage's and the sender's business.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from collections.abc import Collection

from handlers.replies import ChoicesReply, NoReply, Reply, reply_to_json
from handlers.visibility import shown_to
from storage import outbox


def tell(session: Session, *, member_id: int, reply: Reply, now: datetime,
         priority: int = outbox.PRIORITY_DECISION, key: str | None = None,
         mentions: Collection[int] = ()) -> bool:
    """Queue `reply` for `member_id` in this transaction; False when nothing was queued
    (nothing to say, or `key` was queued before).

    The members whose card data the recipient was shown in this transaction (and any given
    in `mentions`) are recorded as mentioned, so that erasing one of them redacts the message.
    """
    if isinstance(reply, NoReply):
        return False
    return outbox.enqueue(session, member_id=member_id,
                          kind="choices" if isinstance(reply, ChoicesReply) else "text",
                          payload=reply_to_json(reply), now=now, priority=priority, dedupe_key=key,
                          mentions=set(mentions) | shown_to(session, member_id))
