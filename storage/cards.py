"""Profile cards: the fields, their limits, and reading and writing them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Optional, Union

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlmodel import col

from storage.models import Card


@dataclass(frozen=True)
class FieldSpec:
    """One card field: its name, its limit, and whether it holds a list of tags."""

    name: str
    max_len: int
    tags: bool = False


# The order of `card edit` and of the card display (PRODUCT.md, Cards).
FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("name", 40),
    FieldSpec("title", 60),
    FieldSpec("company", 60),
    FieldSpec("city", 30),
    FieldSpec("industry", 30),
    FieldSpec("offers", 20, tags=True),
    FieldSpec("needs", 20, tags=True),
    FieldSpec("bio", 200),
    FieldSpec("contact", 80),
)
FIELD_NAMES = tuple(f.name for f in FIELDS)
SPECS = {f.name: f for f in FIELDS}
MAX_TAGS = 10

Value = Union[str, list[str], None]


def get(session: Session, *, member_id: int) -> Optional[Card]:
    """The member's card, if they have started one."""
    return session.get(Card, member_id)


def values(card: Optional[Card]) -> dict[str, Value]:
    """Every field of a card as plain values (tags as lists, unset fields as None)."""
    out: dict[str, Value] = {}
    for spec in FIELDS:
        raw = getattr(card, spec.name) if card is not None else None
        if spec.tags:
            out[spec.name] = list(json.loads(raw)) if raw else []
        else:
            out[spec.name] = raw
    return out


def save(session: Session, *, member_id: int, changes: dict[str, Value], now: datetime) -> Card:
    """Write some fields at once (already validated); the card is created on first write."""
    card = session.get(Card, member_id)
    if card is None:
        card = Card(member_id=member_id, updated_at=now)
    for name, value in changes.items():
        spec = SPECS[name]
        if spec.tags:
            setattr(card, name, json.dumps(list(value or []), ensure_ascii=False))
        else:
            setattr(card, name, value or None)
    card.updated_at = now
    session.add(card)
    session.flush()
    # Imported here: storage.search reads cards.values, so a module-level import would be circular.
    from storage import search

    search.index_card(session, member_id=member_id, card=card)
    return card


def names(session: Session, *, member_ids: list[int]) -> dict[int, Optional[str]]:
    """Card names of several members at once."""
    if not member_ids:
        return {}
    rows = session.execute(
        sa.select(col(Card.member_id), col(Card.name)).where(col(Card.member_id).in_(member_ids))
    )
    return {mid: name for mid, name in rows.all()}
