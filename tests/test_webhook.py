"""The webhook, driven by the fake WeChat server over real HTTP, on both databases."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from datetime import datetime, timezone
from typing import AsyncIterator

import aiohttp
import pytest
import sqlalchemy as sa
from sqlmodel import col

from handlers import core
from handlers.context import Context
from handlers.outgoing import tell
from handlers.replies import Reply, TextReply
from storage.models import InboundPush, Member, OutboxMessage
from tests.botkit import RunningBot, make_config, running_bot
from tests.fakes.wechat_server import event_xml, signature, text_xml

MODES = ["plain", "compat", "safe"]


@pytest.fixture(params=MODES)
async def bot(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[RunningBot]:
    """The bot in each encryption mode."""
    async with running_bot(make_config(db_url), mode=request.param) as running:
        yield running


async def say(bot: RunningBot, openid: str, content: str) -> str:
    answer = await bot.wechat.push(text_xml(openid, content, bot.wechat.next_msg_id()))
    assert answer.status == 200, answer.body
    assert answer.content is not None, f"no text reply to {content!r}: {answer.body!r}"
    return answer.content


async def member(bot: RunningBot, openid: str) -> Member | None:
    with bot.services.db.session() as s:
        return (s.execute(sa.select(Member).where(Member.openid == openid))).scalar_one_or_none()


# --- verification and modes ---------------------------------------------------------------

async def test_url_verification_returns_echostr(bot: RunningBot) -> None:
    assert await bot.wechat.verify_url("8234712938") == (200, "8234712938")


async def test_url_verification_refuses_bad_signature_and_stale_time(bot: RunningBot) -> None:
    ts = str(int(bot.services.clock.now().timestamp()))
    async with aiohttp.ClientSession() as s:
        async with s.get(bot.wechat.url, params={"signature": "x" * 40, "timestamp": ts, "nonce": "1",
                                                 "echostr": "e"}) as resp:
            assert resp.status == 403
        old = str(int(ts) - 310)
        good = signature(bot.wechat.token, old, "1")
        async with s.get(bot.wechat.url, params={"signature": good, "timestamp": old, "nonce": "1",
                                                 "echostr": "e"}) as resp:
            assert resp.status == 403


async def test_help_in_every_mode(bot: RunningBot) -> None:
    reply = await say(bot, "o_help", "help")
    assert "Commands" in reply and "lang en|zh" in reply
    if bot.wechat.mode != "plain":
        assert "<Encrypt>" in (await bot.wechat.push(text_xml("o_help", "help", bot.wechat.next_msg_id()))).body


async def test_healthz(bot: RunningBot) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(bot.base_url + "/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"


# --- router and language ------------------------------------------------------------------

async def test_router_variants_are_one_command(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = make_config(f"sqlite:///{tmp_path / 'r.db'}")
    async with running_bot(cfg) as bot:
        en = await say(bot, "o_en", "ＨＥＬＰ")
        assert en.startswith("Commands")
        assert await say(bot, "o_en", "/help") == en
        assert await say(bot, "o_en", "  Help ") == en
        zh = await say(bot, "o_zh", "帮助")
        assert zh.startswith("可用命令")
        assert await say(bot, "o_zh", "／帮助") == zh


async def test_language_rules(db_url: str) -> None:
    async with running_bot(make_config(db_url), mode="plain") as bot:
        # Chinese by default, even for text that is no command.
        assert "帮助" in await say(bot, "o1", "hello there")
        # The first command decides: English.
        assert (await say(bot, "o1", "help")).startswith("Commands")
        assert "help" in await say(bot, "o1", "what is this")
        assert (await say(bot, "o1", "帮助")).startswith("Commands")  # stays English
        assert await say(bot, "o1", "lang zh") == "好的，之后我会用中文回复。"
        assert (await say(bot, "o1", "help")).startswith("可用命令")
        assert "English" in await say(bot, "o1", "语言 英文")
        assert (await member(bot, "o1")).lang == "en"  # type: ignore[union-attr]
        assert "lang en" in await say(bot, "o1", "lang klingon")


async def test_unknown_text_gets_a_helpful_answer(bot: RunningBot) -> None:
    reply = await say(bot, "o_unknown", "你好呀")
    assert "你好呀" in reply and "帮助" in reply


async def test_non_text_message_is_answered(bot: RunningBot) -> None:
    image = ("<xml><ToUserName><![CDATA[gh]]></ToUserName><FromUserName><![CDATA[o_img]]></FromUserName>"
             f"<CreateTime>{int(bot.services.clock.now().timestamp())}</CreateTime><MsgType><![CDATA[image]]>"
             "</MsgType><PicUrl><![CDATA[http://x/y.jpg]]></PicUrl><MediaId><![CDATA[m]]></MediaId>"
             f"<MsgId>{bot.wechat.next_msg_id()}</MsgId></xml>")
    answer = await bot.wechat.push(image)
    assert answer.status == 200 and "文字" in (answer.content or "")


# --- events and members -------------------------------------------------------------------

async def test_subscribe_welcome_unsubscribe_and_return(bot: RunningBot) -> None:
    ts = int(bot.services.clock.now().timestamp())
    welcome = await bot.wechat.push(event_xml("o_sub", "subscribe", create_time=ts))
    assert "引荐" in (welcome.content or "") and "帮助" in (welcome.content or "")
    m = await member(bot, "o_sub")
    assert m is not None and m.status == "active" and m.last_event_at is not None
    gone = await bot.wechat.push(event_xml("o_sub", "unsubscribe", create_time=ts + 1))
    assert gone.status == 200 and gone.body == "success"
    m = await member(bot, "o_sub")
    assert m is not None and m.status == "deactivated" and m.deactivated_at is not None
    back = await bot.wechat.push(event_xml("o_sub", "subscribe", create_time=ts + 2))
    assert "欢迎回到" in (back.content or "")
    assert (await member(bot, "o_sub")).status == "active"  # type: ignore[union-attr]


async def test_member_recorded_on_first_push_with_window_start(bot: RunningBot) -> None:
    assert await member(bot, "o_new") is None
    await say(bot, "o_new", "help")
    m = await member(bot, "o_new")
    assert m is not None and m.last_message_at is not None
    assert abs((m.last_message_at - bot.services.clock.now()).total_seconds()) < 60


async def test_menu_click_runs_its_command(bot: RunningBot) -> None:
    answer = await bot.wechat.push(event_xml("o_click", "CLICK", key="help"))
    assert "Commands" in (answer.content or "")


# --- bad input ----------------------------------------------------------------------------

async def _good_push_still_works(bot: RunningBot) -> None:
    assert "Commands" in await say(bot, "o_after", "help")


async def _post(bot: RunningBot, query: dict[str, str], body: str | bytes) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s:
        async with s.post(bot.wechat.url, params=query, data=body) as resp:
            return resp.status, await resp.text()


async def test_wrong_signature(bot: RunningBot) -> None:
    query, body = bot.wechat.sign_query(text_xml("o", "help", bot.wechat.next_msg_id()))
    query["signature"] = "0" * 40
    assert (await _post(bot, query, body))[0] == 403
    await _good_push_still_works(bot)


async def test_wrong_msg_signature(bot: RunningBot) -> None:
    if bot.wechat.mode == "plain":
        pytest.skip("plain mode carries no msg_signature")
    query, body = bot.wechat.sign_query(text_xml("o", "help", bot.wechat.next_msg_id()))
    query["msg_signature"] = "f" * 40
    assert (await _post(bot, query, body))[0] == 403
    await _good_push_still_works(bot)


async def test_stale_and_future_timestamps(bot: RunningBot) -> None:
    now = int(bot.services.clock.now().timestamp())
    # A margin of seconds either side of the 300 s limit, so a clock tick cannot flip the answer.
    for ts in (now - 310, now + 310):
        answer = await bot.wechat.push(text_xml("o", "help", bot.wechat.next_msg_id()), timestamp=ts)
        assert answer.status == 403
    for ts in (now - 290, now + 290):
        answer = await bot.wechat.push(text_xml("o", "help", bot.wechat.next_msg_id()), timestamp=ts)
        assert answer.status == 200
    await _good_push_still_works(bot)


async def test_missing_parameters(bot: RunningBot) -> None:
    query, body = bot.wechat.sign_query(text_xml("o", "help", bot.wechat.next_msg_id()))
    for name in ("signature", "timestamp", "nonce"):
        partial = {k: v for k, v in query.items() if k != name}
        status, _ = await _post(bot, partial, body)
        assert status in (400, 403)
    await _good_push_still_works(bot)


async def test_oversized_body(bot: RunningBot) -> None:
    big = text_xml("o", "x" * (70 * 1024), bot.wechat.next_msg_id())
    query, body = bot.wechat.sign_query(big)
    assert (await _post(bot, query, body))[0] == 413
    await _good_push_still_works(bot)


@pytest.mark.parametrize("bad", [
    "<xml><ToUserName>broken",
    "not xml at all",
    "<other><a>1</a></other>",
    "<xml><FromUserName>o</FromUserName></xml>",
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY x "boom">]><xml><ToUserName>&x;</ToUserName></xml>',
    '<!DOCTYPE xml SYSTEM "http://example.invalid/x.dtd"><xml><MsgType>text</MsgType></xml>',
    '<xml><!ENTITY lol "lol"><MsgType>text</MsgType></xml>',
    "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName><CreateTime>99999999999999999999"
    "</CreateTime><MsgType>text</MsgType><Content>help</Content><MsgId>1</MsgId></xml>",
    "",
])
async def test_malformed_or_dangerous_xml(bot: RunningBot, bad: str) -> None:
    # Signed and (in compat/safe) encrypted correctly, so the XML itself is what gets refused.
    if bot.wechat.mode == "safe":
        query, body = _sign_inner(bot, bad)
    else:
        query, _ = bot.wechat.sign_query("<xml><ToUserName>gh</ToUserName></xml>")
        body = bad
    status, text = await _post(bot, query, body)
    assert 400 <= status < 500, (status, text)
    await _good_push_still_works(bot)


@pytest.mark.parametrize("timestamp", ["²", "1" * 400, "١٧١٤٠٣٧٠٥٩", "-5", " 1714037059", "1e9"])
async def test_signed_but_odd_timestamp_is_a_400(bot: RunningBot, timestamp: str) -> None:
    query, body = bot.wechat.sign_query(text_xml("o", "help", bot.wechat.next_msg_id()))
    query["timestamp"] = timestamp
    query["signature"] = signature(bot.wechat.token, timestamp, query["nonce"])
    if "msg_signature" in query:
        encrypted = re.search(r"<Encrypt><!\[CDATA\[(.*?)\]\]>", body)
        assert encrypted
        query["msg_signature"] = signature(bot.wechat.token, timestamp, query["nonce"], encrypted.group(1))
    assert (await _post(bot, query, body))[0] == 400
    await _good_push_still_works(bot)


async def test_odd_export_tokens_are_404(db_url: str) -> None:
    from yarl import URL

    odd = ["%00" * 32, "x" * 31 + "%00", "..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e", "..%5C..%5Cx",
           "%FF" * 32, "%C3%A9" * 32, "a" * 5000, "A" * 33, "A" * 31, "A" * 31 + "=", "A" * 31 + "%20"]
    async with running_bot(make_config(db_url)) as bot:
        async with aiohttp.ClientSession() as s:
            for token in odd:
                async with s.get(URL(bot.base_url.rstrip("/") + "/export/" + token, encoded=True)) as resp:
                    assert resp.status == 404, (token[:40], resp.status, await resp.text())
        await _good_push_still_works(bot)


async def test_stalled_body_is_cut_off_with_408(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with running_bot(make_config(db_url), read_timeout=0.5) as bot:
        query, body = bot.wechat.sign_query(text_xml("o_slow_body", "help", bot.wechat.next_msg_id()))
        path = str(aiohttp.client.URL(bot.wechat.url).with_query(query).raw_path_qs)
        reader, writer = await asyncio.open_connection(bot.server.host, bot.server.port)
        try:
            writer.write((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\n"
                          f"Content-Length: {len(body.encode())}\r\n\r\n").encode() + body.encode()[:20])
            await writer.drain()  # and then nothing: the rest never comes
            status_line = await asyncio.wait_for(reader.readline(), 10)
        finally:
            writer.close()
        assert status_line.startswith(b"HTTP/1.1 408"), status_line
        assert "body not received within" in caplog.text
        await _good_push_still_works(bot)


def _sign_inner(bot: RunningBot, inner: str) -> tuple[dict[str, str], str]:
    """Sign and encrypt arbitrary inner text, bypassing the fake's XML handling."""
    from tests.fakes.wechat_server import encrypt

    query, _ = bot.wechat.sign_query("<xml><ToUserName>gh</ToUserName></xml>")
    enc = encrypt(bot.wechat.aes_key, bot.wechat.app_id, inner, b"0123456789abcdef")
    query["msg_signature"] = signature(bot.wechat.token, query["timestamp"], query["nonce"], enc)
    return query, f"<xml><ToUserName><![CDATA[gh]]></ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt></xml>"


