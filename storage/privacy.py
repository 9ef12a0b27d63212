"""Privacy settings: per-field visibility levels, stealth, and pause."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

from sqlalchemy.orm import Session

from storage.models import MemberSettings

CONNECTIONS, NETWORK, HIDDEN = "connections", "network", "hidden"
LEVELS = (CONNECTIONS, NETWORK, HIDDEN)
# PRODUCT.md: contact and bio are for connections only; everything else for the network.
DEFAULT_LEVELS = {"contact": CONNECTIONS, "bio": CONNECTIONS}
# Contact moves only through a completed double opt-in, so the network never sees it.
_ALLOWED = {"contact": (CONNECTIONS, HIDDEN)}


def allowed_levels(field_name: str) -> tuple[str, ...]:
    """The levels a field may be set to."""
    return _ALLOWED.get(field_name, LEVELS)


@dataclass(frozen=True)
class Privacy:
    """A member's privacy settings, with the defaults filled in."""

    levels: dict[str, str] = field(default_factory=dict)
    stealth: bool = False
    paused_until: Optional[datetime] = None

    def level(self, name: str) -> str:
        """The visibility level of one card field (never one the field may not have)."""
        level = self.levels.get(name) or DEFAULT_LEVELS.get(name, NETWORK)
        if level not in allowed_levels(name):
            # A setting from before the rule (migration 0005 moves those): the stricter default.
            return DEFAULT_LEVELS.get(name, CONNECTIONS)
        return level

    def paused(self, now: datetime) -> bool:
        """True while the member has paused introductions and nudges."""
        return self.paused_until is not None and self.paused_until > now


def get(session: Session, *, member_id: int) -> Privacy:
    """The member's settings; defaults when they never changed anything."""
    row = session.get(MemberSettings, member_id)
    if row is None:
        return Privacy()
    return Privacy(levels=dict(json.loads(row.visibility or "{}")), stealth=row.stealth,
                   paused_until=row.paused_until)


def _row(session: Session, member_id: int) -> MemberSettings:
    row = session.get(MemberSettings, member_id)
    if row is None:
        row = MemberSettings(member_id=member_id, visibility="{}", stealth=False)
    return row


def set_level(session: Session, *, member_id: int, field_name: str, level: str) -> None:
    """Set one field's visibility level (ValueError for a level the field may not have)."""
    if level not in allowed_levels(field_name):
        raise ValueError(f"{field_name} cannot be seen at the {level} level")
    row = _row(session, member_id)
    levels = dict(json.loads(row.visibility or "{}"))
    levels[field_name] = level
    row.visibility = json.dumps(levels, sort_keys=True)
    session.add(row)


def set_stealth(session: Session, *, member_id: int, on: bool) -> None:
    """Turn stealth on or off."""
    row = _row(session, member_id)
    row.stealth = on
    session.add(row)


def set_pause(session: Session, *, member_id: int, until: Optional[datetime]) -> None:
    """Pause introductions and nudges until a time (None resumes)."""
    row = _row(session, member_id)
    row.paused_until = until
    session.add(row)


def digest_settings(session: Session, *, member_id: int) -> tuple[str, str | None]:
    """The member's digest cadence (weekly, daily, off) and time zone (None: the scheduler's)."""
    row = session.get(MemberSettings, member_id)
    if row is None:
        return "weekly", None
    return row.digest or "weekly", row.timezone


def set_digest(session: Session, *, member_id: int, cadence: str) -> None:
    """Set the digest cadence: weekly, daily or off."""
    if cadence not in ("weekly", "daily", "off"):
        raise ValueError(f"unknown digest cadence {cadence!r}")
    row = _row(session, member_id)
    row.digest = cadence
    session.add(row)


def set_timezone(session: Session, *, member_id: int, timezone: str | None) -> None:
    """Set the time zone the member's digest follows (None: the scheduler's)."""
    row = _row(session, member_id)
    row.timezone = timezone
    session.add(row)
