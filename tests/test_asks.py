"""Asks, referral nudges and follow-ups through the webhook, on both databases and in both languages."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from scheduler.clock import FixedClock
from scheduler.jobs import JOBS
from storage import asks, exports, followups, outbox
from tests.botkit import RunningBot, event, make_config, queued, running_bot, say
from tests.test_intros import connect, connected, ids, member, new_messages, step_id

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def nudge_id(message: str) -> int:
    found = re.search(r"(?:nudge|牵线) (\d+) (?:yes|是)", message)
    assert found, message
    return int(found.group(1))


def ask_id(reply: str) -> int:
    found = re.search(r"(?:ask|求助编号) (\d+)", reply)
    assert found, reply
    return int(found.group(1))


async def run(bot: RunningBot, name: str, at: datetime) -> str:
    return await JOBS[name].func(bot.services.scheduler.deps, at)


async def triangle(bot: RunningBot, *, zh: bool = False) -> dict[str, int]:
    """alice — carol — bob, everyone's outbox read so far."""
    for who in ("alice", "bob", "carol"):
        await member(bot, who, zh=zh)
    await connect(bot, "carol", "alice", a_to_b=3, b_to_a=2)
    await connect(bot, "carol", "bob", a_to_b=2)
    seen: dict[str, int] = {}
    for who in ("alice", "bob", "carol"):
        await new_messages(bot, who, seen)
    return seen


async def test_ask_asks_close_and_expiry(db_url: str) -> None:
    clock = FixedClock(T0)
    async with running_bot(make_config(db_url), clock=clock) as bot:
        await member(bot, "alice")
        await member(bot, "bob")
        assert (await say(bot, "alice", "ask")).startswith("Usage: ask TEXT")
        assert await say(bot, "alice", "ask " + "x" * 201) == \
            "An ask can be at most 200 characters; yours has 201. Nothing was posted."
        assert await say(bot, "alice", "asks") == "You have no open asks. Post one with ask TEXT."
        posted = await say(bot, "alice", "ask looking for a tax lawyer")
        first = ask_id(posted)
        assert posted.startswith(f"Posted as ask {first}.") and "open until 2026-04-01" in posted
        assert f"close {first}" in posted
        second = ask_id(await say(bot, "alice", "ask " + "y" * 200))
        listing = await say(bot, "alice", "asks")
        assert listing.startswith("Your open asks (2):")
        assert f"{first}. looking for a tax lawyer — open until 2026-04-01" in listing
        assert "Usage: close ID" in await say(bot, "alice", "close")
        assert await say(bot, "alice", "close 99999") == "You have no ask 99999. Send asks to see your open asks."
        assert await say(bot, "bob", f"close {first}") == \
            f"You have no ask {first}. Send asks to see your open asks."  # not his: the same as none
        assert await say(bot, "alice", f"close {first}") == \
            f"Ask {first} is closed. Nobody will be nudged about it any more."
        assert await say(bot, "alice", f"close {first}") == f"Ask {first} was already closed. Nothing changed."
        assert (await say(bot, "alice", "asks")).startswith("Your open asks (1):")
        clock.advance(days=30, minutes=1)
        assert await say(bot, "alice", "asks") == "You have no open asks. Post one with ask TEXT."
        assert await say(bot, "alice", f"close {second}") == \
            f"Ask {second} has already expired after 30 days. Nothing changed."
        assert "expired 1 asks" in await run(bot, "referral-nudges", clock.now())


async def test_asks_in_chinese(db_url: str) -> None:
    async with running_bot(make_config(db_url), clock=FixedClock(T0)) as bot:
        await member(bot, "alice", zh=True)
        assert (await say(bot, "alice", "求助")).startswith("用法：求助 内容")
        assert await say(bot, "alice", "求助 " + "找" * 201) == "求助最多 200 个字，你的有 201 个字。未发布。"
        posted = await say(bot, "alice", "求助 找一位税务律师")
        n = ask_id(posted)
        assert posted.startswith(f"已发布，求助编号 {n}。") and f"关闭 {n}" in posted
        assert f"{n}. 找一位税务律师——有效期至 2026-04-01" in await say(bot, "alice", "我的求助")
        assert await say(bot, "alice", f"关闭 {n}") == f"求助 {n} 已关闭，不会再为它提醒任何人。"
        assert await say(bot, "alice", "我的求助") == "你目前没有进行中的求助。发送“求助 内容”发布一个。"