async def test_ciphertext_for_another_appid(bot: RunningBot) -> None:
    if bot.wechat.mode == "plain":
        pytest.skip("plain mode has no ciphertext")
    from tests.fakes.wechat_server import encrypt

    query, _ = bot.wechat.sign_query("<xml><ToUserName>gh</ToUserName></xml>")
    enc = encrypt(bot.wechat.aes_key, "wxsomeoneelse00000", text_xml("o", "help", 1), b"0123456789abcdef")
    query["msg_signature"] = signature(bot.wechat.token, query["timestamp"], query["nonce"], enc)
    status, _ = await _post(bot, query, f"<xml><Encrypt><![CDATA[{enc}]]></Encrypt></xml>")
    assert status == 403
    await _good_push_still_works(bot)


async def test_garbage_ciphertext(bot: RunningBot) -> None:
    if bot.wechat.mode == "plain":
        pytest.skip("plain mode has no ciphertext")
    for enc in ("!!!not-base64!!!", "QUJD", "A" * 64):
        query, _ = bot.wechat.sign_query("<xml><ToUserName>gh</ToUserName></xml>")
        query["msg_signature"] = signature(bot.wechat.token, query["timestamp"], query["nonce"], enc)
        status, _ = await _post(bot, query, f"<xml><Encrypt><![CDATA[{enc}]]></Encrypt></xml>")
        assert status == 400
    await _good_push_still_works(bot)


