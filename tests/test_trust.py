"""Issue 8, trust under attack: what a member types, reads and is shown means what it says.

Everything goes through the webhook (tests.botkit), the jobs as the scheduler runs them, the
outbox and the export link, on both databases.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import aiohttp
import sqlalchemy as sa

from scheduler.clock import FixedClock
from scheduler.jobs import JOBS
from storage.models import Ask, IntroStep, Nudge, OutboxMessage
from tests.botkit import RunningBot, make_config, queued, running_bot, say
from tests.test_intros import connect, member, new_messages, step_id, triangle

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
APOLOGY = ("Sorry, something went wrong", "抱歉")


async def run(bot: RunningBot, name: str, at: datetime | None = None) -> str:
    """Run a scheduled job as the scheduler does."""
    deps = bot.services.scheduler.deps
    return await JOBS[name].func(deps, at or bot.services.clock.now())


async def export(bot: RunningBot, openid: str) -> dict:  # type: ignore[type-arg]
    """The member's data through their one-time export link."""
    url = (await say(bot, openid, "export")).splitlines()[-1]
    local = bot.base_url.rstrip("/") + url[len("http://127.0.0.1:8080"):]
    async with aiohttp.ClientSession() as s:
        async with s.get(local) as resp:
            assert resp.status == 200
            return await resp.json()  # type: ignore[no-any-return]


def outbox_texts(bot: RunningBot) -> list[str]:
    """Every outbox payload, sent or not."""
    with bot.services.db.session() as s:
        return [str(p) for p in s.execute(sa.select(OutboxMessage.payload)).scalars()]


# --- 2. Nothing we send can be turned into something else ----------------------------------

async def test_no_fake_lines_in_cards_notes_vouches_and_asks(db_url: str) -> None:
    fake = "\u2028Yinjian: your account is locked\u2029"
    async with running_bot(make_config(db_url)) as bot:
        await triangle(bot)
        saved = await say(bot, "bob", f"set title Partner{fake}")
        assert saved == "Saved. Title: PartnerYinjian: your account is locked"
        card = await say(bot, "bob", "card")
        assert "\u2028" not in card and "\u2029" not in card
        assert "Title: PartnerYinjian: your account is locked — seen by" in card
        posted = await say(bot, "alice", f"ask a tax lawyer{fake}")
        assert "\u2028" not in await say(bot, "alice", "asks") and "\u2028" not in posted
        await say(bot, "bob", "set offers tax")
        found = await say(bot, "alice", "find tax")
        assert "1. Bob" in found
        await say(bot, "alice", f"intro 1 hello{fake}")
        seen: dict[str, int] = {}
        [ask_c] = [m for m in await new_messages(bot, "carol", seen) if "accept" in m][-1:]
        assert "Note from Alice: helloYinjian: your account is locked" in ask_c
        await say(bot, "carol", f"accept {step_id(ask_c)} trust{fake}her")
        [ask_b] = [m for m in await new_messages(bot, "bob", seen) if "would like to meet you" in m]
        assert "Carol vouches: “trustYinjian: your account is lockedher”" in ask_b
        for text in outbox_texts(bot):
            assert "\\u2028" not in text and "\u2028" not in text and "\u2029" not in text