async def test_nudge_once_introduce_follow_up_and_track_record(db_url: str) -> None:
    clock = FixedClock(T0)
    async with running_bot(make_config(db_url), clock=clock) as bot:
        seen = await triangle(bot)
        await say(bot, "bob", "set offers tax law, audits")
        await new_messages(bot, "bob", seen)
        await say(bot, "alice", "ask looking for tax advice")
        assert "sent 1 referral nudges" in await run(bot, "referral-nudges", T0)
        assert "sent 0 referral nudges" in await run(bot, "referral-nudges", T0 + timedelta(minutes=1))
        [nudge] = await new_messages(bot, "carol", seen)
        assert nudge.startswith("Alice is looking for: “looking for tax advice”\n"
                                "Your contact Bob offers tax law — introduce them?")
        n = nudge_id(nudge)
        assert f"Introduce: nudge {n} yes" in nudge and f"Not now: nudge {n} no" in nudge
        assert "bob@mail" not in nudge
        assert await new_messages(bot, "alice", seen) == [] and await new_messages(bot, "bob", seen) == []
        assert await say(bot, "alice", f"nudge {n} yes") == f"There is no suggestion {n} for you."
        assert (await say(bot, "carol", f"nudge {n} yes")).startswith("I have asked Alice and Bob.")
        assert await say(bot, "carol", f"nudge {n} no") == f"You already answered suggestion {n}. Nothing changed."
        [ask_a] = await new_messages(bot, "alice", seen)
        [ask_b] = await new_messages(bot, "bob", seen)
        assert ask_a.startswith("Carol would like to introduce you to Bob.") and "bob@mail" not in ask_a
        assert "looking for tax advice" in ask_b
        await say(bot, "alice", f"accept {step_id(ask_a)}")
        assert "alice@mail" in await say(bot, "bob", f"accept {step_id(ask_b)}")
        assert await connected(bot, "alice", "bob")
        for who in ("alice", "carol"):
            await new_messages(bot, who, seen)
        # A week later both sides are asked, once.
        assert "sent 0 follow-ups" in await run(bot, "follow-ups", T0 + timedelta(days=6))
        assert "sent 2 follow-ups" in await run(bot, "follow-ups", T0 + timedelta(days=7, minutes=1))
        assert "sent 0 follow-ups" in await run(bot, "follow-ups", T0 + timedelta(days=7, minutes=2))
        [fa] = await new_messages(bot, "alice", seen)
        [fb] = await new_messages(bot, "bob", seen)
        assert fa.startswith("A week ago you were introduced to Bob by Carol. Did you meet?")
        intro = int(re.search(r"met (\d+) yes", fa).group(1))  # type: ignore[union-attr]
        assert f"Not yet: met {intro} notyet" in fb and f"Not useful: met {intro} no" in fb
        clock.set(T0 + timedelta(days=8))
        assert (await say(bot, "alice", f"met {intro} yes")).startswith("Glad to hear you met Bob.")
        assert await say(bot, "alice", f"met {intro} no") == \
            f"You already answered about introduction {intro}. Nothing changed."
        assert await new_messages(bot, "carol", seen) == ["Alice met Bob after your introduction. Thank you!"]
        assert await say(bot, "bob", f"met {intro} notyet") == "Noted. I will ask about Alice once more in a week."
        assert await new_messages(bot, "carol", seen) == []
        # "Not yet" asks again once, a week later.
        assert "sent 1 follow-ups" in await run(bot, "follow-ups", T0 + timedelta(days=15, minutes=1))
        assert "sent 0 follow-ups" in await run(bot, "follow-ups", T0 + timedelta(days=30))
        [again] = await new_messages(bot, "bob", seen)
        assert again.startswith("Once more about Alice by Carol: did you meet by now?")
        assert (await say(bot, "bob", f"met {intro} notyet")).startswith("Noted: not yet.")
        assert "sent 0 follow-ups" in await run(bot, "follow-ups", T0 + timedelta(days=60))
        assert await new_messages(bot, "carol", seen) == ["Bob has not met Alice yet since your introduction."]
        card = await say(bot, "carol", "card")
        assert "Track record as a connector: 1 introductions made · 1 meetings followed" in card
        assert "Track record" not in await say(bot, "alice", "card")
        await say(bot, "carol", "lang zh")
        assert "引荐记录：促成引荐 1 次 · 之后见面 1 次" in await say(bot, "carol", "名片")
        with bot.services.db.session() as s:
            a = (await ids(bot, "alice"))[0]
            assert followups.due_follow_ups(s, member_id=a, now=T0 + timedelta(days=60)) == []