async def test_encrypted_push_without_a_key_is_refused(db_url: str) -> None:
    async with running_bot(make_config(db_url, encoding_aes_key=""), mode="plain") as bot:
        query, body = bot.wechat.sign_query(text_xml("o", "help", 1))
        query["encrypt_type"] = "aes"
        query["msg_signature"] = "0" * 40
        assert (await _post(bot, query, body))[0] == 400
        await _good_push_still_works(bot)


async def test_plain_push_to_a_safe_mode_bot_is_refused(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    # A captured push URL carries a valid `signature`, which covers only timestamp and nonce:
    # in safe mode it must not sign a plain body of the attacker's choosing.
    async with running_bot(make_config(db_url), mode="safe") as bot:
        query, _ = bot.wechat.sign_query(text_xml("o_victim", "export", bot.wechat.next_msg_id()))
        body = text_xml("o_victim", "export", bot.wechat.next_msg_id())
        plain = {k: v for k, v in query.items() if k not in ("encrypt_type", "msg_signature")}
        status, _ = await _post(bot, plain, body)
        assert status == 403
        assert "clear wechat.encoding_aes_key" in caplog.text
        assert await member(bot, "o_victim") is None
        await _good_push_still_works(bot)


async def test_plain_mode_signature_signs_one_body_only(db_url: str) -> None:
    # A captured plain push URL: the same body again is WeChat's retry and gets the stored
    # reply; any other body under that signature is a forgery, at this worker or another.
    cfg = make_config(db_url)
    async with running_bot(cfg, mode="plain") as bot, running_bot(cfg, mode="plain") as other:
        genuine = text_xml("o_nonce", "help", bot.wechat.next_msg_id())
        query, body = bot.wechat.sign_query(genuine, nonce="424242")
        status, first = await _post(bot, query, body)
        assert status == 200 and "Commands" in first
        forged = text_xml("o_nonce", "export", bot.wechat.next_msg_id())
        assert (await _post(bot, query, forged))[0] == 403
        assert (await _post(other, query, forged))[0] == 403
        assert await _post(bot, query, body) == (200, first)  # WeChat's retry
        assert await _post(other, query, body) == (200, first)
        await _good_push_still_works(bot)


async def test_old_plain_nonces_are_forgotten(db_url: str) -> None:
    from scheduler.clock import FixedClock
    from storage.models import PushNonce

    clock = FixedClock(datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc))
    async with running_bot(make_config(db_url), mode="plain", clock=clock) as bot:
        for _ in range(3):
            await say(bot, "o_prune", "help")
        clock.advance(minutes=11)  # two clock-skew windows and then some
        await say(bot, "o_prune", "help")
        with bot.services.db.session() as s:
            assert (s.execute(sa.select(sa.func.count()).select_from(PushNonce))).scalar_one() == 1


