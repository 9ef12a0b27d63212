"""Dialog state, written through on every step (a restart or another worker loses nothing)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlmodel import col

from storage.models import Dialog
from storage.sql import RawStatement, from_db


@dataclass(frozen=True)
class DialogState:
    """Where a member is in a dialog, and what they answered so far."""

    name: str
    step: str
    data: dict[str, Any]
    updated_at: datetime


# Every text a member sends first asks whether a dialog is open, so this is prebuilt.
_GET = RawStatement("SELECT name, step, data, updated_at FROM dialog WHERE member_id = ?")


def get(session: Session, *, member_id: int) -> Optional[DialogState]:
    """The member's open dialog, if any."""
    row = _GET.execute(session, (member_id,)).fetchone()
    if row is None:
        return None
    name, step, data, updated_at = row
    # updated_at is NOT NULL, so from_db gives a datetime here.
    return DialogState(name=name, step=step, data=dict(json.loads(data)),
                       updated_at=cast(datetime, from_db(updated_at)))


def put(session: Session, *, member_id: int, state: DialogState) -> None:
    """Save the dialog's new step and answers."""
    row = session.get(Dialog, member_id)
    if row is None:
        row = Dialog(member_id=member_id, name=state.name, step=state.step, updated_at=state.updated_at)
    row.name, row.step, row.updated_at = state.name, state.step, state.updated_at
    row.data = json.dumps(state.data, ensure_ascii=False)
    session.add(row)
    session.flush()


def clear(session: Session, *, member_id: int) -> None:
    """End the member's dialog."""
    session.execute(sa.delete(Dialog).where(col(Dialog.member_id) == member_id))
