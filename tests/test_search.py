"""Network search through the webhook: words, ranking, paths, visibility and the stored numbering."""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlmodel import col

from storage import graph
from storage.models import Member, SearchResult, SearchToken
from storage.search import SearchHit, last_result, tokenize
from tests.botkit import RunningBot, event, make_config, running_bot, say

RESULT = re.compile(r"^(\d+)\. (.+?)(?: — |——|$)", re.MULTILINE)


async def connect(bot: RunningBot, a: str, b: str, *, ab: int | None = None, ba: int | None = None) -> None:
    """a invites b, b joins; then each side's tie strength (a→b, b→a) when given."""
    reply = await say(bot, a, "invite")
    code = re.search(r"(?:join|加入) ([A-Z2-9]{6,10})$", reply, re.MULTILINE)
    assert code, reply
    joined = await say(bot, b, f"join {code.group(1)}")
    assert "connected" in joined or "建立联系" in joined, joined
    ids = await member_ids(bot)
    with bot.services.db.session() as s:
        assert graph.are_connected(s, a=ids[a], b=ids[b])
        for x, y, strength in ((a, b, ab), (b, a, ba)):
            if strength is not None:
                graph.set_strength(s, member_id=ids[x], contact_id=ids[y], strength=strength)


async def member_ids(bot: RunningBot) -> dict[str, int]:
    with bot.services.db.session() as s:
        return {o: i for o, i in s.execute(sa.select(Member.openid, Member.id)).all()}


async def card(bot: RunningBot, openid: str, **fields: str) -> None:
    for name, value in fields.items():
        reply = await say(bot, openid, f"set {name} {value}")
        assert "Saved" in reply or "已保存" in reply, reply


def names(reply: str) -> list[str]:
    """The names of the numbered results, in order; also checks the numbering is 1..N."""
    found = RESULT.findall(reply)
    assert [int(n) for n, _ in found] == list(range(1, len(found) + 1)), reply
    return [name for _, name in found]


def block(reply: str, name: str) -> str:
    """The lines of one result: its first line up to the next result."""
    match = re.search(rf"^\d+\. {re.escape(name)}(?: — |——|$).*?(?=^\d+\. |\Z)", reply, re.MULTILINE | re.DOTALL)
    assert match, reply
    return match.group(0)


def test_tokenizer_segments_chinese_and_folds_latin() -> None:
    assert {"律师", "事务所"} <= set(tokenize("金杜律师事务所"))
    assert {"投资", "投资人"} <= set(tokenize("天使投资人"))
    assert tokenize("Senior PRODUCT-Manager, Ｓｈａｎｇｈａｉ!") == ("senior", "product", "manager", "shanghai")
    assert set(tokenize("AI投资 x")) == {"ai", "投资"}  # one-letter latin words are dropped
    assert "李娜" in tokenize("李娜")  # short names stay whole even when jieba splits them
    assert tokenize("，。! ?") == ()