# --- exactly once ---------------------------------------------------------------------------

class CountingHandler:
    """The real handlers, counted: how often did the bot run each push?"""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: Counter[str] = Counter()
        self.delay = delay

    def __call__(self, ctx: Context) -> Reply:
        self.calls[ctx.event.dedupe_key] += 1
        if self.delay:
            time.sleep(self.delay)  # handlers run on the database thread; this one is slow
        return core.handle(ctx)


async def test_same_msgid_three_times_concurrently_runs_once(db_url: str) -> None:
    handler = CountingHandler(delay=0.2)
    async with running_bot(make_config(db_url), handler=handler) as bot:
        xml = text_xml("o_dup", "help", 777000111)
        answers = await asyncio.gather(*(bot.wechat.push(xml) for _ in range(3)))
        assert handler.calls == Counter({"msg:o_dup:777000111": 1})
        assert {a.content for a in answers} == {answers[0].content} and "Commands" in (answers[0].content or "")


async def test_retry_after_restart_is_a_duplicate(db_url: str) -> None:
    cfg = make_config(db_url)
    first = CountingHandler()
    async with running_bot(cfg, handler=first) as bot:
        xml = text_xml("o_restart", "lang en", 888000222)
        answer = await bot.wechat.push(xml)
    second = CountingHandler()
    async with running_bot(cfg, handler=second) as bot:
        again = await bot.wechat.push(xml)
    assert first.calls["msg:o_restart:888000222"] == 1 and second.calls["msg:o_restart:888000222"] == 0
    assert again.content == answer.content == "From now on I will answer in English."


