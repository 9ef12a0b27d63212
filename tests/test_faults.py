"""Reliability under faults (issue 8): database errors, outages, partitions, races, kill -9.

Every fault is inflicted from outside: a trigger in the database, a lock held by another
connection, a TCP proxy between the bot and PostgreSQL that can stop forwarding, two real
`yinjian serve` workers on one database, SIGKILL. The bot is seen only through its doors: the
webhook over HTTP, /healthz, the outbox table and the fake WeChat API.
"""

from __future__ import annotations

import logging
import re
import sqlite3

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.botkit import make_config, running_bot
from tests.conftest import PG_URL
from tests.fakes.wechat_server import text_xml

APOLOGY_ZH = "出了点问题"


def pg_schema(db_url: str) -> str:
    """The search_path schema the db_url fixture made for this test."""
    options = str(make_url(db_url).query.get("options", ""))
    found = re.search(r"search_path=(\w+)", options)
    assert found, db_url
    return found.group(1)


def execute_outside(db_url: str, *statements: str) -> None:
    """Run SQL on the test's database over a connection of its own (autocommit)."""
    if db_url.startswith("sqlite"):
        lite = sqlite3.connect(make_url(db_url).database or "", isolation_level=None)
        try:
            for statement in statements:
                lite.execute(statement)
        finally:
            lite.close()
        return
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{pg_schema(db_url)}"')
        for statement in statements:
            conn.execute(statement)


# --- A: logs never carry what members typed ---------------------------------------------------

def _card_refuses_writes(db_url: str) -> None:
    """A trigger that makes every write to the card table fail (a bug-like database error)."""
    if db_url.startswith("sqlite"):
        execute_outside(db_url, *(
            f"CREATE TRIGGER card_refuses_{op} BEFORE {op} ON card "
            "BEGIN SELECT RAISE(ABORT, 'card writes are refused'); END" for op in ("INSERT", "UPDATE")))
        return
    execute_outside(
        db_url,
        "CREATE FUNCTION card_refuses() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'card writes are refused'; END $$",
        "CREATE TRIGGER card_refuses BEFORE INSERT OR UPDATE ON card "
        "FOR EACH ROW EXECUTE FUNCTION card_refuses()",
    )


async def test_a_database_error_logs_nothing_the_member_typed(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_bot(make_config(db_url)) as bot:
        _card_refuses_writes(db_url)
        caplog.set_level(logging.DEBUG)
        xml = text_xml("o_secret", "set name SOMESECRET", bot.wechat.next_msg_id())
        answer = await bot.wechat.push(xml)
        assert answer.status == 200 and APOLOGY_ZH in (answer.content or "")
        # A bug, not an outage: the apology is stored, and WeChat's retry gets it again.
        again = await bot.wechat.push(xml)
        assert again.content == answer.content
    failures = [r for r in caplog.records if r.exc_info and "handler failed" in r.getMessage()]
    assert failures, "the database error was not logged with its traceback"
    formatter = logging.Formatter()
    for record in caplog.records:
        logged = [record.getMessage(), repr(record.args), record.exc_text or ""]
        if record.exc_info:
            logged.append(formatter.formatException(record.exc_info))
        assert not any("SOMESECRET" in part for part in logged), (record.name, logged)