async def test_chinese_two_character_match_not_now_and_first_degree(db_url: str) -> None:
    async with running_bot(make_config(db_url), clock=FixedClock(T0)) as bot:
        seen = await triangle(bot, zh=True)
        await member(bot, "dan", zh=True)
        await connect(bot, "alice", "dan")
        await say(bot, "bob", "设置 职位 律师事务所合伙人")
        await say(bot, "dan", "设置 擅长 律师咨询")
        await say(bot, "carol", "设置 职位 律师助理")  # 1st degree of alice: never nudged about
        for who in ("alice", "bob", "carol", "dan"):
            await new_messages(bot, who, seen)
        await say(bot, "alice", "求助 找律师")
        assert "sent 1 referral nudges" in await run(bot, "referral-nudges", T0)
        [nudge] = await new_messages(bot, "carol", seen)
        assert nudge.startswith("Alice正在寻找：“找律师”\n你的联系人Bob擅长律师事务所合伙人——要介绍他们认识吗？")
        n = nudge_id(nudge)
        assert f"暂不: 牵线 {n} 否" in nudge and f"介绍他们: 牵线 {n} 是" in nudge
        assert await say(bot, "carol", f"牵线 {n} 否") == "好的，没有发送任何消息，Alice不会知道此事。"
        assert await new_messages(bot, "bob", seen) == [] and await new_messages(bot, "alice", seen) == []
        assert "sent 0" in await run(bot, "referral-nudges", T0 + timedelta(days=8))
        # Dan (alice's contact) and Carol go to alice's digest, not to a connector.
        alice, carol, dan = await ids(bot, "alice", "carol", "dan")
        assert await new_messages(bot, "dan", seen) == []
        with bot.services.db.session() as s:
            assert {m.member_id for m in asks.first_degree_matches(s, member_id=alice, now=T0)} == {carol, dan}
            helpable = asks.open_asks_i_could_help(s, member_id=dan, now=T0)
            assert [(m.ask.text, m.fields) for m in helpable] == [("找律师", ("offers",))]


async def test_weekly_limit_pause_and_deactivation(db_url: str) -> None:
    async with running_bot(make_config(db_url), clock=FixedClock(T0)) as bot:
        await member(bot, "alice")
        await member(bot, "carol")
        await connect(bot, "carol", "alice")
        for i in range(1, 6):
            await member(bot, f"d{i}")
            await say(bot, f"d{i}", "set offers graphic design")
            await connect(bot, "carol", f"d{i}")
        seen: dict[str, int] = {}
        await new_messages(bot, "carol", seen)
        await say(bot, "d5", "pause 30")  # paused candidates are not suggested
        await say(bot, "alice", "ask design for our logo")
        assert "sent 3 referral nudges" in await run(bot, "referral-nudges", T0)
        assert "sent 0 referral nudges" in await run(bot, "referral-nudges", T0 + timedelta(days=1))
        got = await new_messages(bot, "carol", seen)
        assert [m.split("\n")[1] for m in got] == [
            f"Your contact D{i} offers graphic design — introduce them?" for i in (1, 2, 3)]
        # A week later the 4th may go, unless carol paused.
        await say(bot, "carol", "pause 10")  # from T0: still paused a week later
        assert "sent 0 referral nudges" in await run(bot, "referral-nudges", T0 + timedelta(days=7, minutes=1))
        await say(bot, "carol", "pause 0")
        await event(bot, "d4", "unsubscribe")
        await member(bot, "d6")
        await say(bot, "d6", "set title Design lead")
        await connect(bot, "carol", "d6")
        await new_messages(bot, "carol", seen)
        assert "sent 1 referral nudges" in await run(bot, "referral-nudges", T0 + timedelta(days=7, minutes=2))
        [late] = await new_messages(bot, "carol", seen)
        assert "Your contact D6 offers Design lead" in late  # not D4 (left), not D5 (paused)


