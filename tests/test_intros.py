"""Double-opt-in introductions through the webhook: requests, chains, broker introductions,
decisions, limits and expiry, on both databases and in both languages."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from scheduler.clock import FixedClock
from scheduler.jobs import JOBS
from storage import search
from storage.models import Connection, Intro, Member
from tests.botkit import RunningBot, make_config, queued, running_bot, say

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def member(bot: RunningBot, name: str, *, zh: bool = False) -> None:
    """A member with a name and a contact (kept for connections by default)."""
    if zh:
        await say(bot, name, f"设置 姓名 {name.title()}")
        await say(bot, name, f"设置 联系方式 {name}@wx")
    else:
        await say(bot, name, f"set name {name.title()}")
        await say(bot, name, f"set contact {name}@mail")


async def connect(bot: RunningBot, a: str, b: str, *, a_to_b: int | None = None, b_to_a: int | None = None) -> None:
    """Connect a and b through an invite, with optional tie strengths."""
    reply = await say(bot, a, "invite")
    code = re.search(r"(?:join|加入) ([A-Z2-9]+)$", reply, re.MULTILINE)
    assert code, reply
    await say(bot, b, f"join {code.group(1)}")
    for me, other, level in ((a, b, a_to_b), (b, a, b_to_a)):
        if level:
            contacts = await say(bot, me, "contacts")
            n = re.search(rf"(\d+)\. {other.title()}", contacts)
            assert n, contacts
            await say(bot, me, f"strength {n.group(1)} {level}")


async def ids(bot: RunningBot, *openids: str) -> list[int]:
    with bot.services.db.session() as s:
        rows = dict(s.execute(sa.select(Member.openid, Member.id).where(Member.openid.in_(openids))).all())
    return [rows[o] for o in openids]


async def searched(bot: RunningBot, who: str, *paths: list[str]) -> None:
    """Store `who`'s last search: result N+1 is the last member of paths[N], reached by that path."""
    names = [who, *sorted({o for p in paths for o in p})]
    by = dict(zip(names, await ids(bot, *names)))
    hits = [search.SearchHit(n=i + 1, target_id=by[p[-1]], degree=len(p), path=[by[who]] + [by[o] for o in p])
            for i, p in enumerate(paths)]
    with bot.services.db.session() as s:
        search.store_results(s, member_id=by[who], hits=hits, now=bot.services.clock.now())


async def connected(bot: RunningBot, a: str, b: str) -> bool:
    x, y = await ids(bot, a, b)
    with bot.services.db.session() as s:
        return s.execute(sa.select(Connection.id).where(Connection.member_id == x,
                                                        Connection.contact_id == y)).first() is not None


def step_id(message: str) -> int:
    found = re.search(r"(?:accept|接受) (\d+)", message)
    assert found, message
    return int(found.group(1))


async def new_messages(bot: RunningBot, openid: str, seen: dict[str, int]) -> list[str]:
    """What the member was sent since the last call."""
    everything = await queued(bot, openid)
    fresh = everything[seen.get(openid, 0):]
    seen[openid] = len(everything)
    return fresh


async def triangle(bot: RunningBot, *, zh: bool = False) -> None:
    """alice — carol — bob: carol is the mutual contact."""
    for who in ("alice", "bob", "carol"):
        await member(bot, who, zh=zh)
    await connect(bot, "carol", "alice", a_to_b=3, b_to_a=2)
    await connect(bot, "carol", "bob", a_to_b=2)


