"""The one typed context object every handler receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from handlers import texts
from handlers.events import InboundEvent
from storage.members import MemberRecord


@dataclass(frozen=True)
class Settings:
    """Operator settings the handlers need, taken from the configuration."""

    invite_ttl: timedelta = timedelta(days=7)
    invite_max_uses: int = 1
    public_url: str = "http://127.0.0.1:8080"
    qr_invites: bool = False  # True when the WeChat API is configured
    deletion_grace: timedelta = timedelta(days=7)
    default_timezone: str = "Asia/Shanghai"  # scheduler.timezone: digests of members who set none
    # Whether members can link two platforms' accounts: both the Official Account and the
    # WeCom app are set up in this community.
    linking: bool = False
    # Introductions (PRODUCT.md, Introductions): limits and how long a step waits.
    intro_max_open: int = 3  # open requests per requester
    intro_connector_weekly: int = 5  # requests a connector is asked to pass on, rolling 7 days
    intro_cooldown: timedelta = timedelta(days=30)  # after one could not be made, same target
    intro_step_ttl: timedelta = timedelta(days=7)  # a pending step expires after this
    intro_reminder_after: timedelta = timedelta(days=3)  # and gets its one reminder after this


@dataclass
class Context:
    """What a handler may use: the event, the member, the clock's now, texts and storage.

    The session belongs to the dispatcher, which commits or rolls back the whole push at once;
    handlers read and write through it but never begin, commit or close it.
    """

    event: InboundEvent
    member: MemberRecord
    session: Session
    now: datetime
    settings: Settings = field(default_factory=Settings)
    # The push being answered; erasing a member keeps its key so a retry is still a duplicate.
    push_key: str = ""
    # The platform identity that wrote, when it is linked into `member` (storage.linking);
    # otherwise the member itself.
    writer: MemberRecord | None = None

    @property
    def identity(self) -> MemberRecord:
        """Who wrote, on their platform: the member, or one of its linked identities."""
        return self.writer or self.member

    @property
    def lang(self) -> str:
        """The member's language: Chinese unless they chose or first used English."""
        return self.member.lang or texts.DEFAULT_LANG

    def t(self, key: str, **kwargs: Any) -> str:
        """A user-facing text from the member's language catalogue."""
        return texts.text(self.lang, key, **kwargs)

    def text_for(self, member: MemberRecord, key: str, **kwargs: Any) -> str:
        """A text in another member's language (for messages sent to them)."""
        return texts.text(member.lang or texts.DEFAULT_LANG, key, **kwargs)
