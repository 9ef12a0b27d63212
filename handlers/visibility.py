"""The one rule of what member X may see of member Y's card. Search and introductions use it too.

It also keeps a ledger, per transaction, of whose card data each viewer was shown: every
message queued for that viewer in the same transaction records those members as mentioned
(handlers.outgoing.tell), so that erasing one of them can take their data out of messages
already written (PIPL). The ledger may name more members than a message shows; never fewer.
"""

from __future__ import annotations

from collections.abc import Iterable
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


_LEDGER = "yinjian.shown"


def note_shown(session: Session, *, viewer_id: int, owner_ids: Iterable[int | None]) -> None:
    """Record that `viewer_id` is being shown card data of these members in this transaction."""
    ledger: dict[int, set[int]] = session.info.setdefault(_LEDGER, {})
    ledger.setdefault(viewer_id, set()).update(o for o in owner_ids if o is not None and o != viewer_id)


def shown_to(session: Session, viewer_id: int) -> frozenset[int]:
    """Every member whose card data `viewer_id` was shown in this transaction so far."""
    ledger: dict[int, set[int]] = session.info.get(_LEDGER, {})
    return frozenset(ledger.get(viewer_id, ()))


def what_may_see(session: Session, *, viewer_id: int, owner_id: int) -> dict[str, Value]:
    """What member `viewer_id` may see of member `owner_id`'s card, right now."""
    note_shown(session, viewer_id=viewer_id, owner_ids=[owner_id])
    degree = graph.degree(session, viewer_id=viewer_id, owner_id=owner_id)
    card = cards.values(cards.get(session, member_id=owner_id))
    prefs = privacy.get(session, member_id=owner_id)
    return visible_card(card, prefs, degree)


def visible_name(session: Session, *, viewer_id: int, owner_id: int, lang: str) -> str:
    """The owner's name as the viewer may see it, or a neutral stand-in in `lang`."""
    name = what_may_see(session, viewer_id=viewer_id, owner_id=owner_id).get("name")
    return str(name) if name else texts.text(lang, "unnamed")