async def test_stealth_candidate_is_nudged_to_their_own_contact_only(db_url: str) -> None:
    async with running_bot(make_config(db_url), clock=FixedClock(T0)) as bot:
        seen = await triangle(bot)
        await say(bot, "bob", "set offers tax law")
        await say(bot, "bob", "stealth on")
        await new_messages(bot, "bob", seen)
        await say(bot, "alice", "ask tax law")
        assert "sent 1" in await run(bot, "referral-nudges", T0)
        assert len(await new_messages(bot, "carol", seen)) == 1
        assert await new_messages(bot, "alice", seen) == []  # never shown to the asker


async def test_deleting_a_member_removes_their_asks_nudges_and_follow_ups(db_url: str) -> None:
    from tests.test_rights import references, traces

    async with running_bot(make_config(db_url), clock=FixedClock(T0)) as bot:
        seen = await triangle(bot)
        await say(bot, "bob", "set offers quantum widgets")
        await say(bot, "alice", "ask Secret quantum widgets plan")
        await run(bot, "referral-nudges", T0)
        [nudge] = await new_messages(bot, "carol", seen)
        alice, bob = await ids(bot, "alice", "bob")
        with bot.services.db.session() as s:
            data = exports.collect(s, member_id=alice)["asks"]
        assert [(a["text"], a["status"]) for a in data] == [("Secret quantum widgets plan", "open")]
        await say(bot, "carol", f"nudge {nudge_id(nudge)} yes")
        ask_a, ask_b = (await queued(bot, "alice"))[-1], (await queued(bot, "bob"))[-1]
        await say(bot, "alice", f"accept {step_id(ask_a)}")
        await say(bot, "bob", f"accept {step_id(ask_b)}")
        await run(bot, "follow-ups", T0 + timedelta(days=8))
        await say(bot, "alice", "delete me")
        await say(bot, "alice", "delete me confirm")
        assert await references(bot.services.db, alice) == []
        assert await traces(bot.services.db, ["Secret quantum", "alice@mail"]) == []
        await say(bot, "bob", "delete me")
        await say(bot, "bob", "delete me confirm")
        assert await references(bot.services.db, bob) == []
        assert "Track record" not in await say(bot, "carol", "card")


