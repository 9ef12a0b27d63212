"""The outbox: rows written in the same transaction as the change that causes them."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from storage.budget import last_message_at, notice_key, notice_payload
from storage.models import Member, OutboxAttempt, OutboxMention, OutboxMessage, OutboxStatus
from storage.sql import RawStatement, dialect, insert_ignore_returning, to_db

_outbox = OutboxMessage.__table__  # type: ignore[attr-defined]
_attempt = OutboxAttempt.__table__  # type: ignore[attr-defined]
_member = Member.__table__  # type: ignore[attr-defined]
_mention = OutboxMention.__table__  # type: ignore[attr-defined]

# What is left of a message once its text may no longer be kept: it still counts against the
# member's budget, but says nothing and is never sent.
REDACTED = '{"type": "none", "redacted": true}'
# Rows that have not gone out yet; erasing a member they mention deletes them instead.
UNSENT = (OutboxStatus.PENDING, OutboxStatus.HELD)

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
    kind: str,
    payload: str,
    now: datetime,
    priority: int = PRIORITY_DECISION,
    dedupe_key: str | None = None,
    mentions: Collection[int] = (),
) -> bool:
    """Queue a message (`payload`, JSON of its `kind`) for a member; False when the key was seen.

    `mentions` are the other members whose card data the message shows (see erase_mentions).
    Handlers and jobs queue through handlers.outgoing.tell, which writes the payload.
    """
    return _queue(session, member_id=member_id, kind=kind, payload=payload, now=now,
                  priority=priority, dedupe_key=dedupe_key, mentions=mentions)


def _queue(
    session: Session,
    *,
    member_id: int,
    kind: str,
    payload: str,
    now: datetime,
    priority: int,
    dedupe_key: str | None,
    mentions: Collection[int] = (),
) -> bool:
    """Insert one pending row and its mentions; False when the dedupe key was queued before."""
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
        new_id = session.execute(sa.insert(_outbox).values(**values).returning(_outbox.c.id)).scalar_one()
    else:
        new_id = insert_ignore_returning(session, _outbox, values, conflict=["dedupe_key"], column="id")
        if new_id is None:
            return False
    add_mentions(session, mentions={new_id: mentions})
    return True


def add_mentions(session: Session, *, mentions: dict[int, Collection[int]]) -> None:
    """Record which members' card data each new outbox row shows (members still here only)."""
    wanted = sorted({m for members in mentions.values() for m in members})
    if not wanted:
        return
    present = {int(i) for i in session.execute(
        sa.select(_member.c.id).where(_member.c.id.in_(wanted))).scalars()}
    rows = [{"outbox_id": outbox_id, "member_id": m} for outbox_id, members in mentions.items()
            for m in sorted(set(members) & present)]
    if rows:
        session.execute(sa.insert(_mention), rows)


def erase_mentions(session: Session, *, member_id: int) -> None:
    """Take an erased member's data out of every message to others that shows it.

    Unsent messages go (the jobs that wrote them write them again without the member, where
    that still makes sense); what was already sent, or is on its way this instant, keeps its
    row for the budget's count but loses its text.
    """
    ids = sa.select(_mention.c.outbox_id).where(_mention.c.member_id == member_id)
    unsent = [int(i) for i in session.execute(
        sa.select(_outbox.c.id).where(_outbox.c.id.in_(ids), _outbox.c.status.in_(UNSENT))).scalars()]
    session.execute(sa.update(_outbox).where(_outbox.c.id.in_(ids), _outbox.c.status.not_in(UNSENT))
                    .values(payload=REDACTED))
    session.execute(sa.delete(_mention).where(_mention.c.member_id == member_id))
    delete_rows(session, outbox_ids=unsent)


def delete_rows(session: Session, *, outbox_ids: Collection[int]) -> None:
    """Delete outbox rows with their attempts and mentions."""
    ids = list(outbox_ids)
    if not ids:
        return
    for table in (_attempt, _mention):
        session.execute(sa.delete(table).where(table.c.outbox_id.in_(ids)))
    session.execute(sa.delete(_outbox).where(_outbox.c.id.in_(ids)))


