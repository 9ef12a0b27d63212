"""Digests: who is due as of a time, and the set-based queries that fill one batch of digests.

A member's digest for one period is the outbox row with the unique key `digest:{member}:{period}`,
so running the job twice, or on two workers, never queues a second one. An empty digest is not
sent, but it still leaves a row (status `empty`, never claimed by the sender) so that the
period counts as done and later runs do not build it again.

Everything here works on a batch of members at once (a few queries per batch, not per member),
so that a run over 100,000 members stays fast and its memory bounded.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.orm import Session

from storage.models import (
    Ask,
    Card,
    Connection,
    FollowUp,
    Intro,
    IntroStep,
    Member,
    MemberSettings,
    MemberStatus,
    OutboxMessage,
)

_member = Member.__table__  # type: ignore[attr-defined]
_settings = MemberSettings.__table__  # type: ignore[attr-defined]
_outbox = OutboxMessage.__table__  # type: ignore[attr-defined]
_conn = Connection.__table__  # type: ignore[attr-defined]
_intro = Intro.__table__  # type: ignore[attr-defined]
_step = IntroStep.__table__  # type: ignore[attr-defined]
_ask = Ask.__table__  # type: ignore[attr-defined]
_fu = FollowUp.__table__  # type: ignore[attr-defined]
_card = Card.__table__  # type: ignore[attr-defined]

WEEKLY, DAILY, OFF = "weekly", "daily", "off"
CADENCES = (WEEKLY, DAILY, OFF)
DIGEST_TIME = time(9, 0)
# A period missed for longer than this (the server was down) is skipped, not sent late: a
# "Monday" digest on Tuesday evening, or yesterday's daily digest at 08:00, helps nobody.
CATCH_UP = timedelta(hours=12)
# Outbox status of the marker an empty digest leaves; the sender never claims it.
EMPTY = "empty"
KIND_EMPTY = "none"


@dataclass(frozen=True)
class Period:
    """One digest period of one member: its key, and the window its news come from."""

    key: str  # 2026-W10 (weekly) or 2026-03-02 (daily), in the member's time zone
    start: datetime  # 09:00 local on the period's day, as aware UTC
    since: datetime  # the previous period's start: news from [since, start) go in this digest


def zone(name: str | None, default: str) -> ZoneInfo:
    """The member's time zone, or the scheduler's when unset or unknown."""
    for candidate in (name, default):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("Asia/Shanghai")


def current_period(cadence: str, tz: ZoneInfo, now: datetime) -> Period | None:
    """The period whose 09:00 local has passed most recently, if it is still due (within CATCH_UP)."""
    if cadence not in (WEEKLY, DAILY):
        return None
    local = now.astimezone(tz)
    day: date = local.date()
    if cadence == WEEKLY:
        day = day - timedelta(days=day.weekday())  # Monday of this ISO week
    start = datetime.combine(day, DIGEST_TIME, tzinfo=tz)
    if start > local:
        day = day - timedelta(days=7 if cadence == WEEKLY else 1)
        start = datetime.combine(day, DIGEST_TIME, tzinfo=tz)
    if local - start >= CATCH_UP:
        return None
    if cadence == WEEKLY:
        year, week, _ = day.isocalendar()
        key = f"{year}-W{week:02d}"
        prev = day - timedelta(days=7)
    else:
        key = day.isoformat()
        prev = day - timedelta(days=1)
    since = datetime.combine(prev, DIGEST_TIME, tzinfo=tz)
    return Period(key=key, start=start.astimezone(now.tzinfo), since=since.astimezone(now.tzinfo))


def dedupe_key(member_id: int, period: Period) -> str:
    """The unique outbox key of a member's digest for one period."""
    return f"digest:{member_id}:{period.key}"


@dataclass(frozen=True)
class Candidate:
    """An active member whose digest is not off, with what deciding and writing it needs."""

    member_id: int
    lang: str | None
    cadence: str
    timezone: str | None


def candidates(session: Session, *, after_id: int, limit: int) -> list[Candidate]:
    """The next active members (by id, after `after_id`) whose digest is not off."""
    cadence = sa.func.coalesce(_settings.c.digest, WEEKLY)
    rows = session.execute(
        sa.select(_member.c.id, _member.c.lang, cadence, _settings.c.timezone)
        .select_from(_member.outerjoin(_settings, _settings.c.member_id == _member.c.id))
        .where(_member.c.id > after_id, _member.c.status == MemberStatus.ACTIVE, cadence != OFF,
               _member.c.merged_into.is_(None))
        .order_by(_member.c.id).limit(limit)
    ).all()
    return [Candidate(member_id=int(r[0]), lang=r[1], cadence=str(r[2]), timezone=r[3]) for r in rows]


