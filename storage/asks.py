"""Asks and referral nudges: posting, listing and closing asks, matching them against cards,
and the once-ever nudge of a connector for each (ask, candidate) pair.

Matching uses the search tokenizer (jieba for Chinese), so 律师 in an ask finds 律师事务所 on a
card. The candidate's offers, title, industry and company are tokenized at match time; the
search index only narrows down who is worth tokenizing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from storage import cards as card_store
from storage import outbox, privacy
from storage.models import Ask, Connection, Member, MemberStatus, Nudge
from storage.search import tokenize
from storage.sql import insert_ignore

_ask = Ask.__table__  # type: ignore[attr-defined]
_nudge = Nudge.__table__  # type: ignore[attr-defined]
_conn = Connection.__table__  # type: ignore[attr-defined]
_member = Member.__table__  # type: ignore[attr-defined]

ASK_MAX = 200
ASK_TTL = timedelta(days=30)
OPEN, CLOSED, EXPIRED = "open", "closed", "expired"
# Nudge.status
SENT, INTRODUCED, NOT_NOW = "sent", "introduced", "not_now"
NUDGE_WINDOW = timedelta(days=7)  # "3 nudges a week" is a rolling window
NUDGE_WEEKLY = 3
# The fields an ask is matched against (PRODUCT.md, Asks).
MATCH_FIELDS = ("offers", "title", "industry", "company")
# Words that say how someone asks, not what they need; matching on them would nudge at random.
STOPWORDS = frozenset({
    "a", "an", "the", "for", "to", "of", "and", "or", "in", "on", "at", "with", "by", "from", "about",
    "is", "are", "be", "me", "my", "i", "we", "our", "you", "your", "who", "can", "could", "would",
    "any", "anyone", "someone", "somebody", "some", "need", "needs", "needed", "looking", "look",
    "seek", "seeking", "want", "wanted", "help", "please", "know", "find", "good", "great", "new",
    "需要", "寻找", "找个", "一位", "一个", "有没有", "认识", "帮忙", "求助", "请问", "推荐", "谁",
    "我们", "我", "想", "希望", "可以", "有人", "朋友",
})


@dataclass(frozen=True)
class AskView:
    """One ask, as plain values."""

    id: int
    member_id: int
    text: str
    status: str
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None


@dataclass(frozen=True)
class AskMatch:
    """A member whose card matches an ask: which of MATCH_FIELDS matched, and on which words.

    The matched fields may be hidden from whoever reads this; show values only through
    handlers.visibility.
    """

    ask: AskView
    member_id: int
    fields: tuple[str, ...]
    words: tuple[str, ...]


@dataclass(frozen=True)
class NudgeView:
    """One referral nudge, as plain values."""

    id: int
    ask_id: int
    candidate_id: int
    connector_id: int
    status: str
    created_at: datetime
    decided_at: datetime | None


def _ask_view(row: Any) -> AskView:
    return AskView(id=row.id, member_id=row.member_id, text=row.text, status=row.status,
                   created_at=row.created_at, expires_at=row.expires_at, closed_at=row.closed_at)


def _nudge_view(row: Any) -> NudgeView:
    return NudgeView(id=row.id, ask_id=row.ask_id, candidate_id=row.candidate_id,
                     connector_id=row.connector_id, status=row.status, created_at=row.created_at,
                     decided_at=row.decided_at)


def ask_words(text: str) -> frozenset[str]:
    """The words of an ask that matter for matching."""
    return frozenset(w for w in tokenize(text) if w not in STOPWORDS)


# --- asks ---

def create(session: Session, *, member_id: int, text: str, now: datetime) -> AskView:
    """Post an ask; it stays open for 30 days."""
    new_id = session.execute(sa.insert(_ask).values(
        member_id=member_id, text=text, status=OPEN, created_at=now, expires_at=now + ASK_TTL,
    ).returning(_ask.c.id)).scalar_one()
    found = get(session, ask_id=int(new_id))
    assert found is not None
    return found


def get(session: Session, *, ask_id: int) -> AskView | None:
    """One ask."""
    row = session.execute(sa.select(_ask).where(_ask.c.id == ask_id)).first()
    return _ask_view(row) if row else None


def is_open(ask: AskView, now: datetime) -> bool:
    """Open and not yet past its 30 days (the job marks expiry lazily)."""
    return ask.status == OPEN and ask.expires_at > now


def open_asks(session: Session, *, member_id: int, now: datetime) -> list[AskView]:
    """The member's open asks, oldest first."""
    rows = session.execute(sa.select(_ask).where(
        _ask.c.member_id == member_id, _ask.c.status == OPEN, _ask.c.expires_at > now,
    ).order_by(_ask.c.id)).all()
    return [_ask_view(r) for r in rows]


