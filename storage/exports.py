"""One-time export links, and everything the bot holds about a member, as JSON-ready data."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlmodel import col

from storage import asks, cards, followups, intros, privacy
from storage.models import ExportLink, Invite, Member

LINK_TTL = timedelta(hours=24)
TOKEN_BYTES = 24
# secrets.token_urlsafe(TOKEN_BYTES): base64url without padding, 4 characters per 3 bytes.
_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{{TOKEN_BYTES * 4 // 3}}}")


def is_token(token: str) -> bool:
    """True when `token` could be one of ours; anything else never reaches the database."""
    return _TOKEN.fullmatch(token) is not None


def create_link(session: Session, *, member_id: int, now: datetime) -> ExportLink:
    """A fresh one-time link, valid for 24 hours."""
    link = ExportLink(token=secrets.token_urlsafe(TOKEN_BYTES), member_id=member_id, created_at=now,
                      expires_at=now + LINK_TTL)
    session.add(link)
    session.flush()
    return link


def consume_link(session: Session, *, token: str, now: datetime) -> int | None:
    """Use a link: the member id when it is valid, unused and unexpired; it never works again."""
    result = session.execute(
        sa.update(ExportLink)
        .where(col(ExportLink.token) == token, col(ExportLink.used_at).is_(None),
               col(ExportLink.expires_at) > now)
        .values(used_at=now)
        .returning(col(ExportLink.member_id))
    )
    row = result.first()
    return int(row[0]) if row else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def collect(session: Session, *, member_id: int) -> dict[str, Any]:
    """All of a member's own data: card, settings, invites, introductions, asks, follow-ups.

    Their connections' cards are not theirs: handlers.rights adds them as the member may see them.
    """
    member = session.get(Member, member_id)
    if member is None:
        return {}
    card_row = cards.get(session, member_id=member_id)
    prefs = privacy.get(session, member_id=member_id)
    digest = privacy.digest_settings(session, member_id=member_id)
    invites = (session.execute(
        sa.select(Invite).where(col(Invite.inviter_id) == member_id).order_by(col(Invite.created_at))
    )).scalars().all()
    return {
        "member": {"platform": member.platform, "id": member.openid, "language": member.lang,
                   "status": member.status, "joined_at": _iso(member.created_at),
                   "last_message_at": _iso(member.last_message_at)},
        "card": cards.values(card_row),
        "settings": {"visibility": {f: prefs.level(f) for f in cards.FIELD_NAMES},
                     "stealth": prefs.stealth, "paused_until": _iso(prefs.paused_until),
                     "digest": digest[0], "timezone": digest[1]},
        "invites": [{"code": i.code, "created_at": _iso(i.created_at), "expires_at": _iso(i.expires_at),
                     "uses": i.uses, "max_uses": i.max_uses} for i in invites],
        "introductions": _introductions(session, member_id=member_id),
        "asks": [{"id": a.id, "text": a.text, "status": a.status, "created_at": _iso(a.created_at),
                  "expires_at": _iso(a.expires_at), "closed_at": _iso(a.closed_at)}
                 for a in asks.of_member(session, member_id=member_id)],
        "follow_ups": [{"introduction": f.intro_id, "round": f.round, "status": f.status, "answer": f.answer,
                        "answered_at": _iso(f.answered_at)}
                       for f in followups.of_member(session, member_id=member_id)],
    }


def _introductions(session: Session, *, member_id: int) -> list[dict[str, Any]]:
    """The member's introductions: their part in each, its outcome, and what they wrote.

    Other people's names are left out: the member may not be allowed to see them any more.
    """
    mine = {s.id: s for s in intros.steps_by(session, actor_id=member_id)}
    out = []
    for intro in intros.involving(session, member_id=member_id):
        if member_id == intro.broker_id:
            role = "broker"
        elif member_id == intro.requester_id:
            role = "requester" if intro.kind == intros.KIND_REQUEST else "party"
        elif member_id == intro.target_id:
            role = "target" if intro.kind == intros.KIND_REQUEST else "party"
        else:
            role = "connector"
        wrote_note = member_id == (intro.requester_id if intro.kind == intros.KIND_REQUEST else intro.broker_id)
        decisions = [{"step": s.id, "decision": s.status, "vouch": s.vouch, "asked_at": _iso(s.created_at),
                      "decided_at": _iso(s.decided_at)}
                     for s in mine.values() if s.intro_id == intro.id]
        out.append({"id": intro.id, "kind": intro.kind, "role": role, "status": intro.status,
                    "note": intro.note if wrote_note else None, "created_at": _iso(intro.created_at),
                    "finished_at": _iso(intro.finished_at), "decisions": decisions})
    return out


def iso(value: datetime | None) -> str | None:
    """A time as the export writes it."""
    return _iso(value)
