"""Digests on both databases and in both languages: who is due when, what each section says,
empty digests, the `digest` command, and the job's idempotency across re-runs and crashes."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
import sqlalchemy as sa

from scheduler.clock import FixedClock
from handlers.digests import CrashForTest
from scheduler.jobs import JOBS
from storage import asks, exports, privacy
from storage.digests import EMPTY, current_period, zone
from storage.models import FollowUp, OutboxMessage
from tests.botkit import RunningBot, event, make_config, queued, running_bot, say
from tests.test_intros import connect, ids, member, step_id

# Monday 2 March 2026 (ISO week 10) at 09:00 in Asia/Shanghai is 01:00 UTC.
MONDAY_0900_CST = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
LAST_WEEK = MONDAY_0900_CST - timedelta(days=5)  # Wednesday of week 9: inside week 10's window


async def run(bot: RunningBot, at: datetime, **kwargs: object) -> str:
    deps = bot.services.scheduler.deps
    return await JOBS["digests"].func(deps, at, **kwargs)  # type: ignore[call-arg]


async def digests_of(bot: RunningBot, openid: str) -> list[str]:
    return [m for m in await queued(bot, openid) if "digest" in m.lower() or "摘要" in m]


async def rows(bot: RunningBot, status: str | None = None) -> list[str]:
    with bot.services.db.session() as s:
        stmt = sa.select(OutboxMessage.dedupe_key).where(OutboxMessage.dedupe_key.like("digest:%"))
        if status is not None:
            stmt = stmt.where(OutboxMessage.status == status)
        return [str(k) for k in s.execute(stmt.order_by(OutboxMessage.dedupe_key)).scalars()]


async def triangle(bot: RunningBot, *, zh: bool = False, clock: FixedClock | None = None) -> None:
    """ann - bob - cat: ann and bob first, then bob and cat (on Sunday when a clock is given)."""
    for who in ("ann", "bob", "cat"):
        await member(bot, who, zh=zh)
    await connect(bot, "ann", "bob")
    if clock is not None:
        clock.set(MONDAY_0900_CST - timedelta(hours=20))  # Sunday 13:00 in Shanghai
    await connect(bot, "bob", "cat")


def test_periods_follow_the_members_time_zone() -> None:
    shanghai, berlin = zone(None, "Asia/Shanghai"), zone("Europe/Berlin", "Asia/Shanghai")
    assert current_period("weekly", shanghai, MONDAY_0900_CST - timedelta(minutes=1)) is None
    week = current_period("weekly", shanghai, MONDAY_0900_CST + timedelta(minutes=7))
    assert week is not None and week.key == "2026-W10" and week.start == MONDAY_0900_CST
    assert week.since == MONDAY_0900_CST - timedelta(days=7)
    # 09:00 in Berlin (CET, UTC+1) is 08:00 UTC; at 01:07 UTC it is still Monday night there.
    assert current_period("weekly", berlin, MONDAY_0900_CST + timedelta(minutes=7)) is None
    assert current_period("weekly", berlin, datetime(2026, 3, 2, 8, 7, tzinfo=UTC)) is not None
    # Not again on Wednesday: a missed Monday is not sent days late.
    assert current_period("weekly", shanghai, MONDAY_0900_CST + timedelta(days=2)) is None
    day = current_period("daily", shanghai, MONDAY_0900_CST + timedelta(days=1, minutes=7))
    assert day is not None and day.key == "2026-03-03"
    assert current_period("daily", shanghai, MONDAY_0900_CST + timedelta(hours=23)) is None
    assert current_period("off", shanghai, MONDAY_0900_CST + timedelta(minutes=7)) is None
    # An unknown zone falls back to the scheduler's.
    assert zone("Mars/Olympus", "Asia/Shanghai").key == "Asia/Shanghai"


async def test_weekly_digest_on_monday_0900_in_each_members_zone(db_url: str) -> None:
    clock = FixedClock(LAST_WEEK)
    cfg = make_config(db_url)
    async with running_bot(cfg, clock=clock) as bot:
        await triangle(bot)
        [cat_id] = await ids(bot, "cat")
        with bot.services.db.session() as s:
            privacy.set_timezone(s, member_id=cat_id, timezone="Europe/Berlin")
        assert "queued 0 digests" in await run(bot, MONDAY_0900_CST - timedelta(minutes=1))
        assert await digests_of(bot, "ann") == []
        await run(bot, MONDAY_0900_CST + timedelta(minutes=7))
        [ann] = await digests_of(bot, "ann")
        assert "Your weekly digest" in ann
        assert "New connections in your network (1)" in ann and "Bob connected with Cat" in ann
        assert await digests_of(bot, "cat") == []  # still Monday night in Berlin
        await run(bot, datetime(2026, 3, 2, 8, 7, tzinfo=UTC))
        [cat] = await digests_of(bot, "cat")
        assert "Bob connected with Ann" in cat
        assert len(await digests_of(bot, "ann")) == 1
        # bob's only news are his own connections: an empty digest is not sent.
        assert await digests_of(bot, "bob") == []
        assert "digest:" in (await rows(bot, EMPTY))[0]


async def test_daily_off_and_empty_digests_do_not_block_later_ones(db_url: str) -> None:
    clock = FixedClock(LAST_WEEK)
    cfg = make_config(db_url)
    async with running_bot(cfg, clock=clock) as bot:
        await triangle(bot)
        assert "every day at 09:00" in await say(bot, "bob", "digest daily")
        assert "no more digests" in await say(bot, "cat", "digest off")
        await run(bot, MONDAY_0900_CST + timedelta(minutes=7))
        assert await digests_of(bot, "cat") == []
        assert await digests_of(bot, "bob") == []  # empty on Monday
        # Tuesday: ann connected with dan on Monday, so bob has news; his empty Monday did not block it.
        await member(bot, "dan")
        clock.set(MONDAY_0900_CST + timedelta(hours=3))
        await connect(bot, "ann", "dan")
        await run(bot, MONDAY_0900_CST + timedelta(days=1, minutes=7))
        [bob] = await digests_of(bot, "bob")
        assert "Your daily digest" in bob and "Ann connected with Dan" in bob
        assert await digests_of(bot, "cat") == []
        assert len(await digests_of(bot, "ann")) == 1  # weekly: not again on Tuesday


async def test_each_section_with_names_through_the_visibility_rule(db_url: str) -> None:
    clock = FixedClock(LAST_WEEK)
    cfg = make_config(db_url)
    async with running_bot(cfg, clock=clock) as bot:
        for who in ("ann", "bob", "cat", "dan", "eve"):
            await member(bot, who)
        await say(bot, "bob", "set title Lawyer")
        await connect(bot, "bob", "ann")  # bob's contacts: 1 ann, 2 cat, 3 dan
        await connect(bot, "bob", "cat")
        await connect(bot, "bob", "dan")
        await connect(bot, "eve", "ann")
        await say(bot, "eve", "privacy name hidden")
        # A completed broker introduction (cat and dan), and a pending one (ann and cat).
        await say(bot, "bob", "introduce 2 3")
        for who in ("cat", "dan"):
            reply = await say(bot, who, "requests")
            await say(bot, who, f"accept {step_id(reply)}")
        await say(bot, "bob", "introduce 1 2")
        pending_ann = step_id(await say(bot, "ann", "requests"))
        [dan_id, cat_id] = await ids(bot, "dan", "cat")
        with bot.services.db.session() as s:
            asks.create(s, member_id=dan_id, text="looking for a lawyer", now=clock.now())
            # The follow-up of cat and dan's introduction, made due now.
            s.execute(sa.update(FollowUp).where(FollowUp.member_id.in_([cat_id, dan_id]))
                      .values(due_at=MONDAY_0900_CST - timedelta(hours=1)))
            s.execute(sa.update(FollowUp).where(FollowUp.member_id == cat_id).values(status="asked"))
        await run(bot, MONDAY_0900_CST + timedelta(minutes=7))

        [ann] = await digests_of(bot, "ann")
        assert "Waiting for your decision (1)" in ann and f"accept {pending_ann}" in ann
        assert f"decline {pending_ann}" in ann and "Bob would like to introduce you to Cat" in ann
        # eve's name is hidden: ann hears of a new connection of eve's? No: eve is ann's contact,
        # and the hidden name is never shown.
        assert "Eve" not in ann
        [bob] = await digests_of(bot, "bob")
        assert "Introductions completed (1)" in bob and "You introduced Cat and Dan" in bob
        assert "Asks from your contacts you could help with (1)" in bob
        assert "Dan: “looking for a lawyer”" in bob
        [cat] = await digests_of(bot, "cat")
        assert "You and Dan are now connected" in cat
        assert "Did you meet? (1)" in cat
        assert re.search(r"· Dan: met (\d+) yes / met \1 notyet / met \1 no", cat), cat
        [dan] = await digests_of(bot, "dan")
        assert "Did you meet? (1)" in dan and "· Cat (I will ask you shortly)" in dan
        assert "Your contacts who match your asks (1)" in dan and "“looking for a lawyer”: Bob" in dan
        assert "You and Cat are now connected" in dan
        [eve] = await digests_of(bot, "eve")
        assert "Bob connected with Ann" in eve or "Ann connected with Bob" in eve


async def test_chinese_digest_and_commands(db_url: str) -> None:
    clock = FixedClock(LAST_WEEK)
    cfg = make_config(db_url)
    async with running_bot(cfg, clock=clock) as bot:
        await triangle(bot, zh=True, clock=clock)
        assert "每周一 09:00" in await say(bot, "ann", "摘要")
        assert "用法" in await say(bot, "ann", "摘要 每月")
        assert "每天 09:00" in await say(bot, "ann", "摘要 每日")
        assert "每天 09:00" in await say(bot, "ann", "摘要")
        assert "不再发送摘要" in await say(bot, "cat", "摘要 关闭")
        assert "每周一" in await say(bot, "cat", "摘要每周")
        await run(bot, MONDAY_0900_CST + timedelta(minutes=7))
        [ann] = await digests_of(bot, "ann")
        assert "今日摘要" in ann and "人脉圈里的新联系（1）" in ann and "Bob 与 Cat 建立了联系" in ann
        [cat] = await digests_of(bot, "cat")
        assert "本周摘要" in cat


async def test_digest_command_in_english(db_url: str) -> None:
    cfg = make_config(db_url)
    async with running_bot(cfg, clock=FixedClock(LAST_WEEK)) as bot:
        assert "weekly, on Mondays at 09:00" in await say(bot, "ann", "digest")
        assert "Usage: digest weekly" in await say(bot, "ann", "digest hourly")
        assert "every day" in await say(bot, "ann", "DIGEST Daily")
        assert "daily at 09:00" in await say(bot, "ann", "/digest")
        assert "no more digests" in await say(bot, "ann", "digest off")
        assert "off" in await say(bot, "ann", "digest")


async def _network(bot: RunningBot, n: int) -> list[str]:
    """A hub with n spokes, connected last week: each spoke's digest tells of the others."""
    spokes = [f"m{i:02d}" for i in range(n)]
    await member(bot, "hub")
    for who in spokes:
        await member(bot, who)
        await connect(bot, "hub", who)
    return spokes