def existing_keys(session: Session, *, keys: list[str]) -> set[str]:
    """Which of these digest keys are in the outbox already."""
    if not keys:
        return set()
    rows = session.execute(sa.select(_outbox.c.dedupe_key).where(_outbox.c.dedupe_key.in_(keys))).scalars()
    return {str(k) for k in rows}


# --- the contents of a batch, a few queries for all its members ---

@dataclass(frozen=True)
class PendingStep:
    """A decision waiting for a member."""

    step_id: int
    actor_id: int
    role: str
    seq: int
    intro_kind: str
    requester_id: int | None
    target_id: int
    broker_id: int | None
    path: list[int]


@dataclass(frozen=True)
class DoneIntro:
    """A completed introduction a member took part in."""

    intro_id: int
    kind: str
    requester_id: int
    target_id: int
    broker_id: int | None
    path: list[int]
    finished_at: datetime


def pending_steps(session: Session, *, member_ids: list[int]) -> dict[int, list[PendingStep]]:
    """The pending steps of pending introductions that wait for these members, oldest first."""
    out: dict[int, list[PendingStep]] = defaultdict(list)
    if not member_ids:
        return out
    rows = session.execute(
        sa.select(_step.c.id, _step.c.actor_id, _step.c.role, _step.c.seq, _intro.c.kind,
                  _intro.c.requester_id, _intro.c.target_id, _intro.c.broker_id, _intro.c.path)
        .join(_intro, _intro.c.id == _step.c.intro_id)
        .where(_step.c.actor_id.in_(member_ids), _step.c.status == "pending", _intro.c.status == "pending")
        .order_by(_step.c.id)
    ).all()
    for r in rows:
        out[int(r[1])].append(PendingStep(step_id=int(r[0]), actor_id=int(r[1]), role=r[2], seq=int(r[3]),
                                          intro_kind=r[4], requester_id=r[5], target_id=int(r[6]),
                                          broker_id=r[7], path=[int(x) for x in json.loads(r[8])]))
    return out


def completed_intros(session: Session, *, member_ids: list[int], since: datetime,
                     until: datetime) -> dict[int, list[DoneIntro]]:
    """Introductions completed in [since, until) that each member asked for, was introduced in,
    brokered or passed on as a connector."""
    out: dict[int, list[DoneIntro]] = defaultdict(list)
    if not member_ids:
        return out
    wanted = set(member_ids)
    window = sa.and_(_intro.c.status == "completed", _intro.c.finished_at >= since,
                     _intro.c.finished_at < until)
    cols = (_intro.c.id, _intro.c.kind, _intro.c.requester_id, _intro.c.target_id, _intro.c.broker_id,
            _intro.c.path, _intro.c.finished_at)
    direct: Sequence[Any] = session.execute(sa.select(*cols).where(window, sa.or_(
        _intro.c.requester_id.in_(member_ids), _intro.c.target_id.in_(member_ids),
        _intro.c.broker_id.in_(member_ids)))).all()
    via: Sequence[Any] = session.execute(
        sa.select(*cols, _step.c.actor_id).join(_step, _step.c.intro_id == _intro.c.id)
        .where(window, _step.c.actor_id.in_(member_ids), _step.c.role == "connector")).all()
    seen: set[tuple[int, int]] = set()

    def add(member_id: int, r: Any) -> None:
        if (member_id, int(r[0])) in seen:
            return
        seen.add((member_id, int(r[0])))
        out[member_id].append(DoneIntro(intro_id=int(r[0]), kind=r[1], requester_id=int(r[2] or 0),
                                        target_id=int(r[3]), broker_id=r[4],
                                        path=[int(x) for x in json.loads(r[5])], finished_at=r[6]))

    for r in direct:
        for who in (r[2], r[3], r[4]):
            if who is not None and int(who) in wanted:
                add(int(who), r)
    for r in via:
        add(int(r[7]), r)
    for items in out.values():
        items.sort(key=lambda d: (d.finished_at, d.intro_id))
    return out


