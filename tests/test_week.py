"""A week of simulated time for a small network: nudges, digests and follow-ups, exactly as specified.

The clock is injected and moved by hand; every job runs every three hours, as often as a
scheduler would need to and far more often than anything is due, so that a job that sends
twice, early or late shows up.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from scheduler.clock import FixedClock
from scheduler.jobs import JOBS
from storage.models import OutboxMessage
from tests.botkit import RunningBot, make_config, queued, running_bot, say
from tests.test_intros import connect, ids, member, step_id

MONDAY = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # 08:00 in Shanghai, before the 09:00 digest
FOLLOW_UP = "A week ago you were introduced to"
WEEKLY_JOBS = ("referral-nudges", "follow-ups", "digests", "intro-expiry")


async def tick(bot: RunningBot, at: datetime) -> None:
    deps = bot.services.scheduler.deps
    for name in WEEKLY_JOBS:
        await JOBS[name].func(deps, at)


def with_text(messages: list[str], needle: str) -> list[str]:
    return [m for m in messages if needle in m]


async def digest_keys(bot: RunningBot) -> Counter[str]:
    """Digests actually queued (not the empty markers), by member id."""
    with bot.services.db.session() as s:
        rows = s.execute(sa.select(OutboxMessage.dedupe_key, OutboxMessage.payload)
                         .where(OutboxMessage.dedupe_key.like("digest:%"))).all()  # type: ignore[union-attr]
    return Counter(key.split(":")[1] for key, payload in rows if '"type": "none"' not in payload)


async def test_a_week_of_nudges_digests_and_follow_ups(db_url: str) -> None:
    clock = FixedClock(MONDAY)
    async with running_bot(make_config(db_url), clock=clock) as bot:
        for who in ("alice", "bob", "carol", "dave"):
            await member(bot, who)
        await connect(bot, "carol", "alice", a_to_b=3)
        await connect(bot, "carol", "bob", a_to_b=2)
        await connect(bot, "alice", "dave")
        await say(bot, "bob", "set offers tax law, 税务律师")
        await say(bot, "dave", "set title Tax lawyer")
        await say(bot, "alice", "ask need a tax lawyer for our Series A")
        alice, bob, carol, dave = await ids(bot, "alice", "bob", "carol", "dave")

        # Monday 08:00 Shanghai: carol is nudged about bob (2nd degree for alice); dave, alice's
        # own contact, is not nudged but waits for alice's digest.
        await tick(bot, clock.now())
        nudges = with_text(await queued(bot, "carol"), "is looking for")
        assert len(nudges) == 1 and "Bob offers" in nudges[0]
        assert not with_text(await queued(bot, "alice"), "is looking for")
        nudge = re.search(r"nudge (\d+) yes", nudges[0])
        assert nudge
        assert await digest_keys(bot) == Counter()  # not before 09:00

        # Carol says Introduce; alice and bob both accept; the introduction completes Monday.
        await say(bot, "carol", f"nudge {nudge.group(1)} yes")
        for who in ("alice", "bob"):
            offer = with_text(await queued(bot, who), "accept")[-1]
            await say(bot, who, f"accept {step_id(offer)}")

        # The rest of the week, every three hours.
        while clock.now() < MONDAY + timedelta(days=8):
            clock.advance(hours=3)
            await tick(bot, clock.now())
            if clock.now() < MONDAY + timedelta(days=7):
                early = [m for m in await queued(bot, "alice") if m.startswith(FOLLOW_UP)]
                assert not early, "a follow-up went out before 7 days"

        # Exactly one nudge for the (ask, candidate) pair, however often the job ran.
        assert len(with_text(await queued(bot, "carol"), "is looking for")) == 1
        # Follow-ups: both sides asked once, on day 7.
        for who in ("alice", "bob"):
            assert len([m for m in await queued(bot, who) if m.startswith(FOLLOW_UP)]) == 1, who
        assert not [m for m in await queued(bot, "carol") if m.startswith(FOLLOW_UP)]
        # Digests: one per member and week at most, alice's first one naming dave for her ask.
        per_member = await digest_keys(bot)
        assert per_member[str(alice)] in (1, 2) and max(per_member.values()) <= 2
        alice_digests = with_text(await queued(bot, "alice"), "Your weekly digest")
        assert "Dave" in alice_digests[0] and "need a tax lawyer" in alice_digests[0]
        assert all(d.count("Your weekly digest") == 1 for d in alice_digests)
        assert {str(m) for m in (alice, bob, carol, dave)} >= set(per_member)
