"""Search of a member's network: the word index of cards, the query, and the numbered results."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlmodel import col

from storage.models import SearchResult


@dataclass(frozen=True)
class SearchHit:
    """Result N of a member's last search: whom it named, at which degree, and by which path."""

    n: int
    target_id: int
    degree: int
    path: list[int]  # member ids, the searcher first and the target last


def store_results(session: Session, *, member_id: int, hits: list[SearchHit], now: datetime) -> None:
    """Replace the member's last search with these numbered hits."""
    session.execute(sa.delete(SearchResult).where(col(SearchResult.member_id) == member_id))
    for hit in hits:
        session.add(SearchResult(member_id=member_id, n=hit.n, target_id=hit.target_id,
                                 degree=hit.degree, path=json.dumps(hit.path), created_at=now))
    session.flush()


def last_result(session: Session, *, member_id: int, n: int) -> SearchHit | None:
    """Result `n` of the member's last search, or None when there is no such number."""
    row = session.get(SearchResult, (member_id, n))
    if row is None:
        return None
    return SearchHit(n=row.n, target_id=row.target_id, degree=row.degree,
                     path=[int(x) for x in json.loads(row.path)])