async def test_two_character_chinese_queries_match_longer_words(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await card(bot, "zhang", name="张伟")
        await card(bot, "li", name="李娜", title="律师事务所合伙人")
        await card(bot, "wang", name="王芳", bio="天使投资人")
        await card(bot, "zhao", name="赵强", title="工程师")
        await say(bot, "zhang", "语言 中文")
        await connect(bot, "zhang", "li")
        await connect(bot, "li", "wang")
        await connect(bot, "zhang", "zhao")
        lawyers = await say(bot, "zhang", "找律师")
        assert lawyers.startswith("在你的人脉中找到“律师”（1 位）：")
        assert names(lawyers) == ["李娜"] and "1. 李娜——律师事务所合伙人" in lawyers
        assert "你的联系人" in block(lawyers, "李娜")
        # 王芳's bio is for connections only: it matches, but at the 2nd degree it is not shown.
        investors = await say(bot, "zhang", "找 投资")
        assert names(investors) == ["王芳"] and "经由 李娜" in investors and "天使投资人" not in investors
        assert "引荐 编号" in investors
        none = await say(bot, "zhang", "找 医生")
        assert "没有人匹配“医生”" in none and "邀请" in none
        assert (await say(bot, "zhang", "找")).startswith("用法：找 关键词")


async def test_english_and_mixed_queries(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await card(bot, "ann", name="Ann")
        await card(bot, "ben", name="Ben Wu", title="Senior Product Manager", company="ByteDance",
                   city="Shanghai")
        await card(bot, "cat", name="Cat", offers="AI投资, fundraising")
        await card(bot, "dan", name="Dan", title="Designer")
        for other in ("ben", "cat", "dan"):
            await connect(bot, "ann", other)
        product = await say(bot, "ann", "find PRODUCT manager")
        assert product.startswith("Found in your network for “PRODUCT manager” (1):")
        assert names(product) == ["Ben Wu"]
        assert "1. Ben Wu — Senior Product Manager, ByteDance, Shanghai" in product
        assert names(await say(bot, "ann", "find bytedance")) == ["Ben Wu"]
        mixed = await say(bot, "ann", "find AI投资")
        assert names(mixed) == ["Cat"] and "Offers: AI投资, fundraising" in mixed
        assert names(await say(bot, "ann", "search 投资")) == ["Cat"]
        assert names(await say(bot, "ann", "find fundraising designer")) == ["Cat", "Dan"]
        assert "Nobody in your network up to the 3rd degree matches “plumber”" in await say(bot, "ann", "find plumber")
        assert (await say(bot, "ann", "find")).startswith("Usage: find WORDS")
        assert (await say(bot, "ann", "find ,.!")).startswith("Usage: find WORDS")


async def test_ranking_by_degree_then_path_strength_then_relevance(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await card(bot, "me", name="Me")
        for who, title in (("weak1", "Friend"), ("strong1", "Friend"), ("near", "Lawyer"),
                           ("nearer", "Lawyer lawyer mediator"), ("via_weak", "Lawyer"),
                           ("via_strong", "Lawyer"), ("bridge", "Friend"), ("far", "Lawyer mediator")):
            await card(bot, who, name=who.replace("_", "-").title(), title=title)
        # 1st degree: near (1 word) and nearer (2 words); the same strength.
        await connect(bot, "me", "near", ab=2)
        await connect(bot, "me", "nearer", ab=2)
        # 2nd degree: via a weak and via a strong first tie, each followed by a strong one.
        await connect(bot, "me", "weak1", ab=1)
        await connect(bot, "me", "strong1", ab=3)
        await connect(bot, "weak1", "via_weak", ab=3)
        await connect(bot, "strong1", "via_strong", ab=3)
        # 3rd degree, with the best relevance of all: still last.
        await connect(bot, "strong1", "bridge", ab=3)
        await connect(bot, "bridge", "far", ab=3)
        reply = await say(bot, "me", "find lawyer mediator")
        assert names(reply) == ["Nearer", "Near", "Via-Strong", "Via-Weak", "Far"], reply
        assert "your contact" in block(reply, "Nearer")
        assert "via Strong1" in block(reply, "Via-Strong") and "via Weak1" in block(reply, "Via-Weak")
        assert "via Strong1 (3rd degree)" in block(reply, "Far")
        # The strength that counts is the direction of travel: me→weak1 is what makes it weak.
        ids = await member_ids(bot)
        with bot.services.db.session() as s:
            graph.set_strength(s, member_id=ids["weak1"], contact_id=ids["me"], strength=3)
        assert names(await say(bot, "me", "find lawyer"))[2:4] == ["Via-Strong", "Via-Weak"]
        with bot.services.db.session() as s:
            graph.set_strength(s, member_id=ids["me"], contact_id=ids["weak1"], strength=3)
            graph.set_strength(s, member_id=ids["strong1"], contact_id=ids["via_strong"], strength=1)
        assert names(await say(bot, "me", "find lawyer"))[2:4] == ["Via-Weak", "Via-Strong"]


async def test_the_best_path_names_the_strongest_connector(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        for who in ("me", "amy", "bo", "target", "next"):
            await card(bot, who, name=who.title())
        await card(bot, "target", title="Notary")
        await card(bot, "next", title="Notary")
        await connect(bot, "me", "amy", ab=3)
        await connect(bot, "me", "bo", ab=3)
        await connect(bot, "amy", "target", ab=1)
        await connect(bot, "bo", "target", ab=2)
        await connect(bot, "target", "next", ab=3)
        reply = await say(bot, "me", "find notary")
        assert names(reply) == ["Target", "Next"]
        assert "via Bo" in block(reply, "Target") and "via Bo (3rd degree)" in block(reply, "Next")
        ids = await member_ids(bot)
        with bot.services.db.session() as s:
            hit = last_result(s, member_id=ids["me"], n=1)
            assert hit == SearchHit(n=1, target_id=ids["target"], degree=2,
                                    path=[ids["me"], ids["bo"], ids["target"]])
            assert last_result(s, member_id=ids["me"], n=2) == SearchHit(
                n=2, target_id=ids["next"], degree=3, path=[ids["me"], ids["bo"], ids["target"], ids["next"]])
            assert last_result(s, member_id=ids["me"], n=3) is None
        # A new search replaces the numbering.
        await say(bot, "me", "find next")
        with bot.services.db.session() as s:
            assert last_result(s, member_id=ids["me"], n=1) == SearchHit(
                n=1, target_id=ids["next"], degree=3, path=[ids["me"], ids["bo"], ids["target"], ids["next"]])
            assert last_result(s, member_id=ids["me"], n=2) is None
        await say(bot, "me", "find nobodyhere")
        with bot.services.db.session() as s:
            assert last_result(s, member_id=ids["me"], n=1) is None


async def test_results_show_only_what_my_degree_may_see(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        full = {"title": "Auditor", "company": "Secretco", "city": "Hangzhou", "bio": "Audits banks",
                "contact": "phone 13800000000"}
        await card(bot, "me", name="Me")
        await card(bot, "first", name="First", **full)
        await card(bot, "second", name="Second", **{**full, "contact": "phone 13900000000"})
        await card(bot, "third", name="Third", **{**full, "contact": "phone 13700000000"})
        await connect(bot, "me", "first")
        await connect(bot, "first", "second")
        await connect(bot, "second", "third")
        for who in ("first", "second", "third"):
            await say(bot, who, "privacy company hidden")
        await say(bot, "third", "privacy name connections")
        reply = await say(bot, "me", "find secretco")  # hidden fields still match
        assert names(reply) == ["First", "Second", "a member without a name yet"]
        first = block(reply, "First")
        assert "Auditor, Hangzhou" in first and "Bio: Audits banks" in first
        assert "Contact: phone 13800000000" in first
        assert "Secretco" not in reply  # hidden from everyone, the 1st degree included
        assert "13900000000" not in reply and "13700000000" not in reply and "Audits banks" not in reply.split("2. ")[1]
        assert "Third" not in reply and "via First (3rd degree)" in reply
        # Everything indexed matches, but contact never does: it is not even in the index.
        assert "Nobody" in await say(bot, "me", "find 13900000000")
        with bot.services.db.session() as s:
            assert s.execute(sa.select(SearchToken).where(SearchToken.token.like("%139%"))).first() is None  # type: ignore[attr-defined]
        # Needs are not searched either.
        await say(bot, "second", "set needs funding")
        assert "Nobody" in await say(bot, "me", "find funding")


async def test_stealth_paused_deactivated_self_and_beyond_third(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        for who in ("me", "hub", "ghost", "resting", "gone", "d2", "d3", "d4"):
            await card(bot, who, name=who.title(), title="Architect")
        await connect(bot, "me", "hub")
        for who in ("ghost", "resting", "gone", "d2"):
            await connect(bot, "hub", who)
        await connect(bot, "d2", "d3")
        await connect(bot, "d3", "d4")
        assert names(await say(bot, "me", "find architect")) == ["Hub", "Ghost", "Resting", "Gone", "D2", "D3"]
        await say(bot, "ghost", "stealth on")
        await say(bot, "resting", "pause 5")
        await event(bot, "gone", "unsubscribe")
        reply = await say(bot, "me", "find architect")
        assert names(reply) == ["Hub", "D2", "D3"]  # never myself, never D4 at the 4th degree
        # The stealth member is still found by their own connections.
        assert "Ghost" in names(await say(bot, "hub", "find architect"))
        assert "Resting" not in names(await say(bot, "hub", "find architect"))
        # A member who left takes their paths with them.
        await event(bot, "d2", "unsubscribe")
        assert names(await say(bot, "me", "find architect")) == ["Hub"]
        await say(bot, "resting", "pause 0")
        assert "Resting" in names(await say(bot, "me", "find architect"))


async def test_a_changed_card_is_found_by_its_new_words_only(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await card(bot, "me", name="Me")
        await card(bot, "pat", name="Pat", title="Radiologist", city="北京")
        await connect(bot, "me", "pat")
        assert names(await say(bot, "me", "find radiologist")) == ["Pat"]
        await card(bot, "pat", title="Sommelier")
        assert "Nobody" in await say(bot, "me", "find radiologist")
        assert names(await say(bot, "me", "find sommelier")) == ["Pat"]
        await say(bot, "pat", "set city -")  # clearing a field drops its words too
        assert "Nobody" in await say(bot, "me", "find 北京")
        # The step-by-step editor saves through the same path.
        await say(bot, "pat", "card edit")
        for answer in ("Pat", "Cartographer", "skip", "skip", "skip", "skip", "skip", "skip", "skip"):
            await say(bot, "pat", answer)
        assert names(await say(bot, "me", "find cartographer")) == ["Pat"]
        assert "Nobody" in await say(bot, "me", "find sommelier")


async def test_erasure_removes_the_index_and_stored_results(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await card(bot, "me", name="Me", title="Pilot")
        await card(bot, "kim", name="Kim", title="Pilot")
        await connect(bot, "me", "kim")
        assert names(await say(bot, "me", "find pilot")) == ["Kim"]
        assert names(await say(bot, "kim", "find pilot")) == ["Me"]
        ids = await member_ids(bot)
        await say(bot, "kim", "delete me")
        await say(bot, "kim", "delete me confirm")
        with bot.services.db.session() as s:
            assert s.execute(sa.select(SearchToken).where(SearchToken.member_id == ids["kim"])).first() is None
            assert s.execute(sa.select(SearchResult).where(
                sa.or_(col(SearchResult.member_id) == ids["kim"], col(SearchResult.target_id) == ids["kim"]))).first() is None
        assert "Nobody" in await say(bot, "me", "find pilot")
