"""Introductions and their steps: creation, limits, and the conditional transitions between states.

Every transition is a conditional UPDATE (… WHERE status = 'pending' …) and the caller acts only
when one row changed, so a double tap, a retry or two workers racing never act twice. Callers
that look at several steps of one introduction lock its row first (`get_intro(lock=True)`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlmodel import col

from storage import outbox
from storage.models import Connection, Intro, IntroStep, Member, MemberStatus

_intro = Intro.__table__  # type: ignore[attr-defined]
_step = IntroStep.__table__  # type: ignore[attr-defined]
_conn = Connection.__table__  # type: ignore[attr-defined]
_member = Member.__table__  # type: ignore[attr-defined]

KIND_REQUEST, KIND_BROKER = "request", "broker"
ROLE_CONNECTOR, ROLE_TARGET, ROLE_PARTY = "connector", "target", "party"
# Intro.status
PENDING, COMPLETED, DECLINED, EXPIRED = "pending", "completed", "declined", "expired"
# IntroStep.status adds: accepted, and closed (the introduction ended at another step).
ACCEPTED, CLOSED = "accepted", "closed"


@dataclass(frozen=True)
class IntroView:
    """One introduction, as plain values."""

    id: int
    kind: str
    requester_id: int | None
    target_id: int
    broker_id: int | None
    note: str
    path: list[int]
    status: str
    created_at: datetime
    finished_at: datetime | None
    ask_text: str | None = None  # the requester's ask, when a referral nudge started it


@dataclass(frozen=True)
class StepView:
    """One decision an introduction waits for (or waited for), as plain values."""

    id: int
    intro_id: int
    seq: int
    actor_id: int
    role: str
    status: str
    vouch: str
    created_at: datetime
    expires_at: datetime | None
    reminded_at: datetime | None
    decided_at: datetime | None


def _intro_view(row: Any) -> IntroView:
    return IntroView(id=row.id, kind=row.kind, requester_id=row.requester_id, target_id=row.target_id,
                     broker_id=row.broker_id, note=row.note, path=[int(x) for x in json.loads(row.path)],
                     status=row.status, created_at=row.created_at, finished_at=row.finished_at,
                     ask_text=row.ask_text)


def _step_view(row: Any) -> StepView:
    return StepView(id=row.id, intro_id=row.intro_id, seq=row.seq, actor_id=row.actor_id, role=row.role,
                    status=row.status, vouch=row.vouch, created_at=row.created_at,
                    expires_at=row.expires_at, reminded_at=row.reminded_at, decided_at=row.decided_at)


def create_intro(
    session: Session,
    *,
    kind: str,
    requester_id: int,
    target_id: int,
    broker_id: int | None,
    note: str,
    path: list[int],
    now: datetime,
    ask_text: str | None = None,
) -> IntroView:
    """A new pending introduction (its steps are added with add_step)."""
    new_id = session.execute(sa.insert(_intro).values(
        kind=kind, requester_id=requester_id, target_id=target_id, broker_id=broker_id, note=note,
        ask_text=ask_text, path=json.dumps(path), status=PENDING, created_at=now,
    ).returning(_intro.c.id)).scalar_one()
    intro = get_intro(session, intro_id=int(new_id))
    assert intro is not None
    return intro


def add_step(
    session: Session, *, intro_id: int, seq: int, actor_id: int, role: str, now: datetime, ttl: timedelta
) -> StepView:
    """A new pending step that waits for `actor_id`, expiring after `ttl`."""
    new_id = session.execute(sa.insert(_step).values(
        intro_id=intro_id, seq=seq, actor_id=actor_id, role=role, status=PENDING, vouch="",
        created_at=now, expires_at=now + ttl,
    ).returning(_step.c.id)).scalar_one()
    step = get_step(session, step_id=int(new_id))
    assert step is not None
    return step


def get_intro(session: Session, *, intro_id: int, lock: bool = False) -> IntroView | None:
    """One introduction; `lock` holds its row until the transaction ends (PostgreSQL)."""
    stmt = sa.select(_intro).where(_intro.c.id == intro_id)
    if lock:
        stmt = stmt.with_for_update()  # SQLite: BEGIN IMMEDIATE already serialises writers
    row = session.execute(stmt).first()
    return _intro_view(row) if row else None


def get_step(session: Session, *, step_id: int) -> StepView | None:
    """One step."""
    row = session.execute(sa.select(_step).where(_step.c.id == step_id)).first()
    return _step_view(row) if row else None


def steps_of(session: Session, *, intro_id: int) -> list[StepView]:
    """The steps of one introduction, in order."""
    rows = session.execute(sa.select(_step).where(_step.c.intro_id == intro_id)
                           .order_by(_step.c.seq, _step.c.id)).all()
    return [_step_view(r) for r in rows]


def decide(session: Session, *, step_id: int, actor_id: int, status: str, vouch: str, now: datetime) -> bool:
    """Accept or decline a pending step of `actor_id`; False when it was not theirs or not pending."""
    result = session.execute(
        sa.update(_step)
        .where(_step.c.id == step_id, _step.c.actor_id == actor_id, _step.c.status == PENDING)
        .values(status=status, vouch=vouch, decided_at=now)
    )
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


def finish(session: Session, *, intro_id: int, status: str, now: datetime) -> bool:
    """End a pending introduction as completed, declined or expired; False when it already ended."""
    result = session.execute(
        sa.update(_intro).where(_intro.c.id == intro_id, _intro.c.status == PENDING)
        .values(status=status, finished_at=now)
    )
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


def close_pending(session: Session, *, intro_id: int, now: datetime) -> list[StepView]:
    """Close the steps still pending in an introduction that just ended; the steps closed."""
    open_steps = [s for s in steps_of(session, intro_id=intro_id) if s.status == PENDING]
    session.execute(sa.update(_step).where(_step.c.intro_id == intro_id, _step.c.status == PENDING)
                    .values(status=CLOSED, decided_at=now))
    return open_steps


def expire_step(session: Session, *, step_id: int, now: datetime) -> bool:
    """Expire a pending step whose time is up; False when it is not (any more)."""
    result = session.execute(
        sa.update(_step).where(_step.c.id == step_id, _step.c.status == PENDING, _step.c.expires_at <= now)
        .values(status=EXPIRED, decided_at=now)
    )
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


def mark_reminded(session: Session, *, step_id: int, now: datetime) -> bool:
    """Note the one reminder of a pending step; False when it was reminded already."""
    result = session.execute(
        sa.update(_step).where(_step.c.id == step_id, _step.c.status == PENDING, _step.c.reminded_at.is_(None))
        .values(reminded_at=now)
    )
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


def next_due(session: Session, *, now: datetime, remind_after: timedelta) -> StepView | None:
    """The oldest pending step that is due to expire, or due for its one reminder."""
    due = sa.or_(
        _step.c.expires_at <= now,
        sa.and_(_step.c.reminded_at.is_(None), _step.c.created_at <= now - remind_after),
    )
    row = session.execute(sa.select(_step).where(_step.c.status == PENDING, due)
                          .order_by(_step.c.id).limit(1)).first()
    return _step_view(row) if row else None


def pending_for(session: Session, *, actor_id: int) -> list[StepView]:
    """The steps waiting for this member's decision, oldest first."""
    rows = session.execute(sa.select(_step).where(_step.c.actor_id == actor_id, _step.c.status == PENDING)
                           .order_by(_step.c.id)).all()
    return [_step_view(r) for r in rows]


