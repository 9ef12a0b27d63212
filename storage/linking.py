"""Linking a member's identities on two platforms into one member (`link` / `link CODE`).

A person who follows the Official Account and also uses the WeCom app starts as two members.
`link` gives a one-time code on one platform; `link CODE` on the other merges the two: one
card (the older card wins field by field where both have a value), one network, one language,
one history. The member that stays is the one whose platform can reach them best (WeCom has
no 48-hour window); the other row stays only as an identity that says who is writing
(`member.merged_into`), so their pushes are deduplicated and answered as before.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from storage import cards, outbox, search
from storage.members import MemberRecord
from storage.models import (
    Ask,
    Card,
    Connection,
    ContactSeq,
    Dialog,
    ExportLink,
    FollowUp,
    Intro,
    IntroStep,
    Invite,
    LinkCode,
    Member,
    MemberSettings,
    Nudge,
    SearchResult,
)
from storage.sql import insert_ignore

CODE_TTL = timedelta(minutes=10)
ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
# Which identity stays the member, best first: the one whose messages reach them best.
PREFERRED = ("wecom", "oa")

_member = Member.__table__  # type: ignore[attr-defined]
_code = LinkCode.__table__  # type: ignore[attr-defined]
_conn = Connection.__table__  # type: ignore[attr-defined]
_seq = ContactSeq.__table__  # type: ignore[attr-defined]
_intro = Intro.__table__  # type: ignore[attr-defined]
_step = IntroStep.__table__  # type: ignore[attr-defined]
_fu = FollowUp.__table__  # type: ignore[attr-defined]
_nudge = Nudge.__table__  # type: ignore[attr-defined]


def new_code(session: Session, *, member_id: int, now: datetime) -> str:
    """A fresh one-time code for the member (their earlier codes stop working)."""
    session.execute(sa.delete(_code).where(_code.c.member_id == member_id))
    while True:
        code = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
        if insert_ignore(session, _code, {"code": code, "member_id": member_id, "created_at": now,
                                          "expires_at": now + CODE_TTL}, conflict=["code"]):
            return code


def code_owner(session: Session, *, code: str, now: datetime) -> int | None:
    """The member who asked for this code, or None when it is unknown or expired.

    A code is used up by the link it makes (merge deletes it), not by a failed attempt.
    """
    row = session.execute(sa.select(_code.c.member_id, _code.c.expires_at).where(_code.c.code == code)
                          .with_for_update()).first()
    if row is None or row.expires_at <= now:
        return None
    return int(row.member_id)


def identities(session: Session, *, member_id: int) -> list[tuple[str, str]]:
    """(platform, openid) of every identity of a member: its own and the ones linked into it."""
    rows = session.execute(sa.select(_member.c.platform, _member.c.openid).where(
        sa.or_(_member.c.id == member_id, _member.c.merged_into == member_id)).order_by(_member.c.id)).all()
    return [(str(p), str(o)) for p, o in rows]


def survivor_of(a: MemberRecord, b: MemberRecord) -> tuple[MemberRecord, MemberRecord]:
    """(the member that stays, the one linked into it)."""
    def rank(m: MemberRecord) -> tuple[int, datetime, int]:
        order = PREFERRED.index(m.platform) if m.platform in PREFERRED else len(PREFERRED)
        return (order, m.created_at, m.id)

    keep, drop = sorted((a, b), key=rank)
    return keep, drop


@dataclass(frozen=True)
class Linked:
    """What a link did: who stays, and the card they now have."""

    member_id: int
    card: dict[str, cards.Value]


def merge(session: Session, *, keep: MemberRecord, drop: MemberRecord, now: datetime,
          lang_of: MemberRecord | None = None) -> Linked:
    """Move everything of `drop` onto `keep`, in this transaction, and make `drop` an identity.

    The older member's card wins field by field where both have a value, and the older
    member's settings and language win; connections are joined (each side keeps its own
    numbers for the other), and introductions, asks, nudges, follow-ups, invites and queued
    messages follow the member.
    """
    k, d = keep.id, drop.id
    older, newer = (keep, drop) if (keep.created_at, keep.id) <= (drop.created_at, drop.id) else (drop, keep)
    # The card: older wins field by field.
    values_old = cards.values(cards.get(session, member_id=older.id))
    values_new = cards.values(cards.get(session, member_id=newer.id))
    merged = {f: (values_old[f] if values_old[f] not in (None, "", []) else values_new[f]) for f in cards.FIELD_NAMES}
    # Settings and language: the older member's, when they have any.
    settings_old = session.get(MemberSettings, older.id)
    settings_new = session.get(MemberSettings, newer.id)
    chosen = settings_old or settings_new
    snapshot = None if chosen is None else {c: getattr(chosen, c) for c in
                                            ("visibility", "stealth", "paused_until", "digest", "timezone")}
    for row in (settings_old, settings_new):
        if row is not None:
            session.delete(row)
    session.flush()
    if snapshot is not None:
        session.add(MemberSettings(member_id=k, **snapshot))
    lang = lang_of.lang if lang_of is not None else (older.lang or newer.lang)
    _join_connections(session, keep=k, drop=d)
    _move_introductions(session, keep=k, drop=d)
    # The rest simply follows the member; rows that cannot exist twice are dropped.
    session.execute(sa.update(Ask.__table__).where(Ask.__table__.c.member_id == d).values(member_id=k))  # type: ignore[attr-defined]
    session.execute(sa.update(Invite.__table__).where(Invite.__table__.c.inviter_id == d)  # type: ignore[attr-defined]
                    .values(inviter_id=k))
    session.execute(sa.update(ExportLink.__table__).where(ExportLink.__table__.c.member_id == d)  # type: ignore[attr-defined]
                    .values(member_id=k))
    for table in (Dialog.__table__, SearchResult.__table__):  # type: ignore[attr-defined]
        session.execute(sa.delete(table).where(table.c.member_id == d))
    session.execute(sa.delete(SearchResult.__table__).where(  # type: ignore[attr-defined]
        SearchResult.__table__.c.target_id == d))  # type: ignore[attr-defined]
    session.execute(sa.delete(_code).where(_code.c.member_id.in_([k, d])))
    outbox.move_member(session, from_id=d, to_id=k)
    search.forget_member(session, member_id=d)
    session.execute(sa.delete(Card.__table__).where(Card.__table__.c.member_id == d))  # type: ignore[attr-defined]
    cards.save(session, member_id=k, changes=merged, now=now)
    session.execute(sa.update(_member).where(_member.c.id == k).values(lang=lang))
    session.execute(sa.update(_member).where(_member.c.id == d).values(merged_into=k))
    # Identities linked into `drop` before follow too; `keep` is nobody's identity any more.
    session.execute(sa.update(_member).where(_member.c.merged_into == d).values(merged_into=k))
    session.execute(sa.update(_member).where(_member.c.id == k).values(merged_into=None))
    keep.lang, keep.merged_into = lang, None
    drop.merged_into = k
    return Linked(member_id=k, card=merged)


def rehome(session: Session, *, member: MemberRecord, now: datetime) -> MemberRecord | None:
    """The member left the platform it lives on: move it onto a linked identity still here.

    Returns the member's new record, or None when no other identity is active (then the
    member leaves as anyone else does).
    """
    row = session.execute(sa.select(_member.c.id).where(
        _member.c.merged_into == member.id, _member.c.status == "active").order_by(_member.c.id)).first()
    if row is None:
        return None
    from storage import members

    other = members.by_id(session, member_id=int(row.id))
    if other is None:
        return None
    merge(session, keep=other, drop=member, now=now, lang_of=member)
    return other


def _join_connections(session: Session, *, keep: int, drop: int) -> None:
    """drop's contacts become keep's; each contact keeps their own number for the member."""
    session.execute(sa.delete(_conn).where(sa.or_(
        sa.and_(_conn.c.member_id == keep, _conn.c.contact_id == drop),
        sa.and_(_conn.c.member_id == drop, _conn.c.contact_id == keep))))
    mine = {int(c) for c in session.execute(sa.select(_conn.c.contact_id).where(_conn.c.member_id == keep)).scalars()}
    theirs = session.execute(sa.select(_conn.c.id, _conn.c.contact_id).where(_conn.c.member_id == drop)
                             .order_by(_conn.c.number)).all()
    last = session.execute(sa.select(_seq.c.last).where(_seq.c.member_id == keep)).scalar_one_or_none() or 0
    for row_id, contact in theirs:
        if int(contact) in mine:
            # Both knew them: keep's rows stay, drop's go (and the contact's row for drop).
            session.execute(sa.delete(_conn).where(_conn.c.id == row_id))
            session.execute(sa.delete(_conn).where(_conn.c.member_id == contact, _conn.c.contact_id == drop))
            continue
        last += 1
        session.execute(sa.update(_conn).where(_conn.c.id == row_id).values(member_id=keep, number=last))
        session.execute(sa.update(_conn).where(_conn.c.member_id == contact, _conn.c.contact_id == drop)
                        .values(contact_id=keep))
    if theirs:
        if insert_ignore(session, _seq, {"member_id": keep, "last": last}, conflict=["member_id"]) is False:
            session.execute(sa.update(_seq).where(_seq.c.member_id == keep).values(last=last))
    session.execute(sa.delete(_seq).where(_seq.c.member_id == drop))


def _move_introductions(session: Session, *, keep: int, drop: int) -> None:
    """Introductions, their steps, nudges and follow-ups follow the member.

    An introduction of the member to themselves (one identity asked for the other) ends.
    """
    rows = session.execute(sa.select(_intro.c.id, _intro.c.requester_id, _intro.c.target_id,
                                     _intro.c.broker_id, _intro.c.path).where(sa.or_(
        _intro.c.requester_id.in_([drop]), _intro.c.target_id == drop, _intro.c.broker_id == drop,
        _intro.c.path.like(f"%{drop}%")))).all()
    for intro_id, requester, target, broker, raw_path in rows:
        path = [keep if m == drop else int(m) for m in json.loads(raw_path)]
        parties = {keep if x == drop else x for x in (requester, target)}
        if len(parties) < 2 or len(set(path)) < len(path):
            outbox.forget_by_key(session, pattern=f"intro:{intro_id}:%")
            outbox.forget_by_key(session, pattern=f"followup:{intro_id}:%")
            session.execute(sa.delete(_fu).where(_fu.c.intro_id == intro_id))
            session.execute(sa.delete(_step).where(_step.c.intro_id == intro_id))
            session.execute(sa.delete(_intro).where(_intro.c.id == intro_id))
            continue
        session.execute(sa.update(_intro).where(_intro.c.id == intro_id).values(
            requester_id=keep if requester == drop else requester,
            target_id=keep if target == drop else target,
            broker_id=keep if broker == drop else broker, path=json.dumps(path)))
    session.execute(sa.update(_step).where(_step.c.actor_id == drop).values(actor_id=keep))
    for column in (_nudge.c.candidate_id, _nudge.c.connector_id):
        clash = sa.select(_nudge.c.ask_id).where(_nudge.c.candidate_id == keep)
        if column is _nudge.c.candidate_id:
            session.execute(sa.delete(_nudge).where(column == drop, _nudge.c.ask_id.in_(clash)))
        session.execute(sa.update(_nudge).where(column == drop).values({column.name: keep}))
    clash_fu = sa.select(_fu.c.intro_id).where(_fu.c.member_id == keep)
    session.execute(sa.delete(_fu).where(_fu.c.member_id == drop, _fu.c.intro_id.in_(clash_fu)))
    session.execute(sa.update(_fu).where(_fu.c.member_id == drop).values(member_id=keep))
