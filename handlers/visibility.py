"""The one rule of what member X may see of member Y's card. Search and introductions use it too."""

from __future__ import annotations

from typing import Optional

from sqlalchemy.orm import Session

from handlers import texts
from storage import cards, graph, privacy
from storage.cards import Value
from storage.privacy import CONNECTIONS, HIDDEN, NETWORK, Privacy


def may_see(level: str, degree: Optional[int]) -> bool:
    """Whether a field at `level` is visible at `degree` (0 = oneself, None = outside the network)."""
    if degree == 0:
        return True
    if degree is None or level == HIDDEN:
        return False
    if level == CONNECTIONS:
        return degree == 1
    if level == NETWORK:
        return 1 <= degree <= graph.MAX_DEGREE
    return False


def visible_card(card: dict[str, Value], prefs: Privacy, degree: Optional[int]) -> dict[str, Value]:
    """The fields of a card (as cards.values gives them) that a viewer at `degree` may see."""
    return {name: value for name, value in card.items()
            if value not in (None, "", []) and may_see(prefs.level(name), degree)}


def what_may_see(session: Session, *, viewer_id: int, owner_id: int) -> dict[str, Value]:
    """What member `viewer_id` may see of member `owner_id`'s card, right now."""
    degree = graph.degree(session, viewer_id=viewer_id, owner_id=owner_id)
    card = cards.values(cards.get(session, member_id=owner_id))
    prefs = privacy.get(session, member_id=owner_id)
    return visible_card(card, prefs, degree)


def visible_name(session: Session, *, viewer_id: int, owner_id: int, lang: str) -> str:
    """The owner's name as the viewer may see it, or a neutral stand-in in `lang`."""
    name = what_may_see(session, viewer_id=viewer_id, owner_id=owner_id).get("name")
    return str(name) if name else texts.text(lang, "unnamed")