def active_contacts(session: Session, *, member_ids: list[int]) -> dict[int, set[int]]:
    """Each member's active contacts."""
    out: dict[int, set[int]] = defaultdict(set)
    if not member_ids:
        return out
    rows = session.execute(
        sa.select(_conn.c.member_id, _conn.c.contact_id).join(_member, _member.c.id == _conn.c.contact_id)
        .where(_conn.c.member_id.in_(member_ids), _member.c.status == MemberStatus.ACTIVE)
    ).all()
    for m, c in rows:
        out[int(m)].add(int(c))
    return out


@dataclass(frozen=True)
class NewEdge:
    """A connection made between two active members (a < b)."""

    a: int
    b: int
    created_at: datetime


def new_edges(session: Session, *, since: datetime, until: datetime) -> dict[int, list[NewEdge]]:
    """Connections made in [since, until) between active members, indexed by both ends.

    Read once per run (the window's new connections are few next to all of them), so that each
    batch only has to look its members' contacts up in it.
    """
    other = Member.__table__.alias("other")  # type: ignore[attr-defined]
    rows = session.execute(
        sa.select(_conn.c.member_id, _conn.c.contact_id, _conn.c.created_at)
        .join(_member, _member.c.id == _conn.c.member_id)
        .join(other, other.c.id == _conn.c.contact_id)
        .where(_conn.c.created_at >= since, _conn.c.created_at < until, _conn.c.member_id < _conn.c.contact_id,
               _member.c.status == MemberStatus.ACTIVE, other.c.status == MemberStatus.ACTIVE)
    ).all()
    out: dict[int, list[NewEdge]] = defaultdict(list)
    for a, b, at in rows:
        edge = NewEdge(a=int(a), b=int(b), created_at=at)
        out[edge.a].append(edge)
        out[edge.b].append(edge)
    return out


def with_follow_ups(session: Session, *, member_ids: list[int], now: datetime) -> set[int]:
    """Members among these with a follow-up that is due and unanswered."""
    if not member_ids:
        return set()
    rows = session.execute(sa.select(_fu.c.member_id).distinct().where(
        _fu.c.member_id.in_(member_ids), _fu.c.status.in_(["pending", "asked"]), _fu.c.due_at <= now)).scalars()
    return {int(x) for x in rows}


