"""Search of a member's network: the word index of cards, the query, and the numbered results.

Chinese is segmented with jieba: it is well kept, pure Python, ships its own dictionary and works
offline, and its search mode (`cut_for_search`) also emits the sub-words of long words, so a
two-character query such as 律师 or 投资 finds 律师事务所 or 投资人. Latin words are folded
(NFKC, casefold); punctuation and white space separate words and are dropped.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import jieba
import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlmodel import col

from storage.cards import Value
from storage.cards import values as card_values
from storage.models import Card, MemberStatus, SearchResult, SearchToken
from storage.privacy import Privacy
from storage.sql import RawStatement, dialect, from_db

jieba.setLogLevel(logging.WARNING)

# What a search matches: everything on the card except contact (never searchable) and needs
# (what the member lacks is not what they can be found for; asks match needs separately).
INDEXED_FIELDS = ("name", "title", "company", "city", "industry", "offers", "bio")
MAX_TOKEN = 64  # search_token.token
MAX_RESULTS = 10

_CJK_RANGES = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORDS = re.compile(rf"([{_CJK_RANGES}]+)|([^\W_{_CJK_RANGES}]+)")


@lru_cache(maxsize=65536)
def tokenize(text: str) -> tuple[str, ...]:
    """The words of a text, in order and with repeats, as the index and queries use them."""
    out: list[str] = []
    folded = unicodedata.normalize("NFKC", text).casefold()
    for match in _WORDS.finditer(folded):
        cjk, latin = match.groups()
        if latin is not None:
            if len(latin) > 1:
                out.append(latin[:MAX_TOKEN])
            continue
        words = [w for w in jieba.cut_for_search(cjk) if len(w) > 1]
        # Short runs are often names that jieba splits into single characters (dropped above);
        # the whole run keeps them findable.
        if 2 <= len(cjk) <= 4 and cjk not in words:
            words.append(cjk)
        out.extend(w[:MAX_TOKEN] for w in words)
    return tuple(out)


def card_tokens(card: dict[str, Value]) -> Counter[str]:
    """The searchable words of a card (as cards.values gives it), with how often each occurs."""
    counts: Counter[str] = Counter()
    for name in INDEXED_FIELDS:
        value = card.get(name)
        for part in (value if isinstance(value, list) else [value] if value else []):
            counts.update(tokenize(part))
    return counts


def index_card(session: Session, *, member_id: int, card: Card | None) -> None:
    """Re-index one member's card: their old words go, the card's words come, in this transaction."""
    session.execute(sa.delete(SearchToken).where(col(SearchToken.member_id) == member_id))
    counts = card_tokens(card_values(card))
    if counts:
        session.execute(sa.insert(SearchToken), [
            {"member_id": member_id, "token": token, "weight": weight} for token, weight in counts.items()
        ])


@dataclass(frozen=True)
class SearchHit:
    """Result N of a member's last search: whom it named, at which degree, and by which path."""

    n: int
    target_id: int
    degree: int
    path: list[int]  # member ids, the searcher first and the target last


@dataclass(frozen=True)
class Found:
    """One ranked search result with what the handler needs to show it."""

    hit: SearchHit
    strength: int  # of the best path: its weakest tie, 1-3
    matched: int  # distinct query words the card has
    weight: int  # how often they occur on the card
    card: dict[str, Value]
    prefs: Privacy


@dataclass(frozen=True)
class SearchOutcome:
    """The results of one search, and the cards and settings of the people on their paths."""

    found: list[Found]
    people: dict[int, tuple[dict[str, Value], Privacy]] = field(default_factory=dict)


class _Ids(RawStatement):
    """A statement with id or word lists as single parameters: JSON on SQLite, arrays on PostgreSQL.

    One parameter per list keeps each statement fixed (parsed once) however long the list is.
    """

    def __init__(self, sql: str) -> None:
        json_list = "IN (SELECT value FROM json_each(?))"
        super().__init__(sql.replace("IN {IDS}", json_list).replace("IN {WORDS}", json_list))
        self.postgresql = (sql.replace("?", "%s").replace("IN {IDS}", "= ANY(%s::int[])")
                           .replace("IN {WORDS}", "= ANY(%s::text[])"))

    def run(self, session: Session, *params: Any) -> list[tuple[Any, ...]]:
        """Execute; list parameters become JSON on SQLite. Returns all rows."""
        pg = dialect(session) == "postgresql"
        bound = tuple(p if pg or not isinstance(p, list) else json.dumps(p) for p in params)
        return list(self.execute(session, bound).fetchall())


_ACTIVE = f"'{MemberStatus.ACTIVE}'"
# Ties in the direction of travel: how well the member on the left knows the next one.
_HOP1 = _Ids(
    "SELECT c.contact_id, COALESCE(c.strength, 1) FROM connection c "
    f"JOIN member m ON m.id = c.contact_id WHERE c.member_id = ? AND m.status = {_ACTIVE}"
)
_HOP2 = _Ids(
    "SELECT c.member_id, c.contact_id, COALESCE(c.strength, 1) FROM connection c "
    f"JOIN member m ON m.id = c.contact_id WHERE c.member_id IN {{IDS}} AND m.status = {_ACTIVE}"
)
# The 3rd degree is only fetched where the card has a query word: that is what keeps the
# neighbourhood small (a few hundred rows instead of thousands).
_HOP3 = _Ids(
    "SELECT c.member_id, c.contact_id, COALESCE(c.strength, 1) FROM connection c "
    f"JOIN member m ON m.id = c.contact_id WHERE c.member_id IN {{IDS}} AND m.status = {_ACTIVE} "
    "AND EXISTS (SELECT 1 FROM search_token t WHERE t.member_id = c.contact_id AND t.token IN {WORDS})"
)
_MATCHES = _Ids(
    "SELECT member_id, token, weight FROM search_token "
    "WHERE member_id IN {IDS} AND token IN {WORDS}"
)
_SETTINGS = _Ids(
    "SELECT member_id, visibility, stealth, paused_until FROM member_settings WHERE member_id IN {IDS}"
)