async def test_free_text_is_kept_as_typed(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await triangle(bot, zh=True)
        assert await say(bot, "bob", "设置 职位 合伙人（税务）！") == "已保存。职位：合伙人（税务）！"
        assert "职位：合伙人（税务）！" in await say(bot, "bob", "名片")
        posted = await say(bot, "alice", "求助 找一位律师：跨境（上海）")
        assert "找一位律师：跨境（上海）" in await say(bot, "alice", "我的求助") and posted
        # The card editor keeps what is typed too.
        await say(bot, "alice", "编辑名片")
        await say(bot, "alice", "Ａｌｉｃｅ，李")
        await say(bot, "alice", "取消")
        await say(bot, "carol", "编辑名片")
        await say(bot, "carol", "Ｃａｒｏｌ（陈）")
        for _ in range(8):
            last = await say(bot, "carol", "跳过")
        assert "姓名：Ｃａｒｏｌ（陈）" in last
        # Notes and vouches.
        assert "1. Bob" in await say(bot, "alice", "找 合伙人")
        await say(bot, "alice", "引荐 1 您好，想请教！")
        ask_c = (await queued(bot, "carol"))[-1]
        assert "您好，想请教！" in ask_c
        await say(bot, "carol", f"接受 {step_id(ask_c)} 她很靠谱（十年同事）")
        assert "她很靠谱（十年同事）" in (await queued(bot, "bob"))[-1]


async def test_card_editor_does_not_save_commands(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await say(bot, "ann", "set name Ann")
        assert "1/9 Name" in await say(bot, "ann", "card edit")
        helped = await say(bot, "ann", "help")
        assert helped.startswith("You are in the card editor, at Name.") and "1/9 Name" in helped
        refused = await say(bot, "ann", "contacts")
        assert refused.startswith("“contacts” is a command, so I did not take it as your Name.")
        assert "1/9 Name" in refused
        assert "“人脉” is a command" in await say(bot, "ann", "人脉")
        assert "2/9 Title" in await say(bot, "ann", "skip")
        assert "2/9 Title" in await say(bot, "ann", "帮助")
        await say(bot, "ann", "Find")  # exactly a command word, whatever its case
        assert await say(bot, "ann", "cancel") == "Card edit cancelled; nothing was changed."
        card = await say(bot, "ann", "card")
        assert "Name: Ann —" in card and "Title: (not set)" in card
        # 帮助 in Chinese, too.
        await say(bot, "li", "编辑名片")
        assert (await say(bot, "li", "帮助")).startswith("你正在编辑名片的“姓名”。")


# --- 3. Privacy rules that hold everywhere ------------------------------------------------

async def test_contact_can_never_be_seen_by_the_network(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        refused = await say(bot, "ann", "privacy contact network")
        assert refused.startswith("Your contact details are seen only by your own connections, or by nobody")
        assert "Contact: connections only" in await say(bot, "ann", "privacy")
        assert (await say(bot, "li", "隐私 联系方式 人脉圈")).startswith("你的联系方式只能让你的好友看到")
        assert await say(bot, "li", "隐私 联系方式 隐藏") == "联系方式现在的可见范围：隐藏（仅用于匹配）。"


async def test_export_shows_connections_only_as_i_may_see_them(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await triangle(bot)
        await say(bot, "bob", "set title Notary")
        await say(bot, "bob", "privacy name hidden")
        await say(bot, "bob", "privacy title hidden")
        data = await export(bot, "carol")
        cards = {c["number"]: c["card"] for c in data["connections"]}
        assert cards[1] == {"name": "Alice", "contact": "alice@mail"}
        assert cards[2] == {"contact": "bob@mail"}  # no hidden name, no hidden title
        assert "Bob" not in json.dumps(data) and "Notary" not in json.dumps(data)


async def test_stealth_members_are_never_named_in_digests_beyond_their_contacts(db_url: str) -> None:
    clock = FixedClock(datetime(2026, 2, 26, 9, 0, tzinfo=UTC))  # Thursday before ISO week 10
    async with running_bot(make_config(db_url), clock=clock) as bot:
        for who in ("ann", "cat", "sam", "pat"):
            await member(bot, who)
        await connect(bot, "ann", "cat")
        await say(bot, "sam", "stealth on")
        await connect(bot, "cat", "sam")
        await connect(bot, "cat", "pat")
        await run(bot, "digests", datetime(2026, 3, 2, 1, 7, tzinfo=UTC))  # Monday 09:07 in Shanghai
        [digest] = [m for m in await queued(bot, "ann") if "weekly digest" in m]
        assert "Cat connected with Pat" in digest
        assert "Sam" not in digest and "Cat made a new connection" in digest
        # Pat is Sam's 2nd degree too; Sam's own contact Cat is the only one to know him.
        assert "Sam" not in "".join(m for m in await queued(bot, "pat") if "weekly digest" in m)


async def test_intro_rechecks_the_target_when_it_is_asked_for(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await triangle(bot)
        await say(bot, "bob", "set title Notary")
        assert "1. Bob" in await say(bot, "alice", "find notary")
        await say(bot, "bob", "stealth on")  # a change of mind after the search
        gone = await say(bot, "alice", "intro 1")
        assert gone == "Bob can no longer be reached through your network. Search again with find …."
        assert not [m for m in await queued(bot, "carol") if "asks you for an introduction" in m]
        await say(bot, "bob", "stealth off")
        assert "1. Bob" in await say(bot, "alice", "find notary")
        await say(bot, "bob", "pause 3")
        assert "not taking introduction requests" in await say(bot, "alice", "intro 1")


async def test_the_connector_shown_is_the_one_asked(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        for who in ("alice", "bob", "amy", "zed"):
            await member(bot, who)
        # The search's best path runs through Amy (Alice knows her well); Zed rates both
        # higher, which alone used to decide who was asked.
        await connect(bot, "alice", "amy", a_to_b=3)
        await connect(bot, "amy", "bob", a_to_b=2)
        await connect(bot, "zed", "alice", a_to_b=3)
        await connect(bot, "zed", "bob", a_to_b=3)
        await say(bot, "bob", "set title Notary")
        found = await say(bot, "alice", "find notary")
        assert "via Amy" in found
        await say(bot, "alice", "intro 1")
        assert [m for m in await queued(bot, "amy") if "asks you for an introduction to Bob" in m]
        assert not [m for m in await queued(bot, "zed") if "asks you for an introduction" in m]


async def test_a_decline_is_respected_by_nudges_and_brokers(db_url: str) -> None:
    clock = FixedClock(T0)
    async with running_bot(make_config(db_url), clock=clock) as bot:
        await triangle(bot)
        await say(bot, "bob", "set offers tax law")
        assert "1. Bob" in await say(bot, "alice", "find tax")
        await say(bot, "alice", "intro 1")
        await say(bot, "carol", f"accept {step_id((await queued(bot, 'carol'))[-1])}")
        await say(bot, "bob", f"decline {step_id((await queued(bot, 'bob'))[-1])}")
        # Alice's ask matches Bob, at her 2nd degree through Carol: no nudge for the pair.
        await say(bot, "alice", "ask tax law advice")
        await run(bot, "referral-nudges")
        assert not [m for m in await queued(bot, "carol") if "is looking for" in m]
        # Nor may Carol propose them herself; she is not told who declined what.
        refused = await say(bot, "carol", "introduce 1 2")
        assert refused == "Alice and Bob cannot be introduced to each other right now. Please try again in a few weeks."
        # After the cool-down (the ask has expired with it), they may be proposed again.
        clock.advance(days=30, minutes=1)
        await say(bot, "alice", "ask tax law advice again")
        await run(bot, "referral-nudges")
        assert [m for m in await queued(bot, "carol") if "is looking for" in m]


async def test_a_nudge_started_introduction_shows_the_ask_as_the_requesters(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await triangle(bot)
        await say(bot, "bob", "set offers tax law")
        await say(bot, "alice", "ask tax law for my startup")
        await run(bot, "referral-nudges")
        [nudge] = [m for m in await queued(bot, "carol") if "is looking for" in m]
        number = re.search(r"nudge (\d+) yes", nudge)
        assert number
        await say(bot, "carol", f"nudge {number.group(1)} yes")
        to_bob = (await queued(bot, "bob"))[-1]
        assert "Alice's ask: “tax law for my startup”" in to_bob and "Note from Carol" not in to_bob
        to_alice = (await queued(bot, "alice"))[-1]
        assert "Your ask: “tax law for my startup”" in to_alice and "Note from Carol" not in to_alice


async def test_erasure_takes_the_member_out_of_every_message(db_url: str) -> None:
    clock = FixedClock(T0)
    async with running_bot(make_config(db_url), clock=clock) as bot:
        await triangle(bot)  # Carol was told "Bob used your invite" and asked how well she knows him
        await say(bot, "bob", "set offers tax law")
        await say(bot, "alice", "find tax")
        await say(bot, "alice", "intro 1 about taxes")
        # Half of what was queued so far has gone out; the rest still waits.
        with bot.services.db.session() as s:
            s.execute(sa.update(OutboxMessage).where(OutboxMessage.id % 2 == 1)
                      .values(status="sent", sent_at=clock.now()))
        await say(bot, "carol", "ask tax law for my firm")
        await run(bot, "referral-nudges")
        with bot.services.db.session() as s:
            sent = s.execute(sa.select(OutboxMessage.payload).where(OutboxMessage.status == "sent")).scalars()
            assert any("Bob" in p for p in sent)
        assert "Bob" in await say(bot, "carol", "contacts")
        await say(bot, "bob", "delete me")
        await say(bot, "bob", "delete me confirm")
        assert not [t for t in outbox_texts(bot) if "Bob" in t or "bob@mail" in t]
        # Nor does a stored reply (Carol's contacts) still name him.
        from tests.test_rights import traces

        assert await traces(bot.services.db, ["Bob", "bob@mail"]) == []
        # Carol's own messages about others are still there.
        assert [t for t in outbox_texts(bot) if "Alice" in t]


async def test_sent_texts_are_dropped_after_the_retention_period(db_url: str) -> None:
    clock = FixedClock(T0)
    async with running_bot(make_config(db_url), clock=clock) as bot:
        await triangle(bot)
        with bot.services.db.session() as s:
            s.execute(sa.update(OutboxMessage).values(status="sent", sent_at=clock.now()))
        assert any("Alice" in t for t in outbox_texts(bot))
        assert "dropped the texts of 0 messages" in await run(bot, "prune-outbox", T0 + timedelta(days=6))
        summary = await run(bot, "prune-outbox", T0 + timedelta(days=7, minutes=1))
        assert re.search(r"dropped the texts of [1-9]\d* messages sent more than 7 days ago", summary)
        assert not [t for t in outbox_texts(bot) if "Alice" in t or "Carol" in t or "Bob" in t]


# --- 4. What a member reads means what it says --------------------------------------------

async def test_contact_numbers_keep_their_meaning(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        for who in ("me", "ann", "bob", "cat"):
            await member(bot, who)
        for other in ("ann", "bob", "cat"):
            await connect(bot, "me", other)
        assert "1. Ann" in await say(bot, "me", "contacts")
        await say(bot, "ann", "delete me")
        await say(bot, "ann", "delete me confirm")
        listed = await say(bot, "me", "contacts")
        assert "2. Bob" in listed and "3. Cat" in listed and "1." not in listed
        # An old "strength 2 3" still rates Bob, not whoever moved up.
        assert await say(bot, "me", "strength 2 3") == "Noted: Bob, close friend or family."
        assert (await say(bot, "me", "strength 1 3")).startswith("There is no contact number 1")
        await member(bot, "dan")
        await connect(bot, "me", "dan")
        assert "4. Dan" in await say(bot, "me", "contacts")  # 1 is never handed out again


async def test_ids_are_never_reused_after_an_erasure(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await triangle(bot)
        await say(bot, "bob", "set title Notary")
        await say(bot, "alice", "find notary")
        await say(bot, "alice", "intro 1")
        old_step = step_id((await queued(bot, "carol"))[-1])
        old_ask = int(re.search(r"ask (\d+)", await say(bot, "alice", "ask a notary"))[1])  # type: ignore[index]
        await say(bot, "alice", "delete me")
        await say(bot, "alice", "delete me confirm")
        # The erased member's step was the newest; the next one gets a new id.
        await member(bot, "dora")
        await connect(bot, "carol", "dora")
        await say(bot, "dora", "find notary")
        await say(bot, "dora", "intro 1")
        new_step = step_id((await queued(bot, "carol"))[-1])
        assert new_step > old_step
        assert (await say(bot, "carol", f"accept {old_step}")).startswith(f"There is no request {old_step}")
        new_ask = int(re.search(r"ask (\d+)", await say(bot, "dora", "ask a notary"))[1])  # type: ignore[index]
        assert new_ask > old_ask
        with bot.services.db.session() as s:
            assert s.execute(sa.select(sa.func.count()).select_from(IntroStep)
                             .where(IntroStep.id == old_step)).scalar_one() == 0
            assert s.execute(sa.select(sa.func.count()).select_from(Ask)
                             .where(Ask.id == old_ask)).scalar_one() == 0
            assert s.execute(sa.select(sa.func.count()).select_from(Nudge)).scalar_one() == 0


async def test_odd_numbers_get_the_usage_or_no_such_item(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await triangle(bot)
        for typed in ("accept 99999999999999999999999", "decline 𐩀", "accept ᧚", "intro ᧚",
                      "intro 99999999999999999999999", "introduce 1 𐩀", "strength 𐩀 2",
                      "strength 1 ²", "pause ᧚", "pause 99999999999999999999999", "close 𐩀",
                      "close 99999999999999999999999", "nudge ᧚ yes", "met 𐩀 yes",
                      "met 99999999999999999999999 yes"):
            reply = await say(bot, "alice", typed)
            assert not reply.startswith(APOLOGY), (typed, reply)
            assert reply.startswith(("Usage:", "There is no", "You have no")), (typed, reply)
        # Full-width digits are digits.
        assert (await say(bot, "alice", "close ９")) == "You have no ask 9. Send asks to see your open asks."
        assert (await say(bot, "li", "接受 ９９９")).startswith("没有编号为 999 的待你处理的请求。")


async def test_find_refuses_a_query_over_its_limit(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        assert await say(bot, "ann", "find " + "lawyer " * 30) == \
            "A search can be at most 100 characters; yours has 209. Try a few words, e.g. find lawyer Shanghai."
        assert (await say(bot, "li", "找 " + "律师" * 60)).startswith("搜索内容最多 100 个字符，你发送了 120 个。")


async def test_invites_work_across_languages(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await say(bot, "zhang", "设置 姓名 张伟")
        invite = await say(bot, "zhang", "邀请")
        code = re.search(r"加入 ([A-Z2-9]+)", invite)
        assert code and f"\n加入 {code[1]}\njoin {code[1]}" in invite
        english = await say(bot, "ann", "lang en")
        assert english and f"join {code[1]}\n加入 {code[1]}" not in english
        # A newcomer pastes the English line (and the Chinese one after it): connected, and the
        # pasted words do not make them an English speaker.
        joined = await say(bot, "newbie", f"join {code[1]}\n加入 {code[1]}")
        assert joined.startswith("你已和张伟建立联系。")
        assert "帮助" in await say(bot, "newbie", "嗯")


async def test_the_inviter_learns_who_joined_once_they_have_a_name(db_url: str) -> None:
    clock = FixedClock(T0)
    async with running_bot(make_config(db_url), clock=clock) as bot:
        await say(bot, "ann", "set name Ann")
        code = re.search(r"join ([A-Z2-9]+)", await say(bot, "ann", "invite"))
        assert code
        await say(bot, "x", "lang en")
        await say(bot, "x", f"join {code[1]}")
        seen: dict[str, int] = {}
        [told] = await new_messages(bot, "ann", seen)
        assert told.startswith("a member without a name yet used your invite")
        await say(bot, "x", "set title Notary")
        assert await new_messages(bot, "ann", seen) == []
        await say(bot, "x", "set name Xia Lin")
        [named] = await new_messages(bot, "ann", seen)
        assert named == ("The person who joined with your invite on 2026-03-02 has set their name: "
                         "Xia Lin (contact 1 in your contacts).")
        await say(bot, "x", "set name Xia L.")
        assert await new_messages(bot, "ann", seen) == []  # told once


async def test_time_zone_is_set_shown_and_used_by_digests(db_url: str) -> None:
    clock = FixedClock(datetime(2026, 2, 26, 9, 0, tzinfo=UTC))
    async with running_bot(make_config(db_url), clock=clock) as bot:
        for who in ("ann", "dan", "bob", "cat"):
            await member(bot, who)
        await connect(bot, "ann", "bob")
        await connect(bot, "dan", "bob")
        assert (await say(bot, "ann", "timezone")).startswith("Your time zone is Asia/Shanghai (UTC+08:00")
        assert await say(bot, "ann", "timezone europe/berlin") == (
            "Done: your time zone is Europe/Berlin (UTC+01:00, it is 10:00 there now). "
            "Your digest comes at 09:00 your time.")
        assert "Europe/Berlin" in await say(bot, "ann", "timezone")
        assert (await say(bot, "ann", "timezone Mars/Base")).startswith("I do not know the time zone “Mars/Base”.")
        assert "Etc/GMT-8 (UTC+08:00" in await say(bot, "dan", "timezone Etc/GMT-8")
        assert (await say(bot, "li", "时区 America/New_York")).startswith("好的，你的时区已设为 America/New_York（UTC-05:00")
        await connect(bot, "bob", "cat")  # news for both Ann and Dan
        # Monday 09:07 in Shanghai (and in Etc/GMT-8) is 02:07 in Berlin: Dan's digest, not Ann's.
        await run(bot, "digests", datetime(2026, 3, 2, 1, 7, tzinfo=UTC))
        assert [m for m in await queued(bot, "dan") if "weekly digest" in m]
        assert not [m for m in await queued(bot, "ann") if "weekly digest" in m]
        await run(bot, "digests", datetime(2026, 3, 2, 8, 7, tzinfo=UTC))  # 09:07 in Berlin
        assert [m for m in await queued(bot, "ann") if "weekly digest" in m]

