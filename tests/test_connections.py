"""Invites, joining (by text, QR subscribe and SCAN), contacts and tie strength, via the webhook."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from scheduler.clock import FixedClock
from storage.models import Connection, Invite, Member
from tests.botkit import RunningBot, event, make_config, queued, running_bot, say
from tests.fakes.fake_api import FakeWeChatAPI

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
CODE = re.compile(r"\b([A-Z2-9]{6,10})\b")


async def invite_code(bot: RunningBot, openid: str, command: str = "invite") -> str:
    reply = await say(bot, openid, command)
    match = re.search(r"(?:join|加入) ([A-Z2-9]{6,10})$", reply, re.M)
    assert match, reply
    return match.group(1)


async def connections(bot: RunningBot) -> set[tuple[str, str, int | None]]:
    a, b = sa.orm.aliased(Member), sa.orm.aliased(Member)
    with bot.services.db.session() as s:
        rows = (s.execute(
            sa.select(a.openid, b.openid, Connection.strength)
            .join(a, a.id == Connection.member_id).join(b, b.id == Connection.contact_id)
        )).all()
    return {(x, y, z) for x, y, z in rows}


async def invite_uses(bot: RunningBot, code: str) -> int:
    with bot.services.db.session() as s:
        return (s.execute(sa.select(Invite.uses).where(Invite.code == code))).scalar_one()


async def test_invite_and_join_in_english(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await say(bot, "alice", "set name Alice")
        reply = await say(bot, "alice", "invite")
        code = await invite_code(bot, "alice")
        assert "valid 7 days, for one person" in reply and CODE.search(reply)
        assert 6 <= len(code) <= 10 and set(code) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ23456789")
        await say(bot, "bob", "set name Bob")
        joined = await say(bot, "bob", f"join {code.lower()}")
        assert joined.startswith("You are now connected with Alice.")
        assert "How well do you know Alice?" in joined and "strength 1 2" in joined
        assert await connections(bot) == {("alice", "bob", None), ("bob", "alice", None)}
        told = await queued(bot, "alice")
        assert len(told) == 1 and told[0].startswith("Bob used your invite: you are now connected.")
        assert "strength 1 3" in told[0]
        # Each side answers for its own direction; a tapped choice arrives as its text.
        assert await say(bot, "bob", "strength 1 2") == "Noted: Alice, worked or studied together."
        assert await say(bot, "alice", "strength 1 3") == "Noted: Bob, close friend or family."
        assert await connections(bot) == {("alice", "bob", 3), ("bob", "alice", 2)}
        assert await say(bot, "alice", "contacts") == "Your connections (1):\n1. Bob — close friend or family"


async def test_invite_and_join_in_chinese(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await say(bot, "zhang", "设置 姓名 张伟")
        reply = await say(bot, "zhang", "邀请")
        assert "7 天内有效，限一人使用" in reply
        code = await invite_code(bot, "zhang", "邀请")
        await say(bot, "li", "设置 姓名 李娜")
        joined = await say(bot, "li", f"加入 {code}")
        assert joined.startswith("你已和张伟建立联系。") and "熟悉度 1 2" in joined
        assert (await queued(bot, "zhang"))[0].startswith("李娜使用了你的邀请")
        assert await say(bot, "li", "熟悉度 1 3") == "已记录：张伟，好友或家人。"
        assert await say(bot, "li", "人脉") == "我的人脉（1 位）：\n1. 张伟——好友或家人"
        assert (await say(bot, "zhang", "人脉")).endswith("1. 李娜——尚未标注（熟悉度 1 1|2|3）")


async def test_every_invite_failure_changes_nothing(db_url: str) -> None:
    clock = FixedClock(T0)
    async with running_bot(make_config(db_url), clock=clock) as bot:
        await say(bot, "alice", "set name Alice")
        code = await invite_code(bot, "alice")
        for who in ("bob", "carol", "dave", "erin"):  # a pasted code does not decide the language
            await say(bot, who, "lang en")
        # Unknown and own codes.
        assert "does not exist" in await say(bot, "bob", "join ZZZZZZZZ")
        assert "your own invite code" in await say(bot, "alice", f"join {code}")
        assert "Usage: join CODE" in await say(bot, "bob", "join")
        # Used once, then refused for the next person.
        assert (await say(bot, "bob", f"join {code}")).startswith("You are now connected")
        assert "already been used" in await say(bot, "carol", f"join {code}")
        # A code for someone already connected: refused, and the code stays unused.
        second = await invite_code(bot, "alice")
        assert "already connected with Alice" in await say(bot, "bob", f"join {second}")
        assert await invite_uses(bot, second) == 0
        # Expired after 7 days.
        third = await invite_code(bot, "alice")
        clock.advance(days=7, seconds=1)
        assert "has expired" in await say(bot, "dave", f"join {third}")
        assert await invite_uses(bot, third) == 0
        # An inviter who left: their codes no longer work.
        fourth = await invite_code(bot, "alice")
        await event(bot, "alice", "unsubscribe")
        assert "does not exist" in await say(bot, "erin", f"join {fourth}")
        assert await connections(bot) == {("alice", "bob", None), ("bob", "alice", None)}


async def test_invite_lifetime_and_uses_are_configurable(db_url: str) -> None:
    from dataclasses import replace

    cfg = make_config(db_url)
    cfg = replace(cfg, invites=replace(cfg.invites, ttl_days=2, max_uses=3))
    clock = FixedClock(T0)
    async with running_bot(cfg, clock=clock) as bot:
        assert "valid 2 days, for up to 3 people" in await say(bot, "alice", "invite")
        code = await invite_code(bot, "alice")
        for who in ("b1", "b2", "b3", "b4", "b5"):  # a pasted code does not decide the language
            await say(bot, who, "lang en")
        for who in ("b1", "b2", "b3"):
            assert (await say(bot, who, f"join {code}")).startswith("You are now connected")
        assert "already been used" in await say(bot, "b4", f"join {code}")
        late = await invite_code(bot, "alice")
        clock.advance(days=2)
        assert "has expired" in await say(bot, "b5", f"join {late}")


async def test_qr_invite_by_subscribe_and_by_scan(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await say(bot, "alice", "set name Alice")
        first, second = await invite_code(bot, "alice"), await invite_code(bot, "alice")
        # A new follower scans: subscribe with qrscene_CODE.
        welcome = await event(bot, "newbie", "subscribe", key=f"qrscene_{first}")
        assert welcome.startswith("欢迎来到引荐") and "你已和Alice建立联系。" in welcome
        # An existing follower scans: SCAN with the bare scene.
        await say(bot, "follower", "help")
        scanned = await event(bot, "follower", "SCAN", key=second)
        assert scanned.startswith("You are now connected with Alice.")
        assert {(a, b) for a, b, _ in await connections(bot)} == {
            ("alice", "newbie"), ("newbie", "alice"), ("alice", "follower"), ("follower", "alice")}
        # Scanning a used code again changes nothing and says why.
        assert await event(bot, "third", "SCAN", key=first) == "这个邀请码已经被使用过了，请让对方重新发一个。"
        assert len(await connections(bot)) == 4


@pytest.mark.parametrize("bad", ["strength", "strength 1", "strength 1 4", "strength x 2", "strength 9 2"])
async def test_strength_mistakes_are_explained(db_url: str, bad: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        code = await invite_code(bot, "alice")
        await say(bot, "bob", f"join {code}")
        reply = await say(bot, "alice", bad)
        assert "Usage: strength" in reply or "no contact number 9" in reply
        assert await connections(bot) == {("alice", "bob", None), ("bob", "alice", None)}


async def test_contacts_empty(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        assert "No connections yet" in await say(bot, "loner", "contacts")
        assert "还没有联系人" in await say(bot, "loner2", "人脉")


def test_codes_are_random(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from storage.invites import new_code

    codes = {new_code() for _ in range(2000)}
    assert len(codes) == 2000 and all(CODE.fullmatch(c) for c in codes)



async def test_invite_with_the_api_sends_a_qr_code_that_connects(db_url: str, fake_api: FakeWeChatAPI) -> None:
    cfg = make_config(db_url, app_id=fake_api.app_id, app_secret=fake_api.app_secret,
                      api_base_url=fake_api.base_url, encoding_aes_key="")
    async with running_bot(cfg, mode="plain") as bot:
        await say(bot, "alice", "set name Alice")
        reply = await say(bot, "alice", "invite")
        assert "A QR code image follows in a moment." in reply
        code = await invite_code(bot, "alice")
        assert await bot.services.sender.send_due() == 2
        created = fake_api.calls_to("/cgi-bin/qrcode/create")
        assert [c.body["action_info"]["scene"]["scene_str"] for c in created] == [  # type: ignore[index]
            re.search(r"join ([A-Z2-9]+)", reply).group(1), code]  # type: ignore[union-attr]
        assert all(c.body["action_name"] == "QR_STR_SCENE" and c.body["expire_seconds"] == 7 * 86400  # type: ignore[index]
                   for c in created)
        sent = fake_api.delivered_to("alice")
        assert len(sent) == 2 and "https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket=" in sent[0]["text"]["content"]
        assert sent[0]["text"]["content"].startswith("Your invite QR code (valid 7 days).")
        # Scanning it: a new follower arrives with the code as the scene.
        welcome = await event(bot, "scanner", "subscribe", key=f"qrscene_{code}")
        assert "你已和Alice建立联系。" in welcome