async def test_job_run_twice_queues_once(db_url: str) -> None:
    clock = FixedClock(LAST_WEEK)
    cfg = make_config(db_url)
    async with running_bot(cfg, clock=clock) as bot:
        spokes = await _network(bot, 4)
        at = MONDAY_0900_CST + timedelta(minutes=7)
        first = await run(bot, at)
        assert "queued 4 digests" in first
        second = await run(bot, at + timedelta(minutes=15))
        assert "queued 0 digests" in second and "queued before" in second
        for who in spokes:
            assert len(await digests_of(bot, who)) == 1


@pytest.mark.parametrize("crash_at", [4, 7])
async def test_job_killed_mid_run_then_rerun_sends_each_digest_once(db_url: str, crash_at: int) -> None:
    clock = FixedClock(LAST_WEEK)
    cfg = make_config(db_url)
    async with running_bot(cfg, clock=clock) as bot:
        spokes = await _network(bot, 7)
        at = MONDAY_0900_CST + timedelta(minutes=7)
        written = count(1)

        def crash(_n: int) -> bool:
            # Dies while writing the run's `crash_at`-th digest: its whole batch is lost.
            return next(written) == crash_at

        with pytest.raises(CrashForTest):
            await run(bot, at, batch_size=3, crash_after=crash)
        before = await rows(bot)
        assert len(before) == 3 * ((crash_at - 1) // 3)  # the batches before it committed
        result = await run(bot, at + timedelta(minutes=15), batch_size=3)
        assert "queued before" in result
        keys = await rows(bot)
        assert len(keys) == len(set(keys)) == 8  # hub and seven spokes, each once
        for who in spokes:
            assert len(await digests_of(bot, who)) == 1


async def test_two_workers_at_once_deactivated_members_and_the_export(db_url: str) -> None:
    clock = FixedClock(LAST_WEEK)
    cfg = make_config(db_url)
    async with running_bot(cfg, clock=clock) as bot:
        spokes = await _network(bot, 5)
        await event(bot, "m04", "unsubscribe")  # deactivated: no digest, and not named in others'
        at = MONDAY_0900_CST + timedelta(minutes=7)
        # Two workers at the same moment (on PostgreSQL they really overlap): one digest each.
        await asyncio.gather(run(bot, at, batch_size=2), run(bot, at, batch_size=2))
        keys = await rows(bot)
        assert len(keys) == len(set(keys)) == 5  # hub and four active spokes
        for who in spokes[:4]:
            [digest] = await digests_of(bot, who)
            assert "M04" not in digest
        assert await digests_of(bot, "m04") == []
        [m00] = await ids(bot, "m00")
        await say(bot, "m00", "digest daily")
        with bot.services.db.session() as s:
            privacy.set_timezone(s, member_id=m00, timezone="Europe/Berlin")
            settings = exports.collect(s, member_id=m00)["settings"]
        assert settings["digest"] == "daily" and settings["timezone"] == "Europe/Berlin"