@dataclass
class _Reach:
    degree: int
    strength: int
    path: list[int]


def _extend(reach: dict[int, _Reach], rows: Iterable[tuple[Any, ...]], degree: int) -> None:
    """Add the members one hop further, keeping for each the strongest path (weakest tie highest)."""
    for src, dst, strength in rows:
        if dst in reach and reach[dst].degree < degree:
            continue
        via = reach[src]
        s = min(via.strength, int(strength))
        best = reach.get(dst)
        # Among equally strong paths, the lower first hop, so the answer is the same every time.
        if best is None or s > best.strength or (s == best.strength and via.path < best.path[:-1]):
            reach[dst] = _Reach(degree, s, [*via.path, dst])


def _privacy(row: tuple[Any, ...] | None) -> Privacy:
    if row is None:
        return Privacy()
    _, visibility, stealth, paused_until = row
    return Privacy(levels=dict(json.loads(visibility or "{}")), stealth=bool(stealth),
                   paused_until=from_db(paused_until))


def find(session: Session, *, viewer_id: int, query: str, now: datetime,
         limit: int = MAX_RESULTS) -> SearchOutcome:
    """Members up to the 3rd degree whose card has a word of the query, best first.

    Ranked by degree, then the strength of the best path, then how many query words match and
    how often. Never the viewer, nor anyone inactive or paused, nor stealth members beyond the
    viewer's 1st degree. Hidden fields match too; showing only visible ones is the caller's job.
    """
    words = sorted(set(tokenize(query)))
    if not words:
        return SearchOutcome(found=[])
    reach: dict[int, _Reach] = {viewer_id: _Reach(0, 3, [viewer_id])}
    _extend(reach, ((viewer_id, cid, s) for cid, s in _HOP1.run(session, viewer_id)), 1)
    first = [m for m, r in reach.items() if r.degree == 1]
    if first:
        _extend(reach, _HOP2.run(session, first), 2)
    second = [m for m, r in reach.items() if r.degree == 2]
    if second:
        _extend(reach, _HOP3.run(session, second, words), 3)
    candidates = [m for m in reach if m != viewer_id]
    if not candidates:
        return SearchOutcome(found=[])
    matched: dict[int, list[int]] = {}
    for mid, _token, weight in _MATCHES.run(session, candidates, words):
        matched.setdefault(mid, []).append(int(weight))
    settings = {row[0]: row for row in _SETTINGS.run(session, list(matched))} if matched else {}
    ranked: list[tuple[tuple[int, int, int, int, int], int, Privacy]] = []
    for mid, weights in matched.items():
        prefs = _privacy(settings.get(mid))
        r = reach[mid]
        if prefs.paused(now) or (prefs.stealth and r.degree > 1):
            continue
        ranked.append(((r.degree, -r.strength, -len(weights), -sum(weights), mid), mid, prefs))
    ranked.sort(key=lambda item: item[0])
    ranked = ranked[:limit]
    vias = {reach[mid].path[1] for _, mid, _ in ranked if reach[mid].degree > 1}
    people = _people(session, [mid for _, mid, _ in ranked] + sorted(vias - {m for _, m, _ in ranked}))
    found = []
    for n, (key, mid, prefs) in enumerate(ranked, start=1):
        r = reach[mid]
        found.append(Found(hit=SearchHit(n=n, target_id=mid, degree=r.degree, path=r.path),
                           strength=r.strength, matched=-key[2], weight=-key[3],
                           card=people[mid][0], prefs=prefs))
    return SearchOutcome(found=found, people=people)


def _people(session: Session, ids: list[int]) -> dict[int, tuple[dict[str, Value], Privacy]]:
    """Cards and privacy settings of several members at once."""
    if not ids:
        return {}
    cards = {c.member_id: c for c in session.execute(sa.select(Card).where(col(Card.member_id).in_(ids))).scalars()}
    settings = {row[0]: row for row in _SETTINGS.run(session, ids)}
    return {mid: (card_values(cards.get(mid)), _privacy(settings.get(mid))) for mid in ids}


def store_results(session: Session, *, member_id: int, hits: list[SearchHit], now: datetime) -> None:
    """Replace the member's last search with these numbered hits."""
    session.execute(sa.delete(SearchResult).where(col(SearchResult.member_id) == member_id))
    if hits:
        session.execute(sa.insert(SearchResult), [
            {"member_id": member_id, "n": h.n, "target_id": h.target_id, "degree": h.degree,
             "path": json.dumps(h.path), "created_at": now} for h in hits
        ])


def last_result(session: Session, *, member_id: int, n: int) -> SearchHit | None:
    """Result `n` of the member's last search, or None when there is no such number."""
    row = session.get(SearchResult, (member_id, n))
    if row is None:
        return None
    return SearchHit(n=row.n, target_id=row.target_id, degree=row.degree,
                     path=[int(x) for x in json.loads(row.path)])


def forget_member(session: Session, *, member_id: int) -> None:
    """Remove a member from the index and from every stored search (erasure)."""
    for stmt in (
        sa.delete(SearchToken).where(col(SearchToken.member_id) == member_id),
        sa.delete(SearchResult).where(sa.or_(col(SearchResult.member_id) == member_id,
                                             col(SearchResult.target_id) == member_id)),
    ):
        session.execute(stmt)
