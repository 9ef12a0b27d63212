"""Invite codes: personal, single use by default, expiring."""

from __future__ import annotations

import secrets
import string
import unicodedata
from datetime import datetime, timedelta
from typing import Optional

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlmodel import col

from storage.models import Invite, Member
from storage.sql import insert_ignore

ALPHABET = string.ascii_uppercase + "23456789"
CODE_LENGTH = 8
_invite = Invite.__table__  # type: ignore[attr-defined]
_member = Member.__table__  # type: ignore[attr-defined]


def new_code() -> str:
    """A random code of A-Z and 2-9 (34**8 ≈ 1.8e12 codes)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def clean_code(raw: str) -> str:
    """What a member typed, as a code: full-width folded, upper case, without spaces or dashes."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", raw).upper() if ch not in " -_")


def create(session: Session, *, inviter_id: int, now: datetime, ttl: timedelta,
                 max_uses: int) -> Invite:
    """A fresh code for the inviter."""
    while True:
        code = new_code()
        values = {"code": code, "inviter_id": inviter_id, "created_at": now, "expires_at": now + ttl,
                  "max_uses": max_uses, "uses": 0}
        if insert_ignore(session, _invite, values, conflict=["code"]):
            invite = session.get(Invite, code)
            assert invite is not None
            return invite


def get_for_update(session: Session, *, code: str) -> Optional[Invite]:
    """The invite with this code, locked for this transaction on PostgreSQL.

    The inviter's member row is share-locked too. Two members joining each other's codes at
    the same instant (on two workers) each hold their own member row from the start of their
    push, so without this both would find "not connected yet", both connect and both tell the
    other. With it, the second join waits for the first to commit, or the two deadlock and
    the dispatcher runs the loser again: either way it then finds them connected.
    """
    stmt = sa.select(Invite).where(col(Invite.code) == code)
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        stmt = stmt.with_for_update()
    invite = (session.execute(stmt)).scalar_one_or_none()
    if invite is not None and postgres:
        session.execute(sa.select(_member.c.id).where(_member.c.id == invite.inviter_id)
                        .with_for_update(read=True))
    return invite


def use(session: Session, *, invite: Invite) -> None:
    """Count one use of the code."""
    invite.uses += 1
    session.add(invite)
