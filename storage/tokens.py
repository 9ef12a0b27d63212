"""The shared WeChat access_token row: one per app, refreshed by one worker at a time."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from storage.models import AccessToken
from storage.sql import insert_ignore

_token = AccessToken.__table__  # type: ignore[attr-defined]


def get(session: Session, *, app_id: str) -> AccessToken | None:
    """The stored token row for this app, if any worker ever fetched one."""
    return session.get(AccessToken, app_id, populate_existing=True)


def claim_refresh(
    session: Session, *, app_id: str, seen_token: str | None, now: datetime, lease_until: datetime
) -> bool:
    """Take the refresh lease; False when another worker holds it or already stored a new token.

    The UPDATE is a compare-and-swap on the token we saw, so a worker that read the row just
    before someone else stored a fresh token does not fetch a second one (each fetch
    invalidates the previous token and spends the 2000-a-day quota).
    """
    insert_ignore(session, _token, {"app_id": app_id}, conflict=["app_id"])
    stmt = (
        sa.update(_token)
        .where(
            _token.c.app_id == app_id,
            sa.or_(_token.c.refresh_lock_until.is_(None), _token.c.refresh_lock_until <= now),
            _token.c.token.is_not_distinct_from(seen_token),
        )
        .values(refresh_lock_until=lease_until)
        # RETURNING, not rowcount: one statement that says whether this worker took the lease.
        .returning(_token.c.app_id)
    )
    return session.execute(stmt).first() is not None


def store(
    session: Session, *, app_id: str, token: str, expires_at: datetime, now: datetime
) -> None:
    """Save a freshly fetched token and give up the refresh lease."""
    session.execute(
        sa.update(_token)
        .where(_token.c.app_id == app_id)
        .values(token=token, expires_at=expires_at, refreshed_at=now, refresh_lock_until=None)
    )


def release_refresh(session: Session, *, app_id: str) -> None:
    """Give up the refresh lease after a failed fetch, so another worker may try at once."""
    session.execute(
        sa.update(_token).where(_token.c.app_id == app_id).values(refresh_lock_until=None)
    )
