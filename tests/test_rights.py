"""The member's rights: export through a one-time link, delete me, and the unsubscribe grace period."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import aiohttp
import sqlalchemy as sa
from sqlmodel import SQLModel

from handlers.outgoing import tell
from scheduler.clock import FixedClock
from scheduler.jobs import JOBS
from storage.db import Database
from storage.models import OutboxMessage
from tests.botkit import RunningBot, event, make_config, running_bot, say

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
SECRET_NAME, SECRET_CONTACT = "Zelda Quux", "zelda@quux.example"


async def fill_and_connect(bot: RunningBot) -> None:
    """zelda has a card, settings, an invite, a dialog and a connection to bob."""
    for command in (f"set name {SECRET_NAME}", f"set contact {SECRET_CONTACT}", "set offers tax law",
                    "privacy city hidden", "stealth on"):
        await say(bot, "zelda", command)
    code = re.search(r"join ([A-Z2-9]+)", await say(bot, "zelda", "invite"))
    assert code
    await say(bot, "bob", "set name Bob")
    await say(bot, "bob", f"join {code.group(1)}")
    await say(bot, "zelda", "strength 1 3")
    await say(bot, "zelda", "invite")


async def traces(db: Database, needles: list[str]) -> list[str]:
    """Every table cell, in every table, that mentions one of the needles."""
    found = []
    with db.session() as s:
        for table in SQLModel.metadata.sorted_tables:
            for row in (s.execute(sa.select(table))).all():
                for column, value in zip(table.columns, row):
                    if any(n in str(value) for n in needles):
                        found.append(f"{table.name}.{column.name}={value!r}")
    return found


async def member_id(db: Database, openid: str) -> int | None:
    from storage.models import Member

    with db.session() as s:
        return (s.execute(sa.select(Member.id).where(Member.openid == openid))).scalar_one_or_none()


async def references(db: Database, mid: int) -> list[str]:
    """Rows whose member foreign keys point at this member."""
    found = []
    with db.session() as s:
        for table in SQLModel.metadata.sorted_tables:
            for column in table.columns:
                if any(fk.column.table.name == "member" for fk in column.foreign_keys) or \
                        (table.name == "member" and column.name == "id"):
                    n = (s.execute(sa.select(sa.func.count()).select_from(table).where(column == mid))).scalar_one()
                    if n:
                        found.append(f"{table.name}.{column.name}")
    return found


async def test_export_link_is_one_time_and_complete(db_url: str) -> None:
    clock = FixedClock(T0)
    async with running_bot(make_config(db_url), clock=clock) as bot:
        await fill_and_connect(bot)
        reply = await say(bot, "zelda", "export")
        assert reply.startswith("Your data, as JSON, at this one-time link (valid 24 hours):")
        url = reply.splitlines()[-1]
        assert url.startswith("http://127.0.0.1:8080/export/")
        local = bot.base_url.rstrip("/") + url[len("http://127.0.0.1:8080"):]
        async with aiohttp.ClientSession() as s:
            async with s.get(local) as resp:
                assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
                data = await resp.json()
            assert data["card"]["name"] == SECRET_NAME and data["card"]["offers"] == ["tax law"]
            assert data["card"]["contact"] == SECRET_CONTACT
            assert data["settings"]["visibility"]["city"] == "hidden" and data["settings"]["stealth"] is True
            assert data["connections"] == [{"number": 1, "strength": 3, "since": T0.isoformat(),
                                            "card": {"name": "Bob"}}]
            assert len(data["invites"]) == 2 and data["introductions"] == [] and data["asks"] == []
            async with s.get(local) as resp:
                assert resp.status == 404  # used
            expired = (await say(bot, "zelda", "导出")).splitlines()[-1]
            clock.advance(hours=24, seconds=1)
            async with s.get(bot.base_url.rstrip("/") + expired[len("http://127.0.0.1:8080"):]) as resp:
                assert resp.status == 404  # expired
            async with s.get(bot.base_url.rstrip("/") + "/export/" + "x" * 32) as resp:
                assert resp.status == 404  # unknown


async def test_delete_me_asks_then_erases_everything(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await fill_and_connect(bot)
        await say(bot, "zelda", "card edit")  # an open dialog is personal data too
        await say(bot, "zelda", "cancel")
        mid = await member_id(bot.services.db, "zelda")
        assert mid is not None
        ask = await say(bot, "zelda", "delete me")
        assert "cannot be undone" in ask and "delete me confirm" in ask
        assert await member_id(bot.services.db, "zelda") == mid  # nothing yet
        done = await say(bot, "zelda", "delete me confirm")
        assert done.startswith("Your data has been deleted.")
        assert await references(bot.services.db, mid) == []
        assert await traces(bot.services.db, ["zelda", SECRET_NAME, SECRET_CONTACT]) == []
        # Bob no longer sees zelda anywhere.
        assert "No connections yet" in await say(bot, "bob", "contacts")
        # Coming back starts from nothing.
        assert "(not set)" in await say(bot, "zelda", "card")


async def test_delete_me_in_chinese(db_url: str) -> None:
    async with running_bot(make_config(db_url)) as bot:
        await say(bot, "wang", "设置 姓名 王五")
        assert "注销 确认" in await say(bot, "wang", "注销")
        assert (await say(bot, "wang", "注销 确认")).startswith("你的数据已删除。")
        assert await traces(bot.services.db, ["王五", "wang"]) == []


async def test_unsubscribe_grace_period(db_url: str) -> None:
    clock = FixedClock(T0)
    cfg = make_config(db_url)
    async with running_bot(cfg, clock=clock) as bot:
        await fill_and_connect(bot)
        await event(bot, "zelda", "unsubscribe")
        assert "No connections yet" in await say(bot, "bob", "contacts")  # deactivated at once
        purge = JOBS["purge-deactivated"]
        deps = bot.services.scheduler.deps
        # Re-following within the grace period restores everything.
        assert "erased the data of 0" in await purge.func(deps, T0.replace(day=8))
        back = await event(bot, "zelda", "subscribe")
        assert back.startswith("Welcome back")
        assert "1. Zelda Quux" in await say(bot, "bob", "contacts")
        # Leaving again and staying away longer than 7 days: everything is deleted.
        await event(bot, "zelda", "unsubscribe")
        clock.advance(days=7, minutes=1)
        assert "erased the data of 1" in await purge.func(deps, clock.now())
        assert await traces(bot.services.db, ["zelda", SECRET_NAME, SECRET_CONTACT]) == []
        assert "erased the data of 0" in await purge.func(deps, clock.now())  # idempotent


async def test_delete_me_drops_unsent_digests_that_may_name_the_member(db_url: str) -> None:
    from handlers.replies import TextReply
    from storage import members as member_store
    from storage import outbox

    async with running_bot(make_config(db_url)) as bot:
        await fill_and_connect(bot)  # zelda - bob
        await say(bot, "carol", "set name Carol")
        with bot.services.db.session() as s:
            bob = member_store.get(s, platform="oa", openid="bob")
            carol = member_store.get(s, platform="oa", openid="carol")
            assert bob is not None and carol is not None
            tell(s, member_id=bob.id, reply=TextReply(f"New in your network: {SECRET_NAME}"),
                           now=T0, priority=outbox.PRIORITY_DIGEST, key=f"digest:{bob.id}:2026-W10")
            tell(s, member_id=carol.id, reply=TextReply("Nothing about anyone"),
                           now=T0, priority=outbox.PRIORITY_DIGEST, key=f"digest:{carol.id}:2026-W10")
        await say(bot, "zelda", "delete me confirm")
        assert await traces(bot.services.db, [SECRET_NAME]) == []
        with bot.services.db.session() as s:
            keys = set(s.execute(sa.select(OutboxMessage.dedupe_key)).scalars())
        assert f"digest:{carol.id}:2026-W10" in keys  # a digest that cannot name her stays
