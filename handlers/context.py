"""The one typed context object every handler receives."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from handlers import texts
from handlers.events import InboundEvent
from storage.models import Member


@dataclass
class Context:
    """What a handler may use: the event, the member, the clock's now, texts and storage.

    The session belongs to the dispatcher, which commits or rolls back the whole push at once;
    handlers read and write through it but never begin, commit or close it.
    """

    event: InboundEvent
    member: Member
    session: AsyncSession
    now: datetime

    @property
    def lang(self) -> str:
        """The member's language: Chinese unless they chose or first used English."""
        return self.member.lang or texts.DEFAULT_LANG

    def t(self, key: str, **kwargs: Any) -> str:
        """A user-facing text from the member's language catalogue."""
        return texts.text(self.lang, key, **kwargs)