async def test_request_forward_with_vouch_accept_and_exchange(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await triangle(bot)
        await say(bot, "alice", "set title Founder")
        seen: dict[str, int] = {}
        for who in ("alice", "bob", "carol"):
            await new_messages(bot, who, seen)
        await searched(bot, "alice", ["carol", "bob"])
        sent = await say(bot, "alice", "intro 1 Hoping to ask about tax law")
        assert sent.startswith("Your request to meet Bob is on its way through a mutual contact.")
        assert "Carol" not in sent
        [ask_c] = await new_messages(bot, "carol", seen)
        assert ask_c.startswith("Alice asks you for an introduction to Bob, one of your contacts.")
        assert "Title: Founder" in ask_c and "Note from Alice: Hoping to ask about tax law" in ask_c
        sid = step_id(ask_c)
        assert f"Forward: accept {sid}" in ask_c and f"Decline: decline {sid}" in ask_c
        assert await say(bot, "carol", f"accept {sid} Great founder, I vouch for her") == \
            "Thank you: forwarded to Bob, with your vouch."
        [ask_b] = await new_messages(bot, "bob", seen)
        assert ask_b.startswith("Alice would like to meet you, introduced by Carol.")
        assert "Carol vouches: “Great founder, I vouch for her”" in ask_b
        assert "Hoping to ask about tax law" in ask_b and "Title: Founder" in ask_b
        assert "alice@mail" not in ask_b  # contact only after both said yes
        assert not await connected(bot, "alice", "bob")
        done = await say(bot, "bob", f"accept {step_id(ask_b)}")
        assert done.startswith("Done: you are now connected with Alice.") and "Contact: alice@mail" in done
        assert "How well do you know Alice?" in done and "strength 2 3" in done  # Alice is Bob's 2nd
        [made] = await new_messages(bot, "alice", seen)
        assert made.startswith("Good news: you and Bob both said yes.") and "Contact: bob@mail" in made
        assert "How well do you know Bob?" in made and "strength 2 1" in made
        assert await connected(bot, "alice", "bob") and await connected(bot, "bob", "alice")
        [thanks] = await new_messages(bot, "carol", seen)
        assert thanks == "Your introduction of Alice and Bob went through: they are now connected. Thank you!"
        assert "1. Carol" in await say(bot, "bob", "contacts")


async def test_request_flow_in_chinese(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await triangle(bot, zh=True)
        seen: dict[str, int] = {}
        for who in ("alice", "bob", "carol"):
            await new_messages(bot, who, seen)
        await searched(bot, "alice", ["carol", "bob"])
        assert (await say(bot, "alice", "引荐 1 想请教税务")).startswith("你认识Bob的请求已通过共同联系人发出。")
        [ask_c] = await new_messages(bot, "carol", seen)
        assert ask_c.startswith("Alice请你把他/她引荐给你的联系人Bob。") and "Alice的留言：想请教税务" in ask_c
        sid = step_id(ask_c)
        assert f"转介: 接受 {sid}" in ask_c and f"婉拒: 婉拒 {sid}" in ask_c
        assert await say(bot, "carol", f"接受 {sid} 我很了解她") == "谢谢，已附上你的推荐语转给Bob。"
        [ask_b] = await new_messages(bot, "bob", seen)
        assert ask_b.startswith("Alice希望认识你，由Carol引荐。") and "Carol推荐：“我很了解她”" in ask_b
        assert "alice@wx" not in ask_b
        done = await say(bot, "bob", f"接受 {step_id(ask_b)}")
        assert done.startswith("完成：你已和Alice成为联系人。") and "联系方式：alice@wx" in done
        [made] = await new_messages(bot, "alice", seen)
        assert made.startswith("好消息：") and "联系方式：bob@wx" in made
        assert (await new_messages(bot, "carol", seen))[0].startswith("你对Alice和Bob的引荐成功了")


async def test_decline_at_connector_or_target_reads_the_same_to_the_requester(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await triangle(bot)
        for who in ("dan", "erin"):
            await member(bot, who)
        await connect(bot, "erin", "alice")
        await connect(bot, "erin", "dan")
        seen: dict[str, int] = {}
        for who in ("alice", "bob", "carol", "dan", "erin"):
            await new_messages(bot, who, seen)
        await searched(bot, "alice", ["carol", "bob"], ["erin", "dan"])
        await say(bot, "alice", "intro 1")
        await say(bot, "alice", "intro 2")
        # Carol declines to pass on the request for Bob.
        [ask_c] = await new_messages(bot, "carol", seen)
        declined = await say(bot, "carol", f"decline {step_id(ask_c)}")
        assert declined.startswith("Declined. Nobody is told who declined")
        assert await new_messages(bot, "bob", seen) == []  # Bob never hears of it
        [by_connector] = await new_messages(bot, "alice", seen)
        # Erin forwards, Dan declines.
        [ask_e] = await new_messages(bot, "erin", seen)
        await say(bot, "erin", f"accept {step_id(ask_e)}")
        [ask_d] = await new_messages(bot, "dan", seen)
        await say(bot, "dan", f"decline {step_id(ask_d)}")
        [by_target] = await new_messages(bot, "alice", seen)
        assert by_connector.replace("Bob", "X") == by_target.replace("Dan", "X")
        assert by_connector.startswith("The introduction to Bob could not be made.")
        for name in ("Carol", "Erin", "Dan", "declin"):
            assert name not in by_connector and name not in by_target.replace("to Dan", "")
        assert (await new_messages(bot, "erin", seen)) == [
            "The introduction of Alice to Dan could not be made. Thank you for passing it on."]
        assert not await connected(bot, "alice", "bob") and not await connected(bot, "alice", "dan")


async def test_third_degree_request_passes_two_hops(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        for who in ("alice", "hana", "hugo", "bob"):
            await member(bot, who)
        await connect(bot, "alice", "hana")
        await connect(bot, "hana", "hugo")
        await connect(bot, "hugo", "bob")
        seen: dict[str, int] = {}
        for who in ("alice", "hana", "hugo", "bob"):
            await new_messages(bot, who, seen)
        await searched(bot, "alice", ["hana", "hugo", "bob"])
        await say(bot, "alice", "intro 1 About robotics")
        [ask1] = await new_messages(bot, "hana", seen)
        assert ask1.startswith("Alice asks for an introduction to Bob, a contact of your contact Hugo. Pass it on to Hugo?")
        assert await say(bot, "hana", f"accept {step_id(ask1)} Alice is brilliant") == \
            "Thank you: forwarded to Hugo, with your vouch."
        [ask2] = await new_messages(bot, "hugo", seen)
        assert ask2.startswith("Alice asks you for an introduction to Bob, one of your contacts. Forward it? (passed on by Hana)")
        assert "Hana vouches: “Alice is brilliant”" in ask2 and "alice@mail" not in ask2
        await say(bot, "hugo", f"accept {step_id(ask2)} Seconded")
        [ask3] = await new_messages(bot, "bob", seen)
        assert ask3.startswith("Alice would like to meet you, introduced by Hugo.")
        assert "vouches: “Alice is brilliant”" in ask3 and "Hugo vouches: “Seconded”" in ask3
        assert "alice@mail" not in ask3
        assert "Contact: alice@mail" in await say(bot, "bob", f"accept {step_id(ask3)}")
        assert "Contact: bob@mail" in (await new_messages(bot, "alice", seen))[0]
        for connector in ("hana", "hugo"):
            assert "went through" in (await new_messages(bot, connector, seen))[0]
        assert await connected(bot, "alice", "bob")


async def test_broker_introduction_both_accept(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await triangle(bot)
        seen: dict[str, int] = {}
        for who in ("alice", "bob", "carol"):
            await new_messages(bot, who, seen)
        assert "1. Alice" in await say(bot, "carol", "contacts")
        sent = await say(bot, "carol", "introduce 1 2 You both love chess")
        assert sent.startswith("I have asked Alice and Bob.")
        [ask_a] = await new_messages(bot, "alice", seen)
        [ask_b] = await new_messages(bot, "bob", seen)
        assert ask_a.startswith("Carol would like to introduce you to Bob.") and "Note from Carol: You both love chess" in ask_a
        assert "bob@mail" not in ask_a and "alice@mail" not in ask_b
        assert await say(bot, "alice", f"accept {step_id(ask_a)}") == \
            "Thank you. You will hear from me as soon as Bob has answered too."
        assert not await connected(bot, "alice", "bob")
        done = await say(bot, "bob", f"accept {step_id(ask_b)}")
        assert done.startswith("Done: you are now connected with Alice.") and "alice@mail" in done
        [made] = await new_messages(bot, "alice", seen)
        assert "Contact: bob@mail" in made
        assert (await new_messages(bot, "carol", seen)) == [
            "Your introduction of Alice and Bob went through: they are now connected. Thank you!"]
        assert await connected(bot, "alice", "bob")
        assert "already connected" in await say(bot, "carol", "introduce 1 2")


async def test_broker_introduction_one_declines_in_chinese(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await triangle(bot, zh=True)
        seen: dict[str, int] = {}
        for who in ("alice", "bob", "carol"):
            await new_messages(bot, who, seen)
        assert (await say(bot, "carol", "介绍 1 2 你们都爱下棋")).startswith("我已询问Alice和Bob。")
        assert "正在等待他们答复" in await say(bot, "carol", "介绍 2 1")
        [ask_a] = await new_messages(bot, "alice", seen)
        [ask_b] = await new_messages(bot, "bob", seen)
        assert ask_a.startswith("Carol想把你介绍给Bob。")
        await say(bot, "bob", f"接受 {step_id(ask_b)}")
        assert (await say(bot, "alice", f"婉拒 {step_id(ask_a)}")).startswith("已婉拒。")
        assert (await new_messages(bot, "bob", seen)) == [
            "这次引荐Alice未能促成。这很正常，不会有人被告知更多细节。谢谢你按规矩来。"]
        assert (await new_messages(bot, "carol", seen)) == ["你对Alice和Bob的介绍未能促成。谢谢你的好意。"]
        assert await say(bot, "bob", f"接受 {step_id(ask_b)}") == f"你已经接受了请求 {step_id(ask_b)}，没有任何变化。"
        assert not await connected(bot, "alice", "bob")


async def test_expiry_reminds_once_then_expires_idempotently(db_url: str) -> None:
    clock = FixedClock(T0)
    cfg = make_config(db_url)
    async with running_bot(cfg, clock=clock) as bot:
        await triangle(bot)
        seen: dict[str, int] = {}
        for who in ("alice", "bob", "carol"):
            await new_messages(bot, who, seen)
        await searched(bot, "alice", ["carol", "bob"])
        await say(bot, "alice", "intro 1")
        [ask_c] = await new_messages(bot, "carol", seen)
        sid = step_id(ask_c)
        job = JOBS["intro-expiry"].func
        deps = bot.services.scheduler.deps
        assert "sent 0 introduction reminders, expired 0" in await job(deps, T0 + timedelta(days=2))
        assert "sent 1 introduction reminders, expired 0" in await job(deps, T0 + timedelta(days=3, minutes=1))
        assert "sent 0 introduction reminders, expired 0" in await job(deps, T0 + timedelta(days=3, minutes=2))
        [reminder] = await new_messages(bot, "carol", seen)
        assert reminder.startswith(f"Reminder: request {sid} still waits for your decision.")
        assert f"accept {sid}" in reminder
        assert "expired 1" in await job(deps, T0 + timedelta(days=7, minutes=1))
        assert "sent 0 introduction reminders, expired 0" in await job(deps, T0 + timedelta(days=7, minutes=2))
        [lapsed] = await new_messages(bot, "alice", seen)
        assert lapsed == ("The introduction to Bob could not be made. That happens, and nobody is told more. "
                          "Thank you for asking in the right way.")
        assert await new_messages(bot, "carol", seen) == []  # carol never passed it on
        clock.set(T0 + timedelta(days=8))
        assert await say(bot, "carol", f"accept {sid}") == \
            f"Request {sid} has lapsed: it waited longer than its time. Nothing changed."
        assert "Nothing waits" in await say(bot, "carol", "requests")
        # Expired counts like declined for the cool-down (a different one would tell which it was).
        cooldown = await say(bot, "alice", "intro 1")
        assert cooldown.startswith("An introduction to Bob could not be made recently.")


async def test_decisions_are_idempotent_and_only_for_their_actor(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await triangle(bot)
        await member(bot, "mallory")
        seen: dict[str, int] = {}
        for who in ("alice", "bob", "carol"):
            await new_messages(bot, who, seen)
        await searched(bot, "alice", ["carol", "bob"])
        await say(bot, "alice", "intro 1")
        [ask_c] = await new_messages(bot, "carol", seen)
        sid = step_id(ask_c)
        # Someone else's step reads exactly like one that does not exist.
        theirs = await say(bot, "mallory", f"accept {sid}")
        assert theirs == f"There is no request {sid} waiting for you. Send requests to see what waits for you."
        assert await say(bot, "alice", f"decline {sid}") == theirs
        assert (await say(bot, "mallory", "accept 99999")) == theirs.replace(str(sid), "99999")
        assert "Usage: accept ID" in await say(bot, "carol", "accept")
        assert (await say(bot, "carol", f"accept {sid}")).startswith("Thank you: forwarded to Bob")
        assert await say(bot, "carol", f"accept {sid}") == f"You already accepted request {sid}. Nothing changed."
        assert await say(bot, "carol", f"decline {sid}") == f"You already accepted request {sid}. Nothing changed."
        [ask_b] = await new_messages(bot, "bob", seen)
        assert len(await new_messages(bot, "bob", seen)) == 0  # asked once
        bid = step_id(ask_b)
        assert (await say(bot, "bob", f"decline {bid}")).startswith("Declined.")
        assert await say(bot, "bob", f"accept {bid}") == f"You already declined request {bid}. Nothing changed."
        assert len(await new_messages(bot, "alice", seen)) == 1  # told once
        assert not await connected(bot, "alice", "bob")


async def test_concurrent_accepts_complete_once(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await triangle(bot)
        seen: dict[str, int] = {}
        for who in ("alice", "bob", "carol"):
            await new_messages(bot, who, seen)
        await say(bot, "carol", "introduce 1 2")
        [ask_a] = await new_messages(bot, "alice", seen)
        [ask_b] = await new_messages(bot, "bob", seen)
        answers = await asyncio.gather(say(bot, "alice", f"accept {step_id(ask_a)}"),
                                       say(bot, "bob", f"accept {step_id(ask_b)}"))
        assert sum(a.startswith("Done: you are now connected") for a in answers) == 1
        assert len(await new_messages(bot, "carol", seen)) == 1
        got = (await new_messages(bot, "alice", seen)) + (await new_messages(bot, "bob", seen))
        assert len(got) == 1 and got[0].startswith("Good news")
        with bot.services.db.session() as s:
            assert s.execute(sa.select(Intro.status)).scalars().all() == ["completed"]


async def test_requests_lists_what_waits_with_commands(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await triangle(bot)
        await member(bot, "dan")
        await connect(bot, "carol", "dan")
        assert await say(bot, "carol", "requests") == "Nothing waits for your decision."
        await searched(bot, "alice", ["carol", "bob"], ["carol", "dan"])
        await say(bot, "alice", "intro 1")
        await say(bot, "alice", "intro 2")
        listing = await say(bot, "carol", "requests")
        first, second = re.findall(r"^(\d+)\. ", listing, re.MULTILINE)
        assert listing.startswith("Waiting for your decision (2):")
        assert f"{first}. Alice asks for an introduction to Bob — accept {first} / decline {first}" in listing
        assert f"Accept {second}: accept {second}" in listing and f"Decline {first}: decline {first}" in listing
        await say(bot, "carol", f"accept {first}")
        await say(bot, "bob", "lang zh")
        bob_list = await say(bot, "bob", "待处理")
        assert bob_list.startswith("等待你决定的事项（1 项）：")
        assert "Alice希望认识你，由Carol引荐——接受" in bob_list
        assert "(1):" in await say(bot, "carol", "pending")


async def test_every_limit_says_why(db_url: str) -> None:
    clock = FixedClock(T0)
    async with running_bot(make_config(db_url), clock=clock) as bot:
        # A star: carol knows two requesters and six targets.
        everyone = ["r1", "r2"] + [f"t{i}" for i in range(1, 7)]
        await member(bot, "carol")
        for who in everyone:
            await member(bot, who)
            await connect(bot, "carol", who)
        await searched(bot, "r1", *[["carol", f"t{i}"] for i in range(1, 7)], ["carol"])
        await searched(bot, "r2", *[["carol", f"t{i}"] for i in range(1, 7)])
        assert "no result 9" in await say(bot, "r1", "intro 9")
        assert "Usage: intro N" in await say(bot, "r1", "intro")
        assert await say(bot, "r1", "intro 7") == "Carol is already one of your connections: just talk to them directly."
        assert "at most 200 characters; yours has 201" in await say(bot, "r1", "intro 1 " + "x" * 201)
        for i in (1, 2, 3):
            assert (await say(bot, "r1", f"intro {i}")).startswith(f"Your request to meet T{i} is on its way")
        assert "already have a request running for an introduction to T1" in await say(bot, "r1", "intro 1")
        assert await say(bot, "r1", "intro 4") == ("You already have 3 introduction requests running, the most "
                                                    "at a time. Send another when one has finished.")
        await say(bot, "t6", "pause 10")
        assert await say(bot, "r2", "intro 6") == "T6 is not taking introduction requests right now. Please try again later."
        await say(bot, "t6", "pause 0")
        assert "on its way" in await say(bot, "r2", "intro 4")
        assert "on its way" in await say(bot, "r2", "intro 5")
        busy = await say(bot, "r2", "intro 6")  # carol has had 5 this week
        assert busy.startswith("Your mutual contacts with T6 have already been asked for 5 introductions this week")
        clock.advance(days=7, minutes=1)
        await JOBS["intro-expiry"].func(bot.services.scheduler.deps, clock.now())
        # A week later carol may be asked again, unless she paused.
        await say(bot, "carol", "pause 3")
        assert "mutual contacts with T6 are not taking" in await say(bot, "r2", "intro 6")
        await say(bot, "carol", "pause 0")
        assert "on its way" in await say(bot, "r2", "intro 6")
        # The expired ones cannot be asked again for 30 days.
        refused = await say(bot, "r1", "intro 1")
        assert refused == ("An introduction to T1 could not be made recently. You can ask again after 30 days, "
                           "from 2026-04-08.")
        clock.advance(days=30)
        assert "on its way" in await say(bot, "r1", "intro 1")


async def test_limits_in_chinese_and_the_strongest_connector_is_chosen(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        for who in ("alice", "bob", "weak", "strong", "other"):
            await member(bot, who, zh=True)
        await connect(bot, "weak", "alice", a_to_b=1)
        await connect(bot, "weak", "bob", a_to_b=3)
        await connect(bot, "strong", "alice", a_to_b=2)
        await connect(bot, "strong", "bob", a_to_b=2)
        await connect(bot, "other", "alice", a_to_b=3)
        await connect(bot, "other", "bob", a_to_b=3)
        # The search showed "via Other", who has since paused: the strongest of the others is asked,
        # and the requester is told who is asked instead.
        await searched(bot, "alice", ["other", "bob"])
        await say(bot, "other", "暂停 3")
        assert (await say(bot, "alice", "引荐 1")).startswith(
            "Other目前无法转介这条请求，所以你认识Bob的请求改由你们的另一位共同联系人Strong转介。")
        asks = {who: [m for m in await queued(bot, who) if "转介: 接受" in m] for who in ("strong", "weak")}
        assert len(asks["strong"]) == 1 and asks["weak"] == []  # min(2, 2) beats min(1, 3)
        assert (await say(bot, "alice", "引荐 1")).startswith("你请求引荐Bob的请求还在进行中")
        assert (await say(bot, "alice", "引荐 5")).startswith("你上一次的搜索中没有第 5 位。")


async def test_deleting_a_member_removes_their_introductions(db_url: str) -> None:
    from tests.test_rights import references, traces

    async with running_bot(make_config(db_url)) as bot:
        await triangle(bot)
        await searched(bot, "alice", ["carol", "bob"])
        await say(bot, "alice", "intro 1 Secret plan")
        assert "(1):" in await say(bot, "carol", "requests")
        data_mid = (await ids(bot, "alice"))[0]
        await say(bot, "alice", "delete me")
        await say(bot, "alice", "delete me confirm")
        assert await say(bot, "carol", "requests") == "Nothing waits for your decision."
        assert await references(bot.services.db, data_mid) == []
        assert await traces(bot.services.db, ["alice@mail", "Secret plan"]) == []


async def test_export_lists_my_introductions(db_url: str) -> None:
    from storage import exports

    async with running_bot(make_config(db_url)) as bot:
        await triangle(bot)
        await searched(bot, "alice", ["carol", "bob"])
        await say(bot, "alice", "intro 1 Hello there")
        ask = (await queued(bot, "carol"))[-1]
        await say(bot, "carol", f"accept {step_id(ask)} Solid")
        alice, carol = await ids(bot, "alice", "carol")
        with bot.services.db.session() as s:
            mine = exports.collect(s, member_id=alice)["introductions"]
            hers = exports.collect(s, member_id=carol)["introductions"]
        assert [(i["role"], i["status"], i["note"]) for i in mine] == [("requester", "pending", "Hello there")]
        assert hers[0]["role"] == "connector" and hers[0]["note"] is None
        assert [(d["decision"], d["vouch"]) for d in hers[0]["decisions"]] == [("accepted", "Solid")]


async def test_from_find_to_introduction_through_the_webhook(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await triangle(bot, zh=True)
        await say(bot, "bob", "设置 职位 律师")
        found = await say(bot, "alice", "找 律师")
        assert "1. Bob" in found and "bob@wx" not in found
        assert (await say(bot, "alice", "引荐 1 想请教合同问题")).startswith("你认识Bob的请求已通过共同联系人发出。")
        ask_c = (await queued(bot, "carol"))[-1]
        await say(bot, "carol", f"接受 {step_id(ask_c)}")
        ask_b = (await queued(bot, "bob"))[-1]
        assert "想请教合同问题" in ask_b and "alice@wx" not in ask_b
        assert "联系方式：alice@wx" in await say(bot, "bob", f"接受 {step_id(ask_b)}")
        assert await connected(bot, "alice", "bob")
