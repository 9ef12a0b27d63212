"""The outbox: rows written in the same transaction as the change that causes them."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from handlers.replies import ChoicesReply, NoReply, Reply, reply_from_json, reply_to_json
from storage.budget import last_message_at, notice_key, notice_payload
from storage.models import Member, OutboxAttempt, OutboxMessage, OutboxStatus
from storage.sql import RawStatement, dialect, insert_ignore, to_db

_outbox = OutboxMessage.__table__  # type: ignore[attr-defined]
_attempt = OutboxAttempt.__table__  # type: ignore[attr-defined]
_member = Member.__table__  # type: ignore[attr-defined]

# Lower goes first (PRODUCT.md, the messaging budget).
PRIORITY_REPLY = 0  # a late answer to something the member just wrote
PRIORITY_DECISION = 10
PRIORITY_FOLLOW_UP = 20
PRIORITY_DIGEST = 30
PRIORITY_NUDGE = 40

KIND_TEMPLATE = "template"  # a template message: not bound to the 48-hour window
KIND_QR_INVITE = "qr_invite"  # the sender creates the QR code, then sends the text with its link


def enqueue(
    session: Session,
    *,
    member_id: int,
    reply: Reply,
    now: datetime,
    priority: int = PRIORITY_DECISION,
    dedupe_key: str | None = None,
) -> bool:
    """Queue a message for a member; False when nothing was queued (empty, or key seen before)."""
    if isinstance(reply, NoReply):
        return False
    return _queue(
        session, member_id=member_id, kind="choices" if isinstance(reply, ChoicesReply) else "text",
        payload=reply_to_json(reply), now=now, priority=priority, dedupe_key=dedupe_key,
    )


def _queue(
    session: Session,
    *,
    member_id: int,
    kind: str,
    payload: str,
    now: datetime,
    priority: int,
    dedupe_key: str | None,
) -> bool:
    """Insert one pending row; False when the dedupe key was queued before."""
    values = {
        "member_id": member_id,
        "kind": kind,
        "payload": payload,
        "priority": priority,
        "status": OutboxStatus.PENDING,
        "attempts": 0,
        "created_at": now,
        "next_attempt_at": now,
        "dedupe_key": dedupe_key,
    }
    if dedupe_key is None:
        session.execute(sa.insert(_outbox).values(**values))
        return True
    return insert_ignore(session, _outbox, values, conflict=["dedupe_key"])


# Runs on every message a member sends, so it is prebuilt.
_RELEASE_HELD = RawStatement(
    f"UPDATE outbox SET status = '{OutboxStatus.PENDING}', next_attempt_at = ? "
    f"WHERE member_id = ? AND status = '{OutboxStatus.HELD}'"
)


def release_held(session: Session, *, member_id: int, now: datetime) -> int:
    """The member wrote again, so their window is open: held messages become due."""
    return int(_RELEASE_HELD.execute(session, (to_db(session, now), member_id)).rowcount)


@dataclass(frozen=True)
class ClaimedMessage:
    """An outbox row leased to one sender, with what it needs to reach the member."""

    id: int
    member_id: int
    openid: str
    member_status: str
    kind: str
    payload: str
    priority: int = PRIORITY_DECISION


def enqueue_template(
    session: Session,
    *,
    member_id: int,
    template_id: str,
    data: dict[str, Any],
    now: datetime,
    url: str | None = None,
    priority: int = PRIORITY_DIGEST,
    dedupe_key: str | None = None,
) -> bool:
    """Queue a template message (it can reach a follower outside the 48-hour window)."""
    payload = json.dumps({"type": "template", "template_id": template_id, "data": data, "url": url},
                         ensure_ascii=False)
    return _queue(session, member_id=member_id, kind=KIND_TEMPLATE, payload=payload, now=now,
                  priority=priority, dedupe_key=dedupe_key)


def enqueue_qr_invite(
    session: Session,
    *,
    member_id: int,
    code: str,
    now: datetime,
    expire_seconds: int,
    text: str,
    priority: int = PRIORITY_REPLY,
    dedupe_key: str | None = None,
) -> bool:
    """Queue an invite QR code (scene = the invite code); `{url}` in `text` becomes its link.

    Creating the code needs the WeChat API, which a handler never calls, so the sender does it.
    """
    payload = json.dumps({"type": "qr_invite", "scene": code, "expire_seconds": expire_seconds,
                          "text": text}, ensure_ascii=False)
    return _queue(session, member_id=member_id, kind=KIND_QR_INVITE, payload=payload, now=now,
                  priority=priority, dedupe_key=dedupe_key)


def claim_due(
    session: Session,
    *,
    now: datetime,
    lease_until: datetime,
    limit: int,
    exclude_platforms: Collection[str] = (),
) -> list[ClaimedMessage]:
    """Lease the next due rows (priority, then age) to this sender until `lease_until`.

    A row whose lease ran out belongs to a sender that died mid-send, so it is due again. On
    PostgreSQL SKIP LOCKED lets concurrent senders take disjoint rows; on SQLite the
    transaction's write lock (BEGIN IMMEDIATE) serialises claims.

    The lease is also the sender's fence. A row is taken over only once its lease_until has
    passed, and the new lease is then longer than any value the old sender can have written
    (see renew_leases), so "lease_until at most the highest lease I gave it" is true of a row
    exactly while it is still this sender's: every later write by the sender checks that.
    """
    due = sa.or_(
        sa.and_(_outbox.c.status == OutboxStatus.PENDING, _outbox.c.next_attempt_at <= now),
        sa.and_(_outbox.c.status == OutboxStatus.SENDING, _outbox.c.lease_until <= now),
    )
    stmt = (
        sa.select(_outbox.c.id, _outbox.c.member_id, _member.c.openid, _member.c.status,
                  _outbox.c.kind, _outbox.c.payload, _outbox.c.priority)
        .join(_member, _member.c.id == _outbox.c.member_id)
        .where(due)
        .order_by(_outbox.c.priority, _outbox.c.id)
        .limit(limit)
    )
    if exclude_platforms:
        stmt = stmt.where(_member.c.platform.not_in(list(exclude_platforms)))
    if dialect(session) == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=_outbox)
    rows = session.execute(stmt).all()
    if not rows:
        return []
    session.execute(
        sa.update(_outbox)
        .where(_outbox.c.id.in_([r.id for r in rows]))
        .values(status=OutboxStatus.SENDING, lease_until=lease_until)
    )
    return [ClaimedMessage(id=r.id, member_id=r.member_id, openid=r.openid, member_status=r.status,
                           kind=r.kind, payload=r.payload, priority=r.priority) for r in rows]


def renew_leases(
    session: Session, *, outbox_ids: Collection[int], lease: datetime, until: datetime
) -> list[int]:
    """Extend this sender's lease on rows it is still sending to `until`; the ids it still holds.

    `lease` is the highest lease_until the sender has given these rows. The caller renews
    only while its current lease has not run out (now < lease_until), so `until` stays below
    now + lease length, which is below any lease another sender takes over with.
    """
    if not outbox_ids:
        return []
    result = session.execute(
        sa.update(_outbox)
        .where(_outbox.c.id.in_(list(outbox_ids)), _outbox.c.status == OutboxStatus.SENDING,
               _outbox.c.lease_until <= lease)
        .values(lease_until=until)
        .returning(_outbox.c.id)
    )
    return [row[0] for row in result.all()]


def _still_ours(lease: datetime | None) -> list[Any]:
    """WHERE terms for a row this sender is still sending (see claim_due)."""
    terms: list[Any] = [_outbox.c.status == OutboxStatus.SENDING]
    if lease is not None:
        terms.append(_outbox.c.lease_until <= lease)
    return terms


def count_attempts(session: Session, *, outbox_id: int, outcome: str) -> int:
    """How many recorded attempts at this row ended with `outcome`."""
    stmt = sa.select(sa.func.count()).where(
        _attempt.c.outbox_id == outbox_id, _attempt.c.outcome == outcome
    )
    return int(session.execute(stmt).scalar_one())


def finish_attempt(
    session: Session,
    *,
    outbox_id: int,
    now: datetime,
    outcome: str,
    status: str,
    errcode: int | None = None,
    errmsg: str = "",
    next_attempt_at: datetime | None = None,
    lease: datetime | None = None,
) -> None:
    """Record one attempt and move the row to `status`, giving up the sender's lease.

    Only a row still being sent moves, and with `lease` (the highest lease_until this sender
    gave it) only while it is still this sender's: a sender whose lease ran out must not undo
    what the sender that took the row over has written (above all, never turn `sent` back
    into `pending`).
    """
    session.execute(sa.insert(_attempt).values(
        outbox_id=outbox_id, attempted_at=now, errcode=errcode, errmsg=errmsg[:500],
        outcome=outcome,
    ))
    values: dict[str, Any] = {"status": status, "lease_until": None, "last_errcode": errcode,
                              "attempts": _outbox.c.attempts + 1}
    if status == OutboxStatus.SENT:
        values["sent_at"] = now
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    session.execute(
        sa.update(_outbox)
        .where(_outbox.c.id == outbox_id, *_still_ours(lease))
        .values(**values)
    )


def hold_claimed(
    session: Session, *, outbox_ids: Collection[int], errcode: int | None,
    lease: datetime | None = None,
) -> None:
    """Hold leased rows unsent, because the member's window or budget is already known closed."""
    if not outbox_ids:
        return
    session.execute(
        sa.update(_outbox)
        .where(_outbox.c.id.in_(list(outbox_ids)), *_still_ours(lease))
        .values(status=OutboxStatus.HELD, lease_until=None, last_errcode=errcode)
    )