def direct_pairs(session: Session, *, pairs: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Which (viewer, owner) pairs are connected with the owner active (1st degree)."""
    if not pairs:
        return set()
    viewers = sorted({v for v, _ in pairs})
    owners = {o for _, o in pairs}
    rows = session.execute(
        sa.select(_conn.c.member_id, _conn.c.contact_id).join(_member, _member.c.id == _conn.c.contact_id)
        .where(_conn.c.member_id.in_(viewers), _member.c.status == MemberStatus.ACTIVE)
    ).all()
    return {(int(v), int(o)) for v, o in rows if int(o) in owners and (int(v), int(o)) in pairs}


def names_and_levels(session: Session, *, member_ids: set[int]) -> dict[int, tuple[str | None, dict[str, str]]]:
    """Card name and visibility overrides of these members (for the visibility rule)."""
    if not member_ids:
        return {}
    ids = sorted(member_ids)
    names: dict[int, str | None] = dict(session.execute(
        sa.select(_card.c.member_id, _card.c.name).where(_card.c.member_id.in_(ids))).all())
    levels: dict[int, str | None] = dict(session.execute(
        sa.select(_settings.c.member_id, _settings.c.visibility).where(_settings.c.member_id.in_(ids))).all())
    return {mid: (names.get(mid), dict(json.loads(levels.get(mid) or "{}"))) for mid in ids}


def stealthy(session: Session, *, member_ids: set[int]) -> set[int]:
    """Which of these members are in stealth (never named beyond their own connections)."""
    if not member_ids:
        return set()
    rows = session.execute(sa.select(_settings.c.member_id).where(
        _settings.c.member_id.in_(sorted(member_ids)), _settings.c.stealth.is_(True))).scalars()
    return {int(x) for x in rows}


def second_degree_pairs(session: Session, *, pairs: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Which (viewer, owner) pairs have an active mutual contact, the owner active (2nd degree)."""
    if not pairs:
        return set()
    viewers = sorted({v for v, _ in pairs})
    owners = sorted({o for _, o in pairs})
    via, owner = _conn.alias("via"), _member.alias("owner")
    rows = session.execute(
        sa.select(_conn.c.member_id, via.c.contact_id).distinct()
        .join(via, via.c.member_id == _conn.c.contact_id)
        .join(_member, _member.c.id == _conn.c.contact_id)
        .join(owner, owner.c.id == via.c.contact_id)
        .where(_conn.c.member_id.in_(viewers), via.c.contact_id.in_(owners),
               _member.c.status == MemberStatus.ACTIVE, owner.c.status == MemberStatus.ACTIVE)
    ).all()
    return {(int(v), int(o)) for v, o in rows if (int(v), int(o)) in pairs}


@dataclass(frozen=True)
class AskRow:
    """An open ask, as the digest needs it."""

    id: int
    member_id: int
    text: str
    status: str
    created_at: datetime
    expires_at: datetime


def contacts_open_asks(session: Session, *, contacts: dict[int, set[int]], now: datetime) -> dict[int, list[AskRow]]:
    """For each member, the open asks of their active contacts (as `active_contacts` gave them)."""
    out: dict[int, list[AskRow]] = defaultdict(list)
    everyone = set().union(*contacts.values()) if contacts else set()
    # The contacts' own asks, one indexed lookup; joining connections to asks made SQLite scan.
    by_author = own_open_asks(session, member_ids=sorted(everyone), now=now)
    if not by_author:
        return out
    for member_id, mine in contacts.items():
        found = [a for c in mine for a in by_author.get(c, ())]
        if found:
            out[member_id] = sorted(found, key=lambda a: a.id)
    return out


def own_open_asks(session: Session, *, member_ids: list[int], now: datetime) -> dict[int, list[AskRow]]:
    """Each member's own open asks, oldest first."""
    out: dict[int, list[AskRow]] = defaultdict(list)
    if not member_ids:
        return out
    rows = session.execute(
        sa.select(_ask.c.id, _ask.c.member_id, _ask.c.text, _ask.c.status, _ask.c.created_at, _ask.c.expires_at)
        .where(_ask.c.member_id.in_(member_ids), _ask.c.status == "open", _ask.c.expires_at > now)
        .order_by(_ask.c.id)
    ).all()
    for r in rows:
        out[int(r[1])].append(AskRow(id=int(r[0]), member_id=int(r[1]), text=r[2], status=r[3],
                                     created_at=r[4], expires_at=r[5]))
    return out


def match_cards(session: Session, *, member_ids: set[int]) -> dict[int, dict[str, Any]]:
    """The card fields asks are matched against, for these members."""
    if not member_ids:
        return {}
    rows = session.execute(
        sa.select(_card.c.member_id, _card.c.offers, _card.c.title, _card.c.industry, _card.c.company)
        .where(_card.c.member_id.in_(sorted(member_ids)))
    ).all()
    return {int(r[0]): {"offers": list(json.loads(r[1] or "[]")), "title": r[2], "industry": r[3],
                        "company": r[4]} for r in rows}


def paused(session: Session, *, member_ids: set[int], now: datetime) -> set[int]:
    """Which of these members have paused introductions and nudges."""
    if not member_ids:
        return set()
    rows = session.execute(sa.select(_settings.c.member_id).where(
        _settings.c.member_id.in_(sorted(member_ids)), _settings.c.paused_until > now)).scalars()
    return {int(x) for x in rows}


def queue_many(session: Session, *, rows: list[dict[str, Any]],
               mentions: dict[str, set[int]] | None = None) -> int:
    """Insert outbox rows at once, skipping keys queued before; how many were new.

    The batch's digests go in one statement: one INSERT per member was most of a run's time.
    `mentions` maps a row's dedupe key to the members whose card data it shows.
    """
    if not rows:
        return 0
    from sqlalchemy.dialects import postgresql, sqlite

    from storage.outbox import add_mentions
    from storage.sql import dialect

    ins: Any = postgresql.insert(_outbox) if dialect(session) == "postgresql" else sqlite.insert(_outbox)
    stmt = ins.on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(_outbox.c.id,
                                                                              _outbox.c.dedupe_key)
    made = session.execute(stmt, rows).all()
    if mentions:
        add_mentions(session, mentions={int(i): mentions.get(str(k), set()) for i, k in made})
    return len(made)
