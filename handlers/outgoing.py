"""Telling a member something outside the reply to their own message: always the outbox.

Handlers and jobs say what to tell whom; the outbox row, its delivery and the members it
mentions are storage's and the sender's business.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from handlers.replies import Reply
from handlers.visibility import shown_to
from storage import outbox


def tell(session: Session, *, member_id: int, reply: Reply, now: datetime,
         priority: int = outbox.PRIORITY_DECISION, key: str | None = None) -> bool:
    """Queue `reply` for `member_id` in this transaction; False when `key` was queued before.

    The members whose card data the recipient was shown in this transaction are recorded as
    mentioned, so that erasing any of them redacts the message.
    """
    return outbox.enqueue(session, member_id=member_id, reply=reply, now=now, priority=priority,
                          dedupe_key=key, mentions=shown_to(session, member_id))