def enqueue_notice(
    session: Session, *, member_id: int, template_id: str, data: dict[str, Any], now: datetime
) -> bool:
    """Queue today's template notice for a member outside their window; False if already queued.

    Its dedupe key is also its client_msg_id, so neither we nor WeChat send it twice in a day.
    """
    key = notice_key(member_id, now)
    return _queue(session, member_id=member_id, kind=KIND_TEMPLATE,
                  payload=notice_payload(template_id, data, key), now=now,
                  priority=PRIORITY_REPLY, dedupe_key=key)


def finish_merged(
    session: Session, *, carrier_id: int, merged_ids: Collection[int], now: datetime,
    lease: datetime | None = None,
) -> None:
    """Several rows went out as ONE message: the carrier's attempt is the send, the others
    record that they were merged into it; all are sent together, in one transaction."""
    finish_attempt(session, outbox_id=carrier_id, now=now, outcome="sent",
                   status=OutboxStatus.SENT, errcode=0, lease=lease)
    for outbox_id in merged_ids:
        finish_attempt(session, outbox_id=outbox_id, now=now, outcome="merged",
                       status=OutboxStatus.SENT, errcode=0,
                       errmsg=f"merged into the message of outbox {carrier_id}", lease=lease)


def hold_unless_written(
    session: Session, *, outbox_ids: Collection[int], member_id: int,
    seen_message_at: datetime | None, errcode: int | None, lease: datetime | None = None,
) -> bool:
    """Hold leased rows, unless the member wrote since we judged their window (then they are due).

    True when held. The member's row is locked first, so their next push either sees these rows
    held (and releases them) or has already moved last_message_at, which we see here.
    """
    if not outbox_ids:
        return False
    current = last_message_at(session, member_id=member_id, lock=True)
    wrote = current is not None and (seen_message_at is None or current > seen_message_at)
    values: dict[str, Any] = {"lease_until": None, "last_errcode": errcode}
    values["status"] = OutboxStatus.PENDING if wrote else OutboxStatus.HELD
    session.execute(
        sa.update(_outbox)
        .where(_outbox.c.id.in_(list(outbox_ids)), *_still_ours(lease))
        .values(**values)
    )
    return not wrote


