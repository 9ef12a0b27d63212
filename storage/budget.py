"""The messaging budget: what WeChat lets us send each member right now (WECHAT.md §4).

A member's message opens a 48-hour window for 5 customer-service messages; a subscribe, scan or
menu click allows 3 in the minute after it. We count what we actually sent (the outbox's `sent`
attempts), and WeChat's 45015/45047 correct the count when it is wrong.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from storage.models import Member, MemberStatus, OutboxAttempt, OutboxMessage, OutboxStatus

_outbox = OutboxMessage.__table__  # type: ignore[attr-defined]
_attempt = OutboxAttempt.__table__  # type: ignore[attr-defined]
_member = Member.__table__  # type: ignore[attr-defined]

WINDOW = timedelta(hours=48)
WINDOW_MESSAGES = 5
EVENT_WINDOW = timedelta(minutes=1)
EVENT_MESSAGES = 3

# Attempt outcomes that put a customer-service message on the wire (one per message: rows merged
# into another row's message record `merged`, which does not count again).
COUNTED_OUTCOME = "sent"
NOT_COUNTED_KINDS = ("template",)  # template messages are outside the window and its budget
ERRCODE_WINDOW_CLOSED = 45015

NOTICE_KEY_PREFIX = "notice-"


@dataclass(frozen=True)
class Budget:
    """One member's customer-service allowance at one moment."""

    member_id: int
    last_message_at: datetime | None
    last_event_at: datetime | None
    sent_since_message: int = 0
    sent_since_event: int = 0
    lang: str | None = None

    def window_open(self, now: datetime) -> bool:
        """The member wrote within the last 48 hours."""
        return self.last_message_at is not None and now < self.last_message_at + WINDOW

    def allowance(self, now: datetime) -> int:
        """How many customer-service messages may go now (each trigger grants its own quota)."""
        by_message = WINDOW_MESSAGES - self.sent_since_message if self.window_open(now) else 0
        by_event = 0
        if self.last_event_at is not None and now < self.last_event_at + EVENT_WINDOW:
            by_event = EVENT_MESSAGES - self.sent_since_event
        return max(0, by_message, by_event)


def budgets(session: Session, *, member_ids: Collection[int]) -> dict[int, Budget]:
    """The budget of each member, in two queries (members, then their sends since each trigger)."""
    if not member_ids:
        return {}
    ids = list(member_ids)
    found = {
        r[0]: Budget(member_id=r[0], last_message_at=r[1], last_event_at=r[2], lang=r[3])
        for r in session.execute(
            sa.select(_member.c.id, _member.c.last_message_at, _member.c.last_event_at,
                      _member.c.lang).where(_member.c.id.in_(ids))).all()
    }
    since_message = _attempt.c.attempted_at >= _member.c.last_message_at
    since_event = _attempt.c.attempted_at >= _member.c.last_event_at
    counts = session.execute(
        sa.select(
            _outbox.c.member_id,
            sa.func.sum(sa.case((since_message, 1), else_=0)),
            sa.func.sum(sa.case((since_event, 1), else_=0)),
        )
        .select_from(_attempt.join(_outbox, _outbox.c.id == _attempt.c.outbox_id)
                     .join(_member, _member.c.id == _outbox.c.member_id))
        .where(_outbox.c.member_id.in_(ids),
               _outbox.c.kind.not_in(NOT_COUNTED_KINDS),
               _attempt.c.outcome == COUNTED_OUTCOME,
               sa.or_(since_message, since_event))
        .group_by(_outbox.c.member_id)
    ).all()
    for member_id, by_message, by_event in counts:
        b = found[member_id]
        found[member_id] = Budget(member_id=member_id, last_message_at=b.last_message_at,
                                  last_event_at=b.last_event_at, lang=b.lang,
                                  sent_since_message=int(by_message or 0),
                                  sent_since_event=int(by_event or 0))
    return found


