"""SQLModel tables. The schema itself comes only from the Alembic migrations."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC on every backend and always hands back aware UTC datetimes."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


# SQLite reuses the highest rowid after a delete unless a table says AUTOINCREMENT. Ids are printed
# for members to type back (accept 12, close 3, nudge 7, met 5) or used as idempotency keys
# (client_msg_id), so no table with such ids may ever hand one out twice. PostgreSQL's
# sequences never do.
_NO_REUSE = {"sqlite_autoincrement": True}


class MemberStatus:
    """Values of Member.status."""

    ACTIVE = "active"
    DEACTIVATED = "deactivated"
    ERASED = "erased"  # never stored: marks an in-memory record whose row was just deleted


class Member(SQLModel, table=True):
    """Someone who has written to the bot on one platform (an OpenID on the Official Account)."""

    __tablename__ = "member"
    __table_args__ = (sa.UniqueConstraint("platform", "openid", name="uq_member_platform_openid"), _NO_REUSE)

    id: Optional[int] = Field(default=None, primary_key=True)
    platform: str = Field(max_length=16)
    openid: str = Field(max_length=128)
    lang: Optional[str] = Field(default=None, max_length=8)
    status: str = Field(default=MemberStatus.ACTIVE, max_length=16)
    created_at: datetime = Field(sa_type=UTCDateTime)
    # The 48-hour customer-service window starts at the member's last message.
    last_message_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    # Subscribe, scan and menu clicks open the shorter 3-per-minute window.
    last_event_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    deactivated_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    # Set when this platform identity was linked into another member (`link CODE`): the row
    # then only says who is writing; the card, the network and everything else are the other's.
    merged_into: Optional[int] = Field(default=None, foreign_key="member.id", index=True)


class LinkCode(SQLModel, table=True):
    """A one-time code (10 minutes) that joins a member's identities on two platforms."""

    __tablename__ = "link_code"

    code: str = Field(primary_key=True, max_length=16)
    member_id: int = Field(foreign_key="member.id", index=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)


class InboundPush(SQLModel, table=True):
    """One handled push from WeChat, keyed for deduplication, with the reply it got."""

    __tablename__ = "inbound_push"

    key: str = Field(primary_key=True, max_length=200)
    member_openid: str = Field(max_length=128)
    received_at: datetime = Field(sa_type=UTCDateTime, index=True)
    # Our own reply, serialised (see handlers.replies); retries get the same answer.
    reply: Optional[str] = Field(default=None, sa_type=sa.Text)


class PushNonce(SQLModel, table=True):
    """A (timestamp, nonce) seen on a plain-mode push, so a captured signature signs one body only."""

    __tablename__ = "push_nonce"

    timestamp: str = Field(primary_key=True, max_length=16)
    nonce: str = Field(primary_key=True, max_length=64)
    body_sha256: str = Field(max_length=64)
    seen_at: datetime = Field(sa_type=UTCDateTime, index=True)


class OutboxStatus:
    """Values of OutboxMessage.status."""

    PENDING = "pending"  # waiting for the sender
    SENDING = "sending"  # claimed by a sender until lease_until
    SENT = "sent"  # delivered (or, without an API, logged); never sent again
    HELD = "held"  # the member's window or budget is closed; released by their next message
    UNDELIVERABLE = "undeliverable"  # the member cannot receive messages (43004, 40003)
    FAILED = "failed"  # gave up after repeated transient errors; kept for the operator


class OutboxMessage(SQLModel, table=True):
    """A proactive message to a member; the only way such a message leaves."""

    __tablename__ = "outbox"
    __table_args__ = (sa.Index("ix_outbox_due", "status", "next_attempt_at"), _NO_REUSE)

    id: Optional[int] = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", index=True)
    kind: str = Field(max_length=16)  # "text", "choices", "template"
    payload: str = Field(sa_type=sa.Text)  # JSON
    priority: int = Field(default=50)  # lower goes first
    status: str = Field(default=OutboxStatus.PENDING, max_length=16)
    attempts: int = Field(default=0)
    created_at: datetime = Field(sa_type=UTCDateTime)
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    lease_until: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    sent_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    last_errcode: Optional[int] = Field(default=None)
    # Idempotency key for scheduled work: the same key is never queued twice.
    dedupe_key: Optional[str] = Field(default=None, max_length=200, unique=True)


class OutboxMention(SQLModel, table=True):
    """A member whose card data an outbox message shows; erasing them redacts the message."""

    __tablename__ = "outbox_mention"

    outbox_id: int = Field(primary_key=True, foreign_key="outbox.id")
    member_id: int = Field(primary_key=True, foreign_key="member.id", index=True)