async def test_a_stored_reply_belongs_to_its_sender(db_url: str) -> None:
    # MsgIds are WeChat's, but nothing stops another openid from sending one already used:
    # it must get its own answer, never the stored one (here, a one-time export link).
    async with running_bot(make_config(db_url)) as bot:
        await say(bot, "o_owner", "lang en")
        mine = await bot.wechat.push(text_xml("o_owner", "export", 555000111))
        assert "/export/" in (mine.content or "")
        theirs = await bot.wechat.push(text_xml("o_thief", "help", 555000111))
        assert "/export/" not in (theirs.content or "") and "Commands" in (theirs.content or "")
        retry = await bot.wechat.push(text_xml("o_owner", "export", 555000111))
        assert retry.content == mine.content  # the owner's retry still gets the stored reply


async def test_a_retry_after_a_minute_gets_no_stored_reply(db_url: str) -> None:
    from scheduler.clock import FixedClock

    clock = FixedClock(datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc))
    # The sweeper is as good as off: the stored reply itself must not be served once stale.
    async with running_bot(make_config(db_url), clock=clock, reply_sweep_every=3600) as bot:
        xml = text_xml("o_ttl", "export", bot.wechat.next_msg_id())
        first = await bot.wechat.push(xml)
        assert "/export/" in (first.content or "")
        clock.advance(seconds=30)
        assert (await bot.wechat.push(xml)).content == first.content  # WeChat's retry
        clock.advance(seconds=31)
        late = await bot.wechat.push(xml)
        assert late.status == 200 and late.body == "success"


