"""The shared access_token keeper: one fetch for many callers and workers, one refresh on refusal."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from bot.platforms.errors import TransientAPIError
from bot.platforms.token_keeper import FetchedToken, TokenKeeper
from storage import tokens
from storage.db import Database

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
KEY = "wecom:ww0123456789abcdef:1000002"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.at = NOW

    def now(self) -> datetime:
        return self.at


class Platform:
    """A token endpoint: counts fetches, can be slow, can fail."""

    def __init__(self) -> None:
        self.fetches = 0
        self.fail_next: Exception | None = None
        self.delay = 0.0

    async def fetch(self) -> FetchedToken:
        self.fetches += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        return FetchedToken(token=f"token-{self.fetches}", expires_in=7200)


def keeper(db: Database, platform: Platform, clock: Clock, *, refresh_wait: float = 30.0) -> TokenKeeper:
    """A keeper, as one worker would build it."""
    return TokenKeeper(db=db, key=KEY, fetch=platform.fetch, clock=clock, poll_interval=0.01,
                       refresh_wait=refresh_wait)


async def test_many_callers_and_two_workers_fetch_once(db: Database) -> None:
    platform, clock = Platform(), Clock()
    platform.delay = 0.05
    one, two = keeper(db, platform, clock), keeper(db, platform, clock)
    got = await asyncio.gather(*(k.token() for k in (one, two) for _ in range(10)))
    assert set(got) == {"token-1"} and platform.fetches == 1
    row = await db.run(tokens.get, app_id=KEY)
    assert row is not None and row.token == "token-1" and row.refresh_lock_until is None
    assert row.expires_at == NOW + timedelta(seconds=7200)


async def test_a_token_near_its_end_is_refreshed_once(db: Database) -> None:
    platform, clock = Platform(), Clock()
    one, two = keeper(db, platform, clock), keeper(db, platform, clock)
    assert await one.token() == "token-1" and await two.token() == "token-1"
    clock.at = NOW + timedelta(seconds=7200 - 299)  # inside the 5-minute margin
    assert list(await asyncio.gather(one.token(), two.token())) == ["token-2", "token-2"]
    assert platform.fetches == 2


async def test_a_refused_token_is_refreshed_once_and_the_call_retried_once(db: Database) -> None:
    platform, clock = Platform(), Clock()
    k = keeper(db, platform, clock)
    seen: list[str] = []

    async def request(token: str) -> str:
        seen.append(token)
        if token == "token-1":
            raise LookupError("refused")
        return f"ok with {token}"

    assert await k.call(request, refused=lambda e: isinstance(e, LookupError)) == "ok with token-2"
    assert seen == ["token-1", "token-2"] and platform.fetches == 2

    async def always_refused(token: str) -> str:
        seen.append(token)
        raise LookupError("refused again")

    seen.clear()
    with pytest.raises(LookupError):
        await k.call(always_refused, refused=lambda e: isinstance(e, LookupError))
    assert seen == ["token-2", "token-3"] and platform.fetches == 3  # one refresh, not a loop

    async def other_error(token: str) -> str:
        raise ValueError("not about the token")

    with pytest.raises(ValueError):
        await k.call(other_error, refused=lambda e: isinstance(e, LookupError))
    assert platform.fetches == 3


async def test_a_worker_that_sees_another_workers_refresh_does_not_fetch(db: Database) -> None:
    platform, clock = Platform(), Clock()
    one, two = keeper(db, platform, clock), keeper(db, platform, clock)
    stale = await one.token()
    await two.token()
    assert await two.refresh(stale=stale) == "token-2"
    # `one` still holds token-1 in memory; told it is stale, it finds token-2 in the row.
    assert await one.refresh(stale=stale) == "token-2" and platform.fetches == 2


async def test_a_failed_fetch_gives_the_lease_back(db: Database) -> None:
    platform, clock = Platform(), Clock()
    platform.fail_next = RuntimeError("credentials")
    one, two = keeper(db, platform, clock), keeper(db, platform, clock, refresh_wait=0.2)
    with pytest.raises(RuntimeError):
        await one.token()
    row = await db.run(tokens.get, app_id=KEY)
    assert row is not None and row.refresh_lock_until is None
    assert await two.token() == "token-2"  # at once: no wait for a lease that nobody holds


async def test_a_lease_held_elsewhere_is_waited_for_then_given_up(db: Database) -> None:
    platform, clock = Platform(), Clock()
    claimed = await db.run(tokens.claim_refresh, app_id=KEY, seen_token=None, now=NOW,
                           lease_until=NOW + timedelta(seconds=30))
    assert claimed
    k = keeper(db, platform, clock, refresh_wait=0.1)
    with pytest.raises(TransientAPIError):
        await k.token()
    assert platform.fetches == 0

    # The other worker finishes while we wait: we take its token.
    waiting = asyncio.create_task(keeper(db, platform, clock, refresh_wait=5.0).token())
    await asyncio.sleep(0.05)
    await db.run(tokens.store, app_id=KEY, token="theirs", expires_at=NOW + timedelta(hours=2), now=NOW)
    assert await waiting == "theirs" and platform.fetches == 0


@pytest.mark.parametrize("bad", ["", "k" * 65])
def test_keys_must_fit_the_row(bad: str, db: Database) -> None:
    with pytest.raises(ValueError):
        TokenKeeper(db=db, key=bad, fetch=Platform().fetch)


async def test_repr_and_logs_never_show_the_token(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    k = keeper(db, Platform(), Clock())
    with caplog.at_level("INFO", logger="bot"):
        token = await k.token()
    assert token not in repr(k)
    assert all(token not in r.getMessage() for r in caplog.records if r.name.startswith("bot"))