def forget_by_key(session: Session, *, pattern: str) -> None:
    """Delete every row whose dedupe key matches a LIKE pattern (sent or not): its subject is gone."""
    ids = [int(i) for i in session.execute(
        sa.select(_outbox.c.id).where(_outbox.c.dedupe_key.like(pattern))).scalars()]
    delete_rows(session, outbox_ids=ids)


def forget_member(session: Session, *, member_id: int) -> None:
    """Delete every message to this member, sent or not (erasure)."""
    ids = [int(i) for i in session.execute(
        sa.select(_outbox.c.id).where(_outbox.c.member_id == member_id)).scalars()]
    delete_rows(session, outbox_ids=ids)


def redact_sent(session: Session, *, before: datetime) -> int:
    """Drop the text of messages that left (or were given up) before `before`; how many.

    Their rows and attempts stay, so the budget still counts what was sent.
    """
    done = sa.and_(_outbox.c.status.in_([OutboxStatus.SENT, OutboxStatus.UNDELIVERABLE, OutboxStatus.FAILED]),
                   sa.func.coalesce(_outbox.c.sent_at, _outbox.c.created_at) < before,
                   _outbox.c.payload != REDACTED)
    ids = [int(i) for i in session.execute(sa.select(_outbox.c.id).where(done)).scalars()]
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        session.execute(sa.update(_outbox).where(_outbox.c.id.in_(chunk)).values(payload=REDACTED))
        session.execute(sa.delete(_mention).where(_mention.c.outbox_id.in_(chunk)))
    return len(ids)


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
    # INSERT … SELECT … WHERE EXISTS: a row erased while it was being sent records nothing.
    attempt = sa.select(sa.literal(outbox_id), sa.literal(now, type_=_attempt.c.attempted_at.type),
                        sa.literal(errcode, type_=sa.Integer()), sa.literal(errmsg[:500]),
                        sa.literal(outcome)).where(sa.exists().where(_outbox.c.id == outbox_id))
    session.execute(sa.insert(_attempt).from_select(
        ["outbox_id", "attempted_at", "errcode", "errmsg", "outcome"], attempt))
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
    payload: str  # JSON of a text or choices reply


# Runs on every message a member sends, so it is prebuilt (see RawStatement).
_HELD_FOR_AWAY = RawStatement(
    f"SELECT id, priority, payload FROM outbox WHERE member_id = ? AND status = '{OutboxStatus.HELD}' "
    "AND kind IN ('text', 'choices') ORDER BY priority, id LIMIT ?"
)


def held_for_away(session: Session, *, member_id: int, limit: int) -> list[HeldMessage]:
    """The member's most important held text/choices rows (priority, then age)."""
    return [HeldMessage(id=row_id, priority=priority, payload=payload)
            for row_id, priority, payload in _HELD_FOR_AWAY.execute(session, (member_id, limit)).fetchall()]


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


def move_member(session: Session, *, from_id: int, to_id: int) -> None:
    """Every message to or about `from_id` is now to or about `to_id` (linking two identities)."""
    session.execute(sa.update(_outbox).where(_outbox.c.member_id == from_id).values(member_id=to_id))
    both = sa.select(_mention.c.outbox_id).where(_mention.c.member_id == to_id)
    session.execute(sa.delete(_mention).where(_mention.c.member_id == from_id, _mention.c.outbox_id.in_(both)))
    session.execute(sa.update(_mention).where(_mention.c.member_id == from_id).values(member_id=to_id))
    # A message to the member about themselves says nothing worth redacting later.
    session.execute(sa.delete(_mention).where(_mention.c.member_id == to_id, _mention.c.outbox_id.in_(
        sa.select(_outbox.c.id).where(_outbox.c.member_id == to_id))))