class OutboxAttempt(SQLModel, table=True):
    """One try at sending an outbox message, with WeChat's errcode."""

    __tablename__ = "outbox_attempt"
    __table_args__ = (_NO_REUSE,)

    id: Optional[int] = Field(default=None, primary_key=True)
    outbox_id: int = Field(foreign_key="outbox.id", index=True)
    attempted_at: datetime = Field(sa_type=UTCDateTime)
    errcode: Optional[int] = Field(default=None)  # None: no answer (timeout, network, 5xx)
    errmsg: str = Field(default="", max_length=500)
    outcome: str = Field(max_length=16)  # sent, retry, held, undeliverable, failed, logged


class AccessToken(SQLModel, table=True):
    """The shared WeChat access_token, one row per app, so that all workers use one token."""

    __tablename__ = "access_token"

    app_id: str = Field(primary_key=True, max_length=64)
    token: Optional[str] = Field(default=None, sa_type=sa.Text)
    expires_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    # A refresh lease: only the worker that holds it may fetch a new token.
    refresh_lock_until: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    refreshed_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)


class Card(SQLModel, table=True):
    """A member's private profile card. offers and needs are JSON lists of tags."""

    __tablename__ = "card"

    member_id: int = Field(primary_key=True, foreign_key="member.id")
    name: Optional[str] = Field(default=None, max_length=40)
    title: Optional[str] = Field(default=None, max_length=60)
    company: Optional[str] = Field(default=None, max_length=60)
    city: Optional[str] = Field(default=None, max_length=30)
    industry: Optional[str] = Field(default=None, max_length=30)
    offers: str = Field(default="[]", sa_type=sa.Text)
    needs: str = Field(default="[]", sa_type=sa.Text)
    bio: Optional[str] = Field(default=None, max_length=200)
    contact: Optional[str] = Field(default=None, max_length=80)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class MemberSettings(SQLModel, table=True):
    """Privacy and delivery settings. `visibility` is a JSON object of field -> level overrides."""

    __tablename__ = "member_settings"

    member_id: int = Field(primary_key=True, foreign_key="member.id")
    visibility: str = Field(default="{}", sa_type=sa.Text)
    stealth: bool = Field(default=False)
    paused_until: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    digest: str = Field(default="weekly", max_length=8,
                        sa_column_kwargs={"server_default": "weekly"})  # weekly, daily, off
    timezone: Optional[str] = Field(default=None, max_length=64)  # None: the scheduler's zone


class Connection(SQLModel, table=True):
    """One direction of a mutual connection; `strength` is how well member knows contact (1-3)."""

    __tablename__ = "connection"
    __table_args__ = (sa.UniqueConstraint("member_id", "contact_id", name="uq_connection_pair"),
                      sa.UniqueConstraint("member_id", "number", name="uq_connection_number"), _NO_REUSE)

    id: Optional[int] = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", index=True)
    contact_id: int = Field(foreign_key="member.id", index=True)
    strength: Optional[int] = Field(default=None)
    source: str = Field(max_length=16)  # invite, qr, introduction, broker
    created_at: datetime = Field(sa_type=UTCDateTime)
    # The number member_id's `contacts` shows for contact_id; never reused (see ContactSeq).
    number: int
    # The inviter has not yet been told the joiner's name (they had none when they joined).
    name_pending: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})


class ContactSeq(SQLModel, table=True):
    """The last contact number a member's list handed out, so numbers never shift or repeat."""

    __tablename__ = "contact_seq"

    member_id: int = Field(primary_key=True, foreign_key="member.id")
    last: int = Field(default=0)