async def test_jobs_on_two_workers_and_after_a_crash_send_nothing_twice(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:

    async with running_bot(make_config(db_url), clock=FixedClock(T0)) as bot:
        seen = await triangle(bot)
        await member(bot, "dan")
        await connect(bot, "carol", "dan")
        await say(bot, "bob", "set offers tax law")
        await say(bot, "dan", "set industry Design")
        await new_messages(bot, "carol", seen)
        await say(bot, "alice", "ask tax law")
        await say(bot, "alice", "ask design")
        # A crash while the second ask is being nudged: the first stays done, the second rolls back.
        real = outbox.enqueue
        calls = 0

        def crashing(session: Session, **kwargs: Any) -> bool:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise RuntimeError("worker killed")
            return real(session, **kwargs)

        monkeypatch.setattr(outbox, "enqueue", crashing)
        with pytest.raises(RuntimeError):
            await run(bot, "referral-nudges", T0)
        monkeypatch.undo()
        assert len(await new_messages(bot, "carol", seen)) == 1
        # Two workers at once finish the rest, once.
        results = await asyncio.gather(run(bot, "referral-nudges", T0), run(bot, "referral-nudges", T0))
        assert sorted(r.split(",")[0] for r in results) == ["sent 0 referral nudges", "sent 1 referral nudges"]
        got = await new_messages(bot, "carol", seen)
        assert len(got) == 1 and "Your contact Dan offers Design" in got[0]
        # Follow-ups on two workers: each side asked once.
        n = nudge_id(got[0])
        await say(bot, "carol", f"nudge {n} yes")
        for who in ("alice", "dan"):
            await say(bot, who, f"accept {step_id((await queued(bot, who))[-1])}")
        for who in ("alice", "dan"):
            await new_messages(bot, who, seen)
        later = T0 + timedelta(days=7, minutes=1)
        await asyncio.gather(run(bot, "follow-ups", later), run(bot, "follow-ups", later))
        assert len(await new_messages(bot, "alice", seen)) == 1 and len(await new_messages(bot, "dan", seen)) == 1


async def test_follow_up_in_chinese_and_connector_hears_the_outcome(db_url: str) -> None:
    async with running_bot(make_config(db_url), clock=FixedClock(T0)) as bot:
        seen = await triangle(bot, zh=True)
        await say(bot, "carol", "介绍 1 2")
        for who in ("alice", "bob"):
            await say(bot, who, f"接受 {step_id((await queued(bot, who))[-1])}")
        for who in ("alice", "bob", "carol"):
            await new_messages(bot, who, seen)
        assert "sent 2 follow-ups" in await run(bot, "follow-ups", T0 + timedelta(days=7))
        [fa] = await new_messages(bot, "alice", seen)
        assert fa.startswith("一周前你经Carol介绍认识了Bob。你们见面了吗？")
        intro = int(re.search(r"见面 (\d+) 是", fa).group(1))  # type: ignore[union-attr]
        assert f"还没: 见面 {intro} 还没" in fa and f"没帮助: 见面 {intro} 没用" in fa
        assert (await say(bot, "alice", f"见面 {intro}")).startswith("用法：见面 编号")
        assert await say(bot, "carol", f"见面 {intro} 是") == f"没有关于引荐 {intro} 等你回复的问题。"
        assert await say(bot, "alice", f"见面 {intro} 没用") == "谢谢告知。我会转告为你们引荐的人，不会透露更多细节。"
        assert await say(bot, "bob", f"见面 {intro} 是") == "很高兴你和Alice见面了，我会告诉为你们引荐的人。"
        assert await new_messages(bot, "carol", seen) == [
            "Alice觉得这次和Bob的引荐没有帮助。仍然谢谢你的好意。", "Bob在你的引荐后和Alice见面了。谢谢你！"]
        assert "引荐记录：促成引荐 1 次 · 之后见面 1 次" in await say(bot, "carol", "名片")


async def test_paused_or_departed_askers_are_not_nudged_for(db_url: str) -> None:
    async with running_bot(make_config(db_url), clock=FixedClock(T0)) as bot:
        seen = await triangle(bot)
        await say(bot, "bob", "set offers tax law")
        await new_messages(bot, "bob", seen)
        await say(bot, "alice", "ask tax law")
        await say(bot, "alice", "pause 5")
        assert "sent 0" in await run(bot, "referral-nudges", T0)
        await event(bot, "alice", "unsubscribe")
        assert "sent 0" in await run(bot, "referral-nudges", T0 + timedelta(days=6))
        await event(bot, "alice", "subscribe")
        assert "sent 1" in await run(bot, "referral-nudges", T0 + timedelta(days=6))
        assert len(await new_messages(bot, "carol", seen)) == 1


async def test_a_hidden_field_still_matches_but_is_never_quoted(db_url: str) -> None:
    async with running_bot(make_config(db_url), clock=FixedClock(T0)) as bot:
        seen = await triangle(bot)
        await say(bot, "bob", "set offers secret tax schemes")
        await say(bot, "bob", "privacy offers hidden")
        await new_messages(bot, "bob", seen)
        await say(bot, "alice", "ask tax")
        assert "sent 1" in await run(bot, "referral-nudges", T0)
        [nudge] = await new_messages(bot, "carol", seen)
        assert nudge.startswith("Alice is looking for: “tax”\nYour contact Bob may be able to help — introduce them?")
        assert "secret" not in nudge
