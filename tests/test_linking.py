"""link / 关联: one member across the Official Account and WeCom.

The WeCom webhook is not wired into `serve` yet (issue 9), so the WeCom side here is pushed
through the dispatcher, the door `yinjian chat` uses too; the Official Account side goes
through the real webhook where it can.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa

from handlers.context import Settings
from handlers.events import EventKind, InboundEvent
from handlers.replies import as_plain_text
from scheduler.clock import FixedClock
from bot.dispatcher import Dispatcher
from storage.db import Database
from storage.models import Connection, Member
from tests.botkit import make_config, running_bot, say

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def test_link_says_why_it_cannot_work_without_a_wecom_app(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        assert (await say(bot, "ann", "link")).startswith("关联用于连接你的公众号账号和企业微信账号，但这个社群还没有开通")
        await say(bot, "bob", "lang en")
        assert "this community has no WeCom app yet" in await say(bot, "bob", "link ABCD2345")


class Member2:
    """One person's identity on one platform, talking to the dispatcher."""

    def __init__(self, dispatcher: Dispatcher, clock: FixedClock, platform: str, openid: str) -> None:
        self.d, self.clock, self.platform, self.openid = dispatcher, clock, platform, openid

    async def say(self, text: str) -> str:
        event = InboundEvent(kind=EventKind.TEXT, platform=self.platform, member_id=self.openid,
                             dedupe_key=f"{self.platform}:msg:{self.openid}:{uuid.uuid4().hex}",
                             created_at=self.clock.now(), text=text, raw_type="text")
        self.clock.advance(seconds=1)
        return as_plain_text(await self.d.process(event))


async def test_linking_joins_two_members_into_one(db: Database) -> None:
    clock = FixedClock(T0)
    d = Dispatcher(db=db, clock=clock, settings=Settings(linking=True))
    oa, wecom = Member2(d, clock, "oa", "o_li"), Member2(d, clock, "wecom", "LiNa")
    friend, colleague = Member2(d, clock, "oa", "o_friend"), Member2(d, clock, "wecom", "ZhangWei")
    # The Official Account member came first: name, city and a friend.
    await oa.say("设置 姓名 李娜")
    await oa.say("设置 城市 上海")
    await friend.say("设置 姓名 王芳")
    code = re.search(r"加入 ([A-Z2-9]+)", await friend.say("邀请"))
    assert code
    await oa.say(f"加入 {code[1]}")
    # The WeCom member later: another name, a title, and a colleague.
    await wecom.say("设置 姓名 Lina Li")
    await wecom.say("设置 职位 律师")
    await colleague.say("设置 姓名 张伟")
    code = re.search(r"加入 ([A-Z2-9]+)", await colleague.say("邀请"))
    assert code
    await wecom.say(f"加入 {code[1]}")
    given = re.search(r"关联 ([A-Z2-9]+)", await wecom.say("关联"))
    assert given
    done = await oa.say(f"关联 {given[1]}")
    assert done.startswith("关联成功")
    # The older card wins where both are set; the other fields come from either.
    assert "姓名：李娜" in done and "城市：上海" in done and "职位：律师" in done
    # One network: both contacts, whichever platform is used.
    for identity in (oa, wecom):
        contacts = await identity.say("人脉")
        assert "王芳" in contacts and "张伟" in contacts
    assert "李娜" in await colleague.say("人脉") and "李娜" in await friend.say("人脉")
    # Visibility and search across platforms: the friend finds the colleague through Li Na.
    await colleague.say("设置 擅长 合同")
    found = await friend.say("找 合同")
    assert "张伟" in found and "李娜" in found
    # Linking again, or with a used code, changes nothing.
    assert (await oa.say(f"关联 {given[1]}")).startswith("这个关联码无效")
    assert (await wecom.say("关联")).startswith("你的公众号账号和企业微信账号已经关联")
    with db.session() as s:
        rows = s.execute(sa.select(Member.platform, Member.openid, Member.merged_into)
                         .where(Member.openid.in_(["o_li", "LiNa"]))).all()
        merged = {(p, o): m for p, o, m in rows}
        keep = s.execute(sa.select(Member.id).where(Member.openid == "LiNa")).scalar_one()
        assert merged == {("wecom", "LiNa"): None, ("oa", "o_li"): keep}  # WeCom reaches them best
        mine = s.execute(sa.select(sa.func.count()).select_from(Connection)
                         .where(Connection.member_id == keep)).scalar_one()
        assert mine == 2


async def test_a_link_code_works_once_for_ten_minutes_and_not_on_the_same_platform(db: Database) -> None:
    clock = FixedClock(T0)
    d = Dispatcher(db=db, clock=clock, settings=Settings(linking=True))
    a, b, c = (Member2(d, clock, "oa", "o_a"), Member2(d, clock, "oa", "o_b"), Member2(d, clock, "wecom", "W_c"))
    for identity in (a, b, c):
        await identity.say("lang en")
    code = re.search(r"link ([A-Z2-9]+)", await a.say("link"))
    assert code
    assert "same platform" in await b.say(f"link {code[1]}")
    assert "from this account" in await a.say(f"link {code[1]}")
    # Neither attempt used the code up; a new one replaces it, and lasts ten minutes.
    fresh = re.search(r"link ([A-Z2-9]+)", await a.say("link"))
    assert fresh
    assert "does not work" in await c.say(f"link {code[1]}")
    clock.advance(minutes=11)
    assert "does not work" in await c.say(f"link {fresh[1]}")
    assert "does not work" in await c.say("link ZZZZ9999")