def last_message_at(session: Session, *, member_id: int, lock: bool) -> datetime | None:
    """When the member last wrote; `lock` takes their row until the transaction ends.

    Locking serialises a hold decision with the member's next push (which locks the same row
    in members.touch), so rows are never held after the message that should release them.
    """
    stmt = sa.select(_member.c.last_message_at).where(_member.c.id == member_id)
    if lock and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    value: datetime | None = session.execute(stmt).scalar_one_or_none()
    return value


@dataclass(frozen=True)
class NoticeDue:
    """A member outside their window with held messages they have not been told about."""

    member_id: int
    lang: str | None
    held_by_priority: Counter[int] = field(default_factory=Counter)


def notices_due(
    session: Session, *, now: datetime, member_ids: Collection[int] | None = None,
    exclude_platforms: Collection[str] = (),
) -> list[NoticeDue]:
    """Members whose held messages wait outside the window, with nothing new told since.

    Outside the window means: no message for 48 hours by our own count, or WeChat answered
    45015 for a held row (our count can be wrong). A member hears of what was held since their
    last notice, so one notice covers a batch and nothing is announced twice.
    """
    closed = sa.or_(
        _member.c.last_message_at.is_(None),
        _member.c.last_message_at <= now - WINDOW,
        _outbox.c.last_errcode == ERRCODE_WINDOW_CLOSED,
    )
    stmt = (
        sa.select(_outbox.c.member_id, _member.c.lang, _outbox.c.priority, _outbox.c.created_at)
        .join(_member, _member.c.id == _outbox.c.member_id)
        .where(_outbox.c.status == OutboxStatus.HELD,
               _outbox.c.kind.not_in(NOT_COUNTED_KINDS),
               _member.c.status == MemberStatus.ACTIVE,
               closed)
    )
    if member_ids is not None:
        if not member_ids:
            return []
        stmt = stmt.where(_outbox.c.member_id.in_(list(member_ids)))
    if exclude_platforms:
        stmt = stmt.where(_member.c.platform.not_in(list(exclude_platforms)))
    held = session.execute(stmt).all()
    if not held:
        return []
    # Held rows of a member whose window is closed: every held row counts, not only the closed ones.
    candidates = {r.member_id for r in held}
    all_held = session.execute(
        sa.select(_outbox.c.member_id, _member.c.lang, _outbox.c.priority, _outbox.c.created_at)
        .join(_member, _member.c.id == _outbox.c.member_id)
        .where(_outbox.c.status == OutboxStatus.HELD, _outbox.c.kind.not_in(NOT_COUNTED_KINDS),
               _outbox.c.member_id.in_(list(candidates)))
    ).all()
    last_notice: dict[int, datetime] = dict(session.execute(
        sa.select(_outbox.c.member_id, sa.func.max(_outbox.c.created_at))
        .where(_outbox.c.member_id.in_(list(candidates)),
               _outbox.c.kind == "template",
               _outbox.c.dedupe_key.like(f"{NOTICE_KEY_PREFIX}%"))
        .group_by(_outbox.c.member_id)
    ).all())
    due: dict[int, NoticeDue] = {}
    fresh: set[int] = set()
    for r in all_held:
        told = last_notice.get(r.member_id)
        if told is None or r.created_at > told:
            fresh.add(r.member_id)
        entry = due.setdefault(r.member_id, NoticeDue(member_id=r.member_id, lang=r.lang))
        entry.held_by_priority[r.priority] += 1
    return [due[m] for m in sorted(fresh)]


def notice_key(member_id: int, now: datetime) -> str:
    """The idempotency key of a member's notice of one day (also its client_msg_id)."""
    return f"{NOTICE_KEY_PREFIX}{member_id}-{now.date().isoformat()}"


def notice_payload(template_id: str, data: dict[str, Any], client_msg_id: str) -> str:
    """The outbox payload of a notice: a template message carrying its own client_msg_id."""
    return json.dumps({"type": "template", "template_id": template_id, "data": data, "url": None,
                       "client_msg_id": client_msg_id}, ensure_ascii=False)