def close(session: Session, *, member_id: int, ask_id: int, now: datetime) -> str:
    """Close one of the member's asks: 'closed', 'unknown' (not theirs or none), 'closed_before', 'expired'."""
    found = get(session, ask_id=ask_id)
    if found is None or found.member_id != member_id:
        return "unknown"
    if found.status == CLOSED:
        return "closed_before"
    if not is_open(found, now):
        return "expired"
    result = session.execute(sa.update(_ask).where(_ask.c.id == ask_id, _ask.c.status == OPEN)
                             .values(status=CLOSED, closed_at=now))
    return "closed" if int(result.rowcount) == 1 else "closed_before"  # type: ignore[attr-defined]


def expire_due(session: Session, *, now: datetime) -> int:
    """Mark every open ask past its 30 days as expired; how many."""
    result = session.execute(sa.update(_ask).where(_ask.c.status == OPEN, _ask.c.expires_at <= now)
                             .values(status=EXPIRED, closed_at=now))
    return int(result.rowcount)  # type: ignore[attr-defined]


def all_open_ids(session: Session, *, now: datetime) -> list[int]:
    """Ids of every open ask of an active member, oldest first (the nudge job's work list)."""
    rows = session.execute(
        sa.select(_ask.c.id).join(_member, _member.c.id == _ask.c.member_id)
        .where(_ask.c.status == OPEN, _ask.c.expires_at > now, _member.c.status == MemberStatus.ACTIVE)
        .order_by(_ask.c.id)
    ).scalars().all()
    return [int(x) for x in rows]


def of_member(session: Session, *, member_id: int) -> list[AskView]:
    """Every ask of a member, whatever its state (for their data export)."""
    rows = session.execute(sa.select(_ask).where(_ask.c.member_id == member_id).order_by(_ask.c.id)).all()
    return [_ask_view(r) for r in rows]


# --- matching ---