@dataclass(frozen=True)
class HeldMessage:
    """A held row that can ride on a passive reply."""

    id: int
    priority: int
    reply: Reply


# Runs on every message a member sends, so it is prebuilt (see RawStatement).
_HELD_FOR_AWAY = RawStatement(
    f"SELECT id, priority, payload FROM outbox WHERE member_id = ? AND status = '{OutboxStatus.HELD}' "
    "AND kind IN ('text', 'choices') ORDER BY priority, id LIMIT ?"
)


def held_for_away(session: Session, *, member_id: int, limit: int) -> list[HeldMessage]:
    """The member's most important held text/choices rows (priority, then age)."""
    found = []
    for row_id, priority, payload in _HELD_FOR_AWAY.execute(session, (member_id, limit)).fetchall():
        try:
            found.append(HeldMessage(id=row_id, priority=priority, reply=reply_from_json(payload)))
        except (ValueError, KeyError, TypeError):
            continue  # the sender records an unreadable row as failed
    return found


def mark_passive(session: Session, *, outbox_ids: Collection[int], now: datetime) -> None:
    """These rows went out inside a passive reply: sent, with one `passive` attempt each.

    Called in the push's own transaction after release_held made them pending; a row the
    handler removed (erasure) is skipped.
    """
    ids = list(outbox_ids)
    if not ids:
        return
    present = [r[0] for r in session.execute(
        sa.select(_outbox.c.id).where(_outbox.c.id.in_(ids),
                                      _outbox.c.status == OutboxStatus.PENDING)).all()]
    if not present:
        return
    session.execute(sa.insert(_attempt), [
        {"outbox_id": i, "attempted_at": now, "errcode": None, "errmsg": "in the passive reply",
         "outcome": "passive"} for i in present])
    session.execute(
        sa.update(_outbox).where(_outbox.c.id.in_(present))
        .values(status=OutboxStatus.SENT, sent_at=now, lease_until=None,
                attempts=_outbox.c.attempts + 1)
    )
