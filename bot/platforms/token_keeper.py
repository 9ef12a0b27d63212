"""One access_token per app, shared by all workers through the database, refreshed by one.

This is the token logic of bot/platforms/official_account/api.py made reusable: the platform client supplies a
coroutine that fetches a token from its platform, and the keeper decides when to call it.
Every refresh invalidates the previous token after a short overlap and spends a daily quota
(WECHAT.md §0 rule 8, §7); WeCom asks to cache the token and not to call gettoken often, and
may invalidate a token early (§8.3). So: one row per app in `access_token` (storage/tokens.py)
that all workers read, an in-process lock so one coroutine refreshes, a lease on the row so one
worker refreshes, and a refused token is refreshed once, not in a loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from sqlalchemy.orm import Session

from bot.platforms.errors import TransientAPIError
from storage import tokens
from storage.db import Database
from storage.models import AccessToken

log = logging.getLogger(__name__)

T = TypeVar("T")
# storage.models.AccessToken.app_id is VARCHAR(64): a longer key fails on PostgreSQL only.
MAX_KEY_LENGTH = 64


class Clock(Protocol):
    """Anything that tells the current time as an aware UTC datetime (the project's clocks do)."""

    def now(self) -> datetime: ...


class _SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class FetchedToken:
    """What a platform's token endpoint answered: the token and its lifetime in seconds."""

    token: str
    expires_in: int


@dataclass(frozen=True)
class _CachedToken:
    token: str
    expires_at: datetime


class TokenKeeper:
    """The access_token of one app: cached in memory, shared in the database, refreshed once."""

    def __init__(
        self,
        *,
        db: Database,
        key: str,
        fetch: Callable[[], Awaitable[FetchedToken]],
        clock: Clock | None = None,
        refresh_margin: timedelta = timedelta(minutes=5),
        refresh_lease: timedelta = timedelta(seconds=30),
        refresh_wait: float = 30.0,
        poll_interval: float = 0.05,
    ) -> None:
        if not key or len(key) > MAX_KEY_LENGTH:
            raise ValueError(f"a token key must be 1 to {MAX_KEY_LENGTH} characters")
        self._db = db
        self.key = key
        self._fetch = fetch
        self._clock: Clock = clock or _SystemClock()
        self._refresh_margin = refresh_margin
        self._refresh_lease = refresh_lease
        self._refresh_wait = refresh_wait
        self._poll_interval = poll_interval
        self._refresh_lock = asyncio.Lock()
        self._cached: _CachedToken | None = None

    def __repr__(self) -> str:
        # Never the token, even in a debugger or a traceback's locals.
        return f"TokenKeeper(key={self.key!r})"

    async def token(self) -> str:
        """A token with more than the refresh margin left, refreshed first when needed."""
        cached = self._cached
        if cached is not None and self._fresh(cached.expires_at):
            return cached.token
        return await self.refresh(stale=cached.token if cached else None)

    async def refresh(self, *, stale: str | None) -> str:
        """Replace `stale` with a new token; exactly one fetch however many callers ask at once.

        Callers in this process queue on a lock; workers in other processes meet at the lease
        in the access_token row. Whoever comes second finds a token other than `stale` and uses it.
        """
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._refresh_wait
        async with self._refresh_lock:
            while True:
                now = self._clock.now()
                found = await self._db.run(self._find_or_claim, stale=stale, now=now,
                                           lease_until=now + self._refresh_lease)
                if isinstance(found, _CachedToken):
                    return self._remember(found)
                if found:
                    return await self._fetch_and_store()
                if loop.time() >= give_up_at:
                    raise TransientAPIError("another worker's access_token refresh did not finish")
                await asyncio.sleep(self._poll_interval)

    async def call(
        self, request: Callable[[str], Awaitable[T]], *, refused: Callable[[Exception], bool]
    ) -> T:
        """Run `request(token)`; on a refused token (`refused`), refresh once and retry once."""
        token = await self.token()
        try:
            return await request(token)
        except Exception as exc:
            if not refused(exc):
                raise
        token = await self.refresh(stale=token)
        return await request(token)

    def forget(self) -> None:
        """Drop the in-memory copy (the next call reads the database row again)."""
        self._cached = None

    def _find_or_claim(
        self, session: Session, *, stale: str | None, now: datetime, lease_until: datetime
    ) -> _CachedToken | bool:
        """In one transaction: a usable stored token, else whether we took the refresh lease."""
        row = tokens.get(session, app_id=self.key)
        if row is not None and self._usable(row, stale):
            return _CachedToken(row.token, row.expires_at)  # type: ignore[arg-type]
        return tokens.claim_refresh(session, app_id=self.key,
                                    seen_token=row.token if row else None,
                                    now=now, lease_until=lease_until)

    def _fresh(self, expires_at: datetime) -> bool:
        return expires_at - self._clock.now() > self._refresh_margin

    def _usable(self, row: AccessToken, stale: str | None) -> bool:
        return (row.token is not None and row.token != stale and row.expires_at is not None
                and self._fresh(row.expires_at))

    def _remember(self, cached: _CachedToken) -> str:
        self._cached = cached
        return cached.token

    async def _fetch_and_store(self) -> str:
        """Fetch a token while holding the lease; give the lease back if the fetch fails."""
        stored = False
        try:
            fetched = await self._fetch()
            if not fetched.token:
                raise ValueError("the token fetch returned an empty token")
            now = self._clock.now()
            expires_at = now + timedelta(seconds=fetched.expires_in)
            await self._db.run(tokens.store, app_id=self.key, token=fetched.token,
                               expires_at=expires_at, now=now)
            stored = True
            log.info("fetched a new access_token for %s", self.key)
            return self._remember(_CachedToken(fetched.token, expires_at))
        finally:
            if not stored:
                await self._db.run(tokens.release_refresh, app_id=self.key)
