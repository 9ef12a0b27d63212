"""Follow-ups after a completed introduction ("Did you meet?"), and each connector's track record.

One row per side and round, unique, so scheduling twice or two workers asking at once never
ask twice. Round 2 exists only after a "not yet" in round 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from storage import outbox
from storage.models import FollowUp, Intro
from storage.sql import insert_ignore

_fu = FollowUp.__table__  # type: ignore[attr-defined]
_intro = Intro.__table__  # type: ignore[attr-defined]

FOLLOW_UP_AFTER = timedelta(days=7)
LAST_ROUND = 2
# FollowUp.status
PENDING, ASKED, ANSWERED, CANCELLED = "pending", "asked", "answered", "cancelled"
# FollowUp.answer
YES, NOT_YET, NOT_USEFUL = "yes", "not_yet", "not_useful"


@dataclass(frozen=True)
class FollowUpView:
    """One follow-up question, as plain values."""

    id: int
    intro_id: int
    member_id: int
    round: int
    due_at: datetime
    status: str
    answer: str | None
    answered_at: datetime | None


def _view(row: Any) -> FollowUpView:
    return FollowUpView(id=row.id, intro_id=row.intro_id, member_id=row.member_id, round=row.round,
                        due_at=row.due_at, status=row.status, answer=row.answer, answered_at=row.answered_at)


def schedule(session: Session, *, intro_id: int, member_ids: list[int], due_at: datetime,
             round_: int = 1) -> int:
    """Ask these members about this introduction at `due_at`; how many rows were new."""
    made = 0
    for mid in member_ids:
        made += insert_ignore(session, _fu, {
            "intro_id": intro_id, "member_id": mid, "round": round_, "due_at": due_at, "status": PENDING,
        }, conflict=["intro_id", "member_id", "round"])
    return made


def next_due(session: Session, *, now: datetime) -> FollowUpView | None:
    """The oldest follow-up due to be asked."""
    row = session.execute(sa.select(_fu).where(_fu.c.status == PENDING, _fu.c.due_at <= now)
                          .order_by(_fu.c.due_at, _fu.c.id).limit(1)).first()
    return _view(row) if row else None


def mark(session: Session, *, follow_up_id: int, status: str) -> bool:
    """Move a pending follow-up to asked or cancelled; False when another run got there first."""
    result = session.execute(sa.update(_fu).where(_fu.c.id == follow_up_id, _fu.c.status == PENDING)
                             .values(status=status))
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


def latest(session: Session, *, intro_id: int, member_id: int) -> FollowUpView | None:
    """The member's latest round for this introduction."""
    row = session.execute(sa.select(_fu).where(_fu.c.intro_id == intro_id, _fu.c.member_id == member_id)
                          .order_by(_fu.c.round.desc()).limit(1)).first()
    return _view(row) if row else None


def answer(session: Session, *, follow_up_id: int, value: str, now: datetime) -> bool:
    """Record an answer to an asked follow-up, once; False when it was answered before."""
    result = session.execute(sa.update(_fu).where(_fu.c.id == follow_up_id, _fu.c.status == ASKED)
                             .values(status=ANSWERED, answer=value, answered_at=now))
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


def due_follow_ups(session: Session, *, member_id: int, now: datetime) -> list[FollowUpView]:
    """For the digest: the member's follow-ups that are due and not answered yet."""
    rows = session.execute(sa.select(_fu).where(
        _fu.c.member_id == member_id, _fu.c.status.in_([PENDING, ASKED]), _fu.c.due_at <= now,
    ).order_by(_fu.c.due_at, _fu.c.id)).all()
    return [_view(r) for r in rows]


def connectors_of(kind: str, broker_id: int | None, path: list[int]) -> list[int]:
    """Who made an introduction happen: the broker, or the connectors along a request's path."""
    if kind == "broker":
        return [broker_id] if broker_id else []
    return path[1:-1]


def track_record(session: Session, *, member_id: int) -> tuple[int, int]:
    """(introductions made, meetings that followed) for a connector."""
    rows = session.execute(sa.select(_intro.c.id, _intro.c.kind, _intro.c.broker_id, _intro.c.path).where(
        _intro.c.status == "completed",
        sa.or_(_intro.c.broker_id == member_id, _intro.c.path.like(f"%{member_id}%")),
    )).all()
    made = [r.id for r in rows
            if member_id in connectors_of(r.kind, r.broker_id, [int(x) for x in json.loads(r.path)])]
    if not made:
        return 0, 0
    met = session.execute(sa.select(sa.func.count(sa.distinct(_fu.c.intro_id))).where(
        _fu.c.intro_id.in_(made), _fu.c.answer == YES)).scalar_one()
    return len(made), int(met)


def of_member(session: Session, *, member_id: int) -> list[FollowUpView]:
    """Every follow-up question the member was (or will be) asked."""
    rows = session.execute(sa.select(_fu).where(_fu.c.member_id == member_id).order_by(_fu.c.id)).all()
    return [_view(r) for r in rows]


def erase_intros(session: Session, *, intro_ids: list[int]) -> None:
    """Delete the follow-ups of introductions that are being erased, with their queued messages."""
    for intro_id in intro_ids:
        outbox.forget_by_key(session, pattern=f"followup:{intro_id}:%")
    if intro_ids:
        session.execute(sa.delete(_fu).where(_fu.c.intro_id.in_(intro_ids)))


def erase_member(session: Session, *, member_id: int) -> None:
    """Delete any follow-up row of the member left after their introductions went."""
    session.execute(sa.delete(_fu).where(_fu.c.member_id == member_id))