class Invite(SQLModel, table=True):
    """A personal invite code; single use and 7 days by default (configurable)."""

    __tablename__ = "invite"

    code: str = Field(primary_key=True, max_length=16)
    inviter_id: int = Field(foreign_key="member.id", index=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    max_uses: int = Field(default=1)
    uses: int = Field(default=0)


class Dialog(SQLModel, table=True):
    """A member's step-by-step dialog, written through on every step so restarts lose nothing."""

    __tablename__ = "dialog"

    member_id: int = Field(primary_key=True, foreign_key="member.id")
    name: str = Field(max_length=32)
    step: str = Field(max_length=32)
    data: str = Field(default="{}", sa_type=sa.Text)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class ExportLink(SQLModel, table=True):
    """A one-time link to all of a member's data (PIPL), valid for 24 hours."""

    __tablename__ = "export_link"

    token: str = Field(primary_key=True, max_length=64)
    member_id: int = Field(foreign_key="member.id", index=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)


class SearchToken(SQLModel, table=True):
    """One word of a member's card, for search and ask matching (Chinese segmented by jieba)."""

    __tablename__ = "search_token"
    __table_args__ = (sa.Index("ix_search_token_token", "token", "member_id"),)

    member_id: int = Field(primary_key=True, foreign_key="member.id")
    token: str = Field(primary_key=True, max_length=64)
    weight: int = Field(default=1)  # how often the word occurs on the card


class SearchResult(SQLModel, table=True):
    """A member's last search, numbered, so that `intro N` knows whom N meant."""

    __tablename__ = "search_result"

    member_id: int = Field(primary_key=True, foreign_key="member.id")
    n: int = Field(primary_key=True)
    target_id: int = Field(foreign_key="member.id", index=True)
    degree: int
    path: str = Field(sa_type=sa.Text)  # JSON list of member ids, searcher first, target last
    created_at: datetime = Field(sa_type=UTCDateTime)


class Intro(SQLModel, table=True):
    """An introduction: requested by R for T through connectors, or made by a broker C for A and B."""

    __tablename__ = "intro"
    __table_args__ = (_NO_REUSE,)

    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)  # "request" or "broker"
    requester_id: Optional[int] = Field(default=None, foreign_key="member.id", index=True)
    target_id: int = Field(foreign_key="member.id", index=True)
    broker_id: Optional[int] = Field(default=None, foreign_key="member.id", index=True)
    note: str = Field(default="", max_length=200)  # the requester's (or broker's) own words
    # A broker introduction started from a referral nudge carries the requester's ask, in
    # their words, so it is never shown as the connector's note.
    ask_text: Optional[str] = Field(default=None, max_length=200)
    path: str = Field(default="[]", sa_type=sa.Text)  # JSON member ids R, connector(s), T
    status: str = Field(default="pending", max_length=16)  # pending, completed, declined, expired
    created_at: datetime = Field(sa_type=UTCDateTime)
    finished_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)


class IntroStep(SQLModel, table=True):
    """One decision an introduction waits for; its id is what `accept ID` / `decline ID` name."""

    __tablename__ = "intro_step"
    __table_args__ = (sa.Index("ix_intro_step_due", "status", "expires_at"), _NO_REUSE)

    id: Optional[int] = Field(default=None, primary_key=True)
    intro_id: int = Field(foreign_key="intro.id", index=True)
    seq: int  # order along the path; broker introductions have two steps with the same seq
    actor_id: int = Field(foreign_key="member.id", index=True)
    role: str = Field(max_length=16)  # connector, target, party
    status: str = Field(default="pending", max_length=16)  # pending, accepted, declined, expired, closed
    vouch: str = Field(default="", max_length=200)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    reminded_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
    decided_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)


class Ask(SQLModel, table=True):
    """A need a member posted to their network; open for 30 days."""

    __tablename__ = "ask"
    __table_args__ = (sa.Index("ix_ask_open", "status", "expires_at"), _NO_REUSE)

    id: Optional[int] = Field(default=None, primary_key=True)
    member_id: int = Field(foreign_key="member.id", index=True)
    text: str = Field(max_length=200)
    status: str = Field(default="open", max_length=16)  # open, closed, expired
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    closed_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)


class Nudge(SQLModel, table=True):
    """A referral nudge to a connector: (ask, candidate) is nudged once, ever."""

    __tablename__ = "nudge"
    __table_args__ = (sa.UniqueConstraint("ask_id", "candidate_id", name="uq_nudge_ask_candidate"), _NO_REUSE)

    id: Optional[int] = Field(default=None, primary_key=True)
    ask_id: int = Field(foreign_key="ask.id", index=True)
    candidate_id: int = Field(foreign_key="member.id", index=True)
    connector_id: int = Field(foreign_key="member.id", index=True)
    status: str = Field(default="sent", max_length=16)  # sent, introduced, not_now
    created_at: datetime = Field(sa_type=UTCDateTime)
    decided_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)


class FollowUp(SQLModel, table=True):
    """"Did you meet?" after a completed introduction: one row per side and round."""

    __tablename__ = "follow_up"
    __table_args__ = (sa.UniqueConstraint("intro_id", "member_id", "round", name="uq_follow_up"),
                      sa.Index("ix_follow_up_due", "status", "due_at"), _NO_REUSE)

    id: Optional[int] = Field(default=None, primary_key=True)
    intro_id: int = Field(foreign_key="intro.id", index=True)
    member_id: int = Field(foreign_key="member.id", index=True)
    round: int = Field(default=1)  # 2: asked again after "not yet"
    due_at: datetime = Field(sa_type=UTCDateTime)
    status: str = Field(default="pending", max_length=16)  # pending, asked, answered
    answer: Optional[str] = Field(default=None, max_length=16)  # yes, not_yet, not_useful
    answered_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime)