async def test_stored_replies_are_swept_after_a_minute(db_url: str) -> None:
    from scheduler.clock import FixedClock

    def stored(bot: RunningBot) -> int:
        with bot.services.db.session() as s:
            return (s.execute(sa.select(sa.func.count()).select_from(InboundPush)
                              .where(col(InboundPush.reply).is_not(None)))).scalar_one()

    clock = FixedClock(datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc))
    async with running_bot(make_config(db_url), clock=clock, reply_sweep_every=0.05) as bot:
        await say(bot, "o_sweep", "export")
        assert stored(bot) == 1
        clock.advance(seconds=61)
        await say(bot, "o_sweep", "help")  # a fresh reply, which the sweeper must leave alone
        deadline = time.monotonic() + 10
        while stored(bot) > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # a few more sweeps
        with bot.services.db.session() as s:
            replies = (s.execute(sa.select(InboundPush.reply).order_by(InboundPush.received_at))).scalars().all()
        assert replies[0] is None and "Commands" in (replies[1] or "")


async def test_events_dedupe_on_sender_time_and_event(db_url: str) -> None:
    handler = CountingHandler()
    async with running_bot(make_config(db_url), handler=handler) as bot:
        ts = int(bot.services.clock.now().timestamp())
        for _ in range(2):
            await bot.wechat.push(event_xml("o_evt", "subscribe", create_time=ts))
        await bot.wechat.push(event_xml("o_evt", "CLICK", key="help", create_time=ts))
        assert handler.calls == Counter({f"evt:o_evt:{ts}:subscribe": 1, f"evt:o_evt:{ts}:CLICK": 1})
        with bot.services.db.session() as s:
            assert (s.execute(sa.select(sa.func.count()).select_from(InboundPush))).scalar_one() == 2


# --- answering in time ------------------------------------------------------------------------

async def test_slow_handler_answers_success_and_replies_through_the_outbox(db_url: str) -> None:
    handler = CountingHandler(delay=0.6)
    async with running_bot(make_config(db_url), handler=handler, answer_deadline=0.2) as bot:
        answer = await bot.wechat.push(text_xml("o_slow", "help", 999000333))
        assert answer.status == 200 and answer.body == "success"
        await bot.services.dispatcher.drain()
        with bot.services.db.session() as s:
            rows = (s.execute(sa.select(OutboxMessage))).scalars().all()
        assert len(rows) == 1 and "Commands" in rows[0].payload and rows[0].priority == 0
        # WeChat does not retry a push that was answered; if it did, nothing would run twice.
        await bot.wechat.push(text_xml("o_slow", "help", 999000333))
        assert handler.calls["msg:o_slow:999000333"] == 1


async def test_retry_during_slow_handling_waits_for_the_first_result(db_url: str) -> None:
    handler = CountingHandler(delay=0.4)
    async with running_bot(make_config(db_url), handler=handler) as bot:
        xml = text_xml("o_wait", "help", 999000444)
        first = asyncio.create_task(bot.wechat.push(xml))
        await asyncio.sleep(0.1)
        second = await bot.wechat.push(xml)
        assert (await first).content == second.content and "Commands" in (second.content or "")
        assert handler.calls["msg:o_wait:999000444"] == 1


async def test_failing_handler_apologises_and_the_next_push_works(db_url: str) -> None:
    def broken(ctx: Context) -> Reply:
        if ctx.event.text == "boom":
            raise RuntimeError("bug")
        return core.handle(ctx)

    async with running_bot(make_config(db_url), handler=broken) as bot:
        answer = await bot.wechat.push(text_xml("o_err", "boom", 123123))
        assert answer.status == 200 and "出了点问题" in (answer.content or "")
        again = await bot.wechat.push(text_xml("o_err", "boom", 123123))
        assert again.content == answer.content
        assert "可用命令" in await say(bot, "o_err", "帮助")


async def test_held_messages_are_released_by_the_members_next_message(db_url: str) -> None:

    async with running_bot(make_config(db_url), mode="plain") as bot:
        await say(bot, "o_held", "help")
        m = await member(bot, "o_held")
        assert m is not None and m.id is not None
        now = bot.services.clock.now()
        with bot.services.db.session() as s:
            for n in range(1, 5):
                tell(s, member_id=m.id, reply=TextReply(f"later {n}"), now=now)
            s.execute(sa.update(OutboxMessage).values(status="held"))
        # The three most important ride on the answer ("while you were away…"); the rest is due.
        answer = await say(bot, "o_held", "help")
        assert all(f"later {n}" in answer for n in (1, 2, 3)) and "later 4" not in answer
        with bot.services.db.session() as s:
            statuses = (s.execute(sa.select(OutboxMessage.status).order_by(OutboxMessage.id))).scalars().all()
        assert statuses == ["sent", "sent", "sent", "pending"]


