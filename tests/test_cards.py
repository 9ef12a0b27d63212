"""Profile cards through the webhook: show, set, and the step-by-step editor, in both languages."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import sqlalchemy as sa

from scheduler.clock import FixedClock
from storage.models import Card, Dialog
from tests.botkit import make_config, running_bot, say

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


async def card_row(bot, openid: str) -> Card | None:  # type: ignore[no-untyped-def]
    from storage.models import Member

    with bot.services.db.session() as s:
        return (s.execute(sa.select(Card).join(Member, Member.id == Card.member_id)
                                .where(Member.openid == openid))).scalar_one_or_none()


async def test_card_and_set_in_english(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        empty = await say(bot, "o_a", "card")
        assert empty.startswith("Your card:") and "Name: (not set) — seen by my network" in empty
        assert "Contact: (not set) — seen by connections only" in empty
        assert await say(bot, "o_a", "set name Alice Wang") == "Saved. Name: Alice Wang"
        assert await say(bot, "o_a", "SET Title  Head of Growth") == "Saved. Title: Head of Growth"
        assert await say(bot, "o_a", "set offers fundraising, hiring，law、 fundraising") == \
            "Saved. Offers: fundraising, hiring, law"
        shown = await say(bot, "o_a", "/card")
        assert "Name: Alice Wang — seen by my network" in shown and "Offers: fundraising, hiring, law" in shown
        row = await card_row(bot, "o_a")
        assert row is not None and json.loads(row.offers) == ["fundraising", "hiring", "law"]
        assert await say(bot, "o_a", "set bio -") == "Saved. Bio: (not set)"


async def test_card_and_set_in_chinese(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        assert (await say(bot, "o_z", "名片")).startswith("我的名片：")
        assert await say(bot, "o_z", "设置 姓名 张伟") == "已保存。姓名：张伟"
        assert await say(bot, "o_z", "设置公司 字节跳动") == "已保存。公司：字节跳动"
        assert await say(bot, "o_z", "设置 擅长 融资、招聘，法律") == "已保存。擅长：融资、招聘、法律"
        assert await say(bot, "o_z", "设置 简介 " + "好" * 201) == "简介最多 200 个字，你输入了 201 个字，未保存。"
        shown = await say(bot, "o_z", "名片")
        assert "姓名：张伟（人脉圈（三度以内）可见）" in shown and "联系方式：（未填写）（仅好友可见）" in shown


async def test_limits_refuse_without_cutting(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await say(bot, "o_l", "set name Bob")
        too_long = await say(bot, "o_l", "set name " + "x" * 41)
        assert too_long == "Name can be at most 40 characters; yours has 41. Nothing was saved."
        assert "at most 20 characters" in await say(bot, "o_l", "set needs " + "y" * 21)
        assert "at most 10 tags; you sent 11" in await say(bot, "o_l", "set needs " + ",".join("abcdefghijk"))
        assert "at most 200 characters; yours has 201" in await say(bot, "o_l", "设置 简介 " + "好" * 201)
        assert "Fields:" in await say(bot, "o_l", "set colour blue")
        assert "What should Title be" in await say(bot, "o_l", "set title")
        row = await card_row(bot, "o_l")
        assert row is not None and row.name == "Bob" and row.needs == "[]" and row.bio is None
        # Invisible format characters are stripped and the value trimmed.
        assert await say(bot, "o_l", "set city \t Shang\u200bhai\u200e ") == "Saved. City: Shanghai"


async def test_card_edit_dialog_with_skip_and_restart(db_url: str) -> None:
    cfg = make_config(db_url)
    clock = FixedClock(T0)
    async with running_bot(cfg, clock=clock) as bot:
        await say(bot, "o_d", "set company Old Co")
        first = await say(bot, "o_d", "card edit")
        assert "1/9 Name (at most 40 characters). Now: (not set)" in first
        assert "2/9 Title" in await say(bot, "o_d", "Dana Li")
        assert "3/9 Company" in await say(bot, "o_d", "skip")
    # A restart in the middle of the dialog: the state was written through, nothing is lost.
    async with running_bot(cfg, clock=clock) as bot:
        prompt = await say(bot, "o_d", "SKIP")
        assert "4/9 City" in prompt
        too_long = await say(bot, "o_d", "z" * 31)
        assert "at most 30 characters" in too_long and "4/9 City" in too_long
        assert "5/9" in await say(bot, "o_d", "Beijing")
        for answer in ["skip", "angel investing, board seats", "跳过", "I back founders.", "skip"]:
            reply = await say(bot, "o_d", answer)
        assert reply.startswith("Your card is saved.") and "Name: Dana Li" in reply
        row = await card_row(bot, "o_d")
        assert row is not None and row.name == "Dana Li" and row.company == "Old Co" and row.city == "Beijing"
        assert json.loads(row.offers) == ["angel investing", "board seats"] and row.bio == "I back founders."
        with bot.services.db.session() as s:
            assert (s.execute(sa.select(sa.func.count()).select_from(Dialog))).scalar_one() == 0


async def test_card_edit_cancel_leaves_no_half_card(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        assert "1/9 姓名" in await say(bot, "o_c", "编辑名片")
        await say(bot, "o_c", "陈晨")
        await say(bot, "o_c", "设计师")
        assert await say(bot, "o_c", "取消") == "已取消编辑名片，没有任何修改。"
        assert await card_row(bot, "o_c") is None
        assert "1/9 姓名" in await say(bot, "o_c", "编辑名片")
        assert await say(bot, "o_c", "cancel") == "已取消编辑名片，没有任何修改。"


async def test_card_edit_times_out_after_30_minutes(db_url: str) -> None:
    clock = FixedClock(T0)
    async with running_bot(make_config(db_url), clock=clock) as bot:
        await say(bot, "o_t", "card edit")
        await say(bot, "o_t", "Tom")
        clock.advance(minutes=29)
        assert "3/9" in await say(bot, "o_t", "skip")  # still inside the window, which restarts
        clock.advance(minutes=31)
        reply = await say(bot, "o_t", "help")
        assert reply.startswith("Your card edit timed out") and "Commands" in reply
        assert await card_row(bot, "o_t") is None
        clock.advance(minutes=1)
        assert (await say(bot, "o_t", "card")).startswith("Your card:")


async def test_help_lists_every_card_command_in_both_languages(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        en = await say(bot, "o_h", "help")
        for usage in ["card —", "set FIELD VALUE", "card edit", "invite", "join CODE", "contacts",
                      "privacy", "stealth on|off", "pause DAYS", "export", "delete me"]:
            assert usage in en
        zh = await say(bot, "o_h2", "帮助")
        for usage in ["名片 —", "设置 字段 值", "编辑名片", "邀请", "加入 邀请码", "人脉", "隐私", "隐身 开|关",
                      "暂停 天数", "导出", "注销"]:
            assert usage in zh
