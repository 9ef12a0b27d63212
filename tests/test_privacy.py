"""Privacy: the one visibility rule, tested directly, and the privacy commands via the webhook."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from typing import Optional

import pytest

from scheduler.clock import FixedClock
from handlers.visibility import may_see, visible_card, what_may_see
from storage import cards, graph, members, privacy
from storage.db import Database
from storage.privacy import CONNECTIONS, HIDDEN, LEVELS, NETWORK, Privacy
from tests.botkit import make_config, running_bot, say

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
DEGREES: list[Optional[int]] = [0, 1, 2, 3, None]
EXPECTED = {
    # level:        self   1st    2nd    3rd    beyond
    CONNECTIONS: [True, True, False, False, False],
    NETWORK: [True, True, True, True, False],
    HIDDEN: [True, False, False, False, False],
}


@pytest.mark.parametrize("level, degree", list(itertools.product(LEVELS, DEGREES)))
def test_may_see_every_level_and_degree(level: str, degree: Optional[int]) -> None:
    assert may_see(level, degree) is EXPECTED[level][DEGREES.index(degree)]


def test_defaults_contact_and_bio_for_connections_only() -> None:
    card = {"name": "Ann", "title": "CFO", "company": "X", "city": "SH", "industry": "Finance",
            "offers": ["audit"], "needs": [], "bio": "Hi", "contact": "ann@x.cn"}
    assert visible_card(card, Privacy(), 1) == {k: v for k, v in card.items() if v}
    assert set(visible_card(card, Privacy(), 2)) == {"name", "title", "company", "city", "industry", "offers"}
    assert visible_card(card, Privacy(), None) == {}
    # A contact level of `network` (only possible before migration 0005) counts as connections.
    custom = Privacy(levels={"name": HIDDEN, "contact": NETWORK})
    assert "name" not in visible_card(card, custom, 1) and visible_card(card, custom, 1)["contact"] == "ann@x.cn"
    assert "contact" not in visible_card(card, custom, 2) and "contact" not in visible_card(card, custom, 3)


async def test_what_may_see_along_a_chain(db: Database) -> None:
    """a - b - c - d - e: b is 1st, c 2nd, d 3rd and e beyond for a."""
    ids: dict[str, int] = {}
    with db.session() as s:
        for name in "abcde":
            m = members.touch(s, platform="oa", openid=name, now=T0, user_message=True, event=False)
            ids[name] = m.id or 0
            cards.save(s, member_id=ids[name], now=T0, changes={
                "name": name.upper(), "bio": f"bio {name}", "contact": f"{name}@mail", "offers": ["x"]})
        for x, y in zip("abcd", "bcde"):
            graph.connect(s, a=ids[x], b=ids[y], source="invite", now=T0)
    with db.session() as s, pytest.raises(ValueError):
        privacy.set_level(s, member_id=ids["b"], field_name="contact", level=NETWORK)
    for level in privacy.allowed_levels("contact"):
        with db.session() as s:
            for name in "bcde":
                privacy.set_level(s, member_id=ids[name], field_name="contact", level=level)
        with db.session() as s:
            for name, degree in zip("abcde", DEGREES):
                assert graph.degree(s, viewer_id=ids["a"], owner_id=ids[name]) == degree
                seen = what_may_see(s, viewer_id=ids["a"], owner_id=ids[name])
                assert ("contact" in seen) is EXPECTED[level][DEGREES.index(degree)], (level, name)
                assert ("bio" in seen) is (degree in (0, 1))
                assert ("name" in seen) is (degree is not None)
    # A deactivated member breaks the chain: nobody sees through them.
    with db.session() as s:
        c = members.get(s, platform="oa", openid="c")
        assert c is not None
        members.deactivate(s, member=c, now=T0)
    with db.session() as s:
        assert graph.degree(s, viewer_id=ids["a"], owner_id=ids["d"]) is None
        assert what_may_see(s, viewer_id=ids["a"], owner_id=ids["d"]) == {}


async def test_privacy_commands_in_english(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        shown = await say(bot, "o_p", "privacy")
        assert shown.startswith("Who sees each field of your card:")
        assert "Contact: connections only" in shown and "Name: my network (up to 3rd degree)" in shown
        assert "Stealth: off" in shown and "Pause: off" in shown
        assert await say(bot, "o_p", "privacy contact hidden") == \
            "Contact is now seen by nobody (used for matching only)."
        assert await say(bot, "o_p", "privacy bio network") == "Bio is now seen by my network (up to 3rd degree)."
        assert "Contact: (not set) — seen by nobody (used for matching only)" in await say(bot, "o_p", "card")
        for bad in ("privacy contact everyone", "privacy shoe size hidden", "privacy hidden"):
            assert (await say(bot, "o_p", bad)).startswith("Usage: privacy FIELD LEVEL")


async def test_privacy_commands_in_chinese(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        assert (await say(bot, "o_q", "隐私")).startswith("名片各项的可见范围：")
        assert await say(bot, "o_q", "隐私 联系方式 隐藏") == "联系方式现在的可见范围：隐藏（仅用于匹配）。"
        assert await say(bot, "o_q", "隐私 公司 仅好友") == "公司现在的可见范围：仅好友。"
        assert "联系方式：隐藏" in await say(bot, "o_q", "隐私")
        assert (await say(bot, "o_q", "隐私 公司 所有人")).startswith("用法：隐私 字段 级别")


async def test_stealth_and_pause(db_url: str) -> None:
    clock = FixedClock(T0)
    async with running_bot(make_config(db_url), clock=clock) as bot:
        assert (await say(bot, "o_s", "stealth on")).startswith("Stealth is on")
        assert "Stealth: on" in await say(bot, "o_s", "privacy")
        assert (await say(bot, "o_s", "stealth off")).startswith("Stealth is off")
        assert await say(bot, "o_s", "stealth maybe") == "Usage: stealth on or stealth off."
        assert (await say(bot, "o_s2", "隐身 开")).startswith("已开启隐身")
        assert (await say(bot, "o_s2", "隐身 关")).startswith("已关闭隐身")

        assert "until 2026-03-05 17:00" in await say(bot, "o_s", "pause 3")
        with bot.services.db.session() as s:
            m = members.get(s, platform="oa", openid="o_s")
            prefs = privacy.get(s, member_id=m.id or 0)  # type: ignore[union-attr]
        assert prefs.paused(T0 + timedelta(days=2)) and not prefs.paused(T0 + timedelta(days=3, seconds=1))
        assert "Paused until" in await say(bot, "o_s", "privacy")
        clock.advance(days=4)
        assert "Pause: off" in await say(bot, "o_s", "privacy")  # a pause ends by itself
        assert (await say(bot, "o_s2", "暂停 3天")).startswith("已暂停 3 天")
        assert (await say(bot, "o_s2", "暂停 0")).startswith("欢迎回来")
        for bad in ("pause", "pause -1", "pause soon", "pause 366"):
            assert await say(bot, "o_s", bad) == "Usage: pause DAYS, from 0 (resume now) to 365."