# --- our text never breaks the reply XML ----------------------------------------------------

HOSTILE_NAME = "M]]></Content></xml>"
HOSTILE_TITLE = "CFO]]></Content><MsgType><![CDATA[news]]></MsgType>"
HOSTILE_COMPANY = "Acme]]><![CDATA[</Content><MsgType>music</MsgType>"


class RecordingHandler:
    """The real handlers; remembers the text each member was answered, to compare with the XML."""

    def __init__(self) -> None:
        self.last: dict[str, str] = {}

    def __call__(self, ctx: Context) -> Reply:
        from handlers.replies import as_plain_text

        reply = core.handle(ctx)
        self.last[ctx.event.member_id] = as_plain_text(reply)
        return reply


@pytest.mark.parametrize("mode", ["plain", "safe"])
async def test_hostile_card_values_never_break_a_reply(db_url: str, mode: str) -> None:
    handler = RecordingHandler()
    async with running_bot(make_config(db_url), mode=mode, handler=handler) as bot:

        async def ask(openid: str, command: str, *expected: str) -> str:
            # The fake parses every answer strictly: well-formed, each element once.
            answer = await bot.wechat.push(text_xml(openid, command, bot.wechat.next_msg_id()))
            assert answer.status == 200 and answer.xml is not None, answer.body
            assert answer.xml["MsgType"] == "text" and answer.xml["ToUserName"] == openid
            assert answer.xml["Content"] == handler.last[openid]
            for needle in expected:
                assert needle in answer.xml["Content"], (command, needle, answer.xml["Content"])
            return answer.xml["Content"]

        for openid in ("o_m", "o_b", "o_c"):
            await ask(openid, "lang en")
        await ask("o_m", f"set name {HOSTILE_NAME}")
        await ask("o_m", f"set title {HOSTILE_TITLE}")
        await ask("o_m", f"set company {HOSTILE_COMPANY}")
        code = re.search(r"join ([A-Z2-9]+)", await ask("o_m", "invite"))
        assert code
        await ask("o_b", "set name Ben")
        await ask("o_b", f"join {code.group(1)}", HOSTILE_NAME)  # a choices reply: how well …?
        code = re.search(r"join ([A-Z2-9]+)", await ask("o_b", "invite"))
        assert code
        await ask("o_c", "set name Cat")
        await ask("o_c", f"join {code.group(1)}")
        await ask("o_b", "contacts", HOSTILE_NAME)
        await ask("o_c", "find CFO", HOSTILE_NAME, HOSTILE_TITLE)
        await ask("o_c", "intro 1 Could you introduce us?")
        await ask("o_b", "requests", HOSTILE_NAME, "accept ")  # a choices reply
        await ask("o_m", "card", HOSTILE_NAME, HOSTILE_TITLE, HOSTILE_COMPANY)
        await ask("o_m", "hi]]></Content><a>", "hi]]></Content><a>")  # an echo of what they typed
        # The To/From names go into CDATA too.
        odd = "o]]></ToUserName><MsgType>news</MsgType>"
        answer = await bot.wechat.push(text_xml(odd, "help", bot.wechat.next_msg_id(), to="gh]]>x"))
        assert answer.xml is not None and answer.xml["MsgType"] == "text"
        assert answer.xml["ToUserName"] == odd and answer.xml["FromUserName"] == "gh]]>x"
        assert answer.xml["Content"] == handler.last[odd]


async def test_nonce_with_markup_is_refused(bot: RunningBot) -> None:
    # The nonce is echoed into the encrypted reply's CDATA.
    for nonce in ("1]]><x>", "a b", "n" * 65, "<"):
        query, body = bot.wechat.sign_query(text_xml("o", "help", bot.wechat.next_msg_id()), nonce=nonce)
        assert (await _post(bot, query, body))[0] == 400
    await _good_push_still_works(bot)