def card_match(card: dict[str, card_store.Value], words: frozenset[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Which of MATCH_FIELDS of a card have a word of the ask, and which words matched."""
    fields: list[str] = []
    hit: set[str] = set()
    for name in MATCH_FIELDS:
        value = card.get(name)
        parts = value if isinstance(value, list) else [value] if value else []
        found = {w for part in parts for w in tokenize(part)} & words
        if found:
            fields.append(name)
            hit |= found
    return tuple(fields), tuple(sorted(hit))


def _active(session: Session, ids: set[int]) -> set[int]:
    if not ids:
        return set()
    rows = session.execute(sa.select(_member.c.id).where(_member.c.id.in_(ids),
                                                         _member.c.status == MemberStatus.ACTIVE)).scalars()
    return {int(x) for x in rows}


def _contacts(session: Session, member_id: int) -> set[int]:
    rows = session.execute(
        sa.select(_conn.c.contact_id).join(_member, _member.c.id == _conn.c.contact_id)
        .where(_conn.c.member_id == member_id, _member.c.status == MemberStatus.ACTIVE)
    ).scalars()
    return {int(x) for x in rows}


def _matches(session: Session, ask: AskView, ids: set[int], now: datetime) -> list[AskMatch]:
    """The members among `ids` whose card matches the ask, not paused, in id order."""
    words = ask_words(ask.text)
    out = []
    for mid in sorted(ids):
        fields, hit = card_match(card_store.values(card_store.get(session, member_id=mid)), words)
        if fields and not privacy.get(session, member_id=mid).paused(now):
            out.append(AskMatch(ask=ask, member_id=mid, fields=fields, words=hit))
    return out


def second_degree_matches(session: Session, *, ask: AskView, now: datetime) -> list[AskMatch]:
    """Members at exactly the 2nd degree of the asker whose card matches the ask (not paused)."""
    first = _contacts(session, ask.member_id)
    if not first:
        return []
    rows = session.execute(
        sa.select(_conn.c.contact_id).join(_member, _member.c.id == _conn.c.contact_id)
        .where(_conn.c.member_id.in_(first), _member.c.status == MemberStatus.ACTIVE)
    ).scalars()
    second = {int(x) for x in rows} - first - {ask.member_id}
    return _matches(session, ask, second, now)


def first_degree_matches(session: Session, *, member_id: int, now: datetime) -> list[AskMatch]:
    """For the asker's digest: their own contacts whose card matches one of their open asks."""
    out: list[AskMatch] = []
    first = _contacts(session, member_id)
    for ask in open_asks(session, member_id=member_id, now=now):
        out.extend(_matches(session, ask, first, now))
    return out


def open_asks_i_could_help(session: Session, *, member_id: int, now: datetime) -> list[AskMatch]:
    """For my digest: open asks of my contacts that match my own offers, title, industry or company."""
    first = _contacts(session, member_id)
    if not first:
        return []
    rows = session.execute(sa.select(_ask).where(
        _ask.c.member_id.in_(first), _ask.c.status == OPEN, _ask.c.expires_at > now,
    ).order_by(_ask.c.id)).all()
    mine = card_store.values(card_store.get(session, member_id=member_id))
    out = []
    for row in rows:
        ask = _ask_view(row)
        fields, hit = card_match(mine, ask_words(ask.text))
        if fields:
            out.append(AskMatch(ask=ask, member_id=member_id, fields=fields, words=hit))
    return out


# --- nudges ---

def nudged(session: Session, *, ask_id: int, candidate_id: int) -> bool:
    """True when this (ask, candidate) pair was nudged before (it never is again)."""
    stmt = sa.select(_nudge.c.id).where(_nudge.c.ask_id == ask_id, _nudge.c.candidate_id == candidate_id)
    return session.execute(stmt.limit(1)).first() is not None


def nudge_load(session: Session, *, member_ids: list[int], since: datetime) -> dict[int, int]:
    """How many nudges each member got since `since`."""
    counts = {mid: 0 for mid in member_ids}
    if member_ids:
        rows = session.execute(sa.select(_nudge.c.connector_id, sa.func.count()).where(
            _nudge.c.connector_id.in_(member_ids), _nudge.c.created_at > since,
        ).group_by(_nudge.c.connector_id)).all()
        counts.update({int(m): int(n) for m, n in rows})
    return counts


def record_nudge(session: Session, *, ask_id: int, candidate_id: int, connector_id: int,
                 now: datetime) -> NudgeView | None:
    """The new nudge, or None when the pair was nudged before (by this run or another worker)."""
    made = insert_ignore(session, _nudge, {
        "ask_id": ask_id, "candidate_id": candidate_id, "connector_id": connector_id, "status": SENT,
        "created_at": now,
    }, conflict=["ask_id", "candidate_id"])
    if not made:
        return None
    row = session.execute(sa.select(_nudge).where(_nudge.c.ask_id == ask_id,
                                                  _nudge.c.candidate_id == candidate_id)).first()
    return _nudge_view(row)


def get_nudge(session: Session, *, nudge_id: int) -> NudgeView | None:
    """One nudge."""
    row = session.execute(sa.select(_nudge).where(_nudge.c.id == nudge_id)).first()
    return _nudge_view(row) if row else None


def decide_nudge(session: Session, *, nudge_id: int, connector_id: int, status: str, now: datetime) -> bool:
    """Answer a nudge once; False when it was not this connector's or was answered before."""
    result = session.execute(sa.update(_nudge).where(
        _nudge.c.id == nudge_id, _nudge.c.connector_id == connector_id, _nudge.c.status == SENT,
    ).values(status=status, decided_at=now))
    return int(result.rowcount) == 1  # type: ignore[attr-defined]


def erase_member(session: Session, *, member_id: int) -> None:
    """Delete the member's asks, every nudge about them or sent to them, and the queued nudges."""
    own = [a.id for a in of_member(session, member_id=member_id)]
    for ask_id in own:
        outbox.forget_by_key(session, pattern=f"nudge:{ask_id}:%")
    about = session.execute(sa.select(_nudge.c.ask_id, _nudge.c.candidate_id).where(sa.or_(
        _nudge.c.candidate_id == member_id, _nudge.c.connector_id == member_id))).all()
    for ask_id, candidate_id in about:
        outbox.forget_by_key(session, pattern=f"nudge:{ask_id}:{candidate_id}")
    session.execute(sa.delete(_nudge).where(sa.or_(
        _nudge.c.ask_id.in_(own), _nudge.c.candidate_id == member_id, _nudge.c.connector_id == member_id)))
    session.execute(sa.delete(_ask).where(_ask.c.member_id == member_id))