def open_requests(session: Session, *, requester_id: int) -> list[IntroView]:
    """The member's own introduction requests that are still running."""
    rows = session.execute(sa.select(_intro).where(
        _intro.c.kind == KIND_REQUEST, _intro.c.requester_id == requester_id, _intro.c.status == PENDING,
    )).all()
    return [_intro_view(r) for r in rows]


def _failed_since(session: Session, pair: Any, since: datetime) -> datetime | None:
    stmt = sa.select(sa.func.max(_intro.c.finished_at)).where(
        pair, _intro.c.status.in_([DECLINED, EXPIRED]), _intro.c.finished_at > since)
    value = session.execute(stmt).scalar_one_or_none()
    return value if isinstance(value, datetime) else None


def last_failure(session: Session, *, requester_id: int, target_id: int, since: datetime) -> datetime | None:
    """When an introduction the requester knows of, to this target, last failed, if after `since`.

    Their own requests for the target, and broker introductions of the two of them (they were
    told of those). Not the target's requests for them: they never heard of those, and a
    refusal would tell them. Declines and expiries count alike: the requester was told the
    same about both, and a different cool-down would tell them which it was.
    """
    r, t = requester_id, target_id
    pair = sa.or_(
        sa.and_(_intro.c.kind == KIND_REQUEST, _intro.c.requester_id == r, _intro.c.target_id == t),
        sa.and_(_intro.c.kind == KIND_BROKER, sa.or_(
            sa.and_(_intro.c.requester_id == r, _intro.c.target_id == t),
            sa.and_(_intro.c.requester_id == t, _intro.c.target_id == r))),
    )
    return _failed_since(session, pair, since)


def pair_failed_since(session: Session, *, a: int, b: int, since: datetime) -> datetime | None:
    """When any introduction between a and b (either way, either kind) last failed, if after `since`.

    After a decline or an expiry nobody proposes the pair again for the cool-down: not a
    referral nudge, not a broker.
    """
    pair = sa.or_(sa.and_(_intro.c.requester_id == a, _intro.c.target_id == b),
                  sa.and_(_intro.c.requester_id == b, _intro.c.target_id == a))
    return _failed_since(session, pair, since)


def connector_load(session: Session, *, member_ids: list[int], since: datetime) -> dict[int, int]:
    """How many requests each member was asked to pass on since `since` (rolling window)."""
    if not member_ids:
        return {}
    rows = session.execute(
        sa.select(_step.c.actor_id, sa.func.count()).where(
            _step.c.actor_id.in_(member_ids), _step.c.role == ROLE_CONNECTOR, _step.c.created_at > since,
        ).group_by(_step.c.actor_id)
    ).all()
    counts = {mid: 0 for mid in member_ids}
    counts.update({int(a): int(n) for a, n in rows})
    return counts


def responsiveness(session: Session, *, member_ids: list[int]) -> dict[int, tuple[int, int]]:
    """(pending steps, expired steps) per member: fewer of both means more responsive."""
    out = {mid: (0, 0) for mid in member_ids}
    if not member_ids:
        return out
    rows = session.execute(
        sa.select(_step.c.actor_id, _step.c.status, sa.func.count())
        .where(_step.c.actor_id.in_(member_ids), _step.c.status.in_([PENDING, EXPIRED]))
        .group_by(_step.c.actor_id, _step.c.status)
    ).all()
    for actor, status, n in rows:
        pending, expired = out[int(actor)]
        out[int(actor)] = (int(n), expired) if status == PENDING else (pending, int(n))
    return out


def mutual_contacts(session: Session, *, a: int, b: int) -> list[tuple[int, int | None, int | None]]:
    """Active members connected to both a and b: (id, their strength toward a, toward b)."""
    ca, cb = _conn.alias("ca"), _conn.alias("cb")
    rows = session.execute(
        sa.select(ca.c.member_id, ca.c.strength, cb.c.strength)
        .join(cb, sa.and_(cb.c.member_id == ca.c.member_id, cb.c.contact_id == b))
        .join(_member, _member.c.id == ca.c.member_id)
        .where(ca.c.contact_id == a, _member.c.status == MemberStatus.ACTIVE,
               ca.c.member_id.not_in([a, b]))
        .order_by(ca.c.member_id)
    ).all()
    return [(int(m), sa_, sb) for m, sa_, sb in rows]


def open_broker_between(session: Session, *, a: int, b: int) -> bool:
    """True when a broker introduction of a and b (either way round) is still running."""
    pair = sa.or_(sa.and_(_intro.c.requester_id == a, _intro.c.target_id == b),
                  sa.and_(_intro.c.requester_id == b, _intro.c.target_id == a))
    stmt = sa.select(_intro.c.id).where(_intro.c.kind == KIND_BROKER, _intro.c.status == PENDING, pair)
    return session.execute(stmt.limit(1)).first() is not None


def involving(session: Session, *, member_id: int) -> list[IntroView]:
    """Every introduction the member takes part in: asked, asked for, brokered, or on its path."""
    actor_of = sa.select(_step.c.intro_id).where(_step.c.actor_id == member_id)
    rows = session.execute(sa.select(_intro).where(sa.or_(
        _intro.c.requester_id == member_id, _intro.c.target_id == member_id,
        _intro.c.broker_id == member_id, _intro.c.id.in_(actor_of),
        # A later hop of a 3rd-degree request is on the path before its step exists.
        _intro.c.path.like(f"%{member_id}%"),
    )).order_by(_intro.c.id)).all()
    return [v for v in (_intro_view(r) for r in rows)
            if member_id in v.path or member_id in (v.requester_id, v.target_id, v.broker_id)
            or _acted(session, v.id, member_id)]


def _acted(session: Session, intro_id: int, member_id: int) -> bool:
    stmt = sa.select(_step.c.id).where(_step.c.intro_id == intro_id, _step.c.actor_id == member_id)
    return session.execute(stmt.limit(1)).first() is not None


def erase_member(session: Session, *, member_id: int) -> int:
    """Delete every introduction the member takes part in, with its steps; how many went.

    They vanish from everyone's `requests` with them: an introduction cannot go on without
    one of its people.
    """
    ids = [v.id for v in involving(session, member_id=member_id)]
    for intro_id in ids:
        # Its messages are about someone who is gone, even those queued for other members.
        outbox.forget_by_key(session, pattern=f"intro:{intro_id}:%")
    if ids:
        session.execute(sa.delete(_step).where(_step.c.intro_id.in_(ids)))
        session.execute(sa.delete(_intro).where(_intro.c.id.in_(ids)))
    return len(ids)


def steps_by(session: Session, *, actor_id: int) -> list[StepView]:
    """Every step that waited for this member (for their data export)."""
    rows = session.execute(sa.select(_step).where(col(IntroStep.actor_id) == actor_id)
                           .order_by(_step.c.id)).all()
    return [_step_view(r) for r in rows]
