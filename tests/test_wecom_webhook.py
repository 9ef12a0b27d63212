"""The WeCom callback adapter over real HTTP: URL check, messages, events, card clicks, refusals."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from yarl import URL

from bot.platforms.wecom.webhook import (
    MAX_DEDUPE_KEY,
    WeComCallbacks,
)
from bot.platforms.inbound import PushRejected
from handlers.events import EventKind
from handlers.replies import NoReply, TextReply
from tests.fakes.wechat_server import encrypt, signature
from tests.fakes.wecom_server import FakeWeComServer
from tests.wecom_kit import REPLACE_NAME, WeComTestApp, running_wecom_app

TOKEN = "wecomtesttoken"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
CORP = "ww0123456789abcdef"
AGENT = 1000002
NOW = 1_772_000_000  # the fake's clock and the adapter's, so freshness is exact


@dataclass
class Rig:
    """The app under test and a fake WeCom pointed at it."""

    app: WeComTestApp
    wecom: FakeWeComServer


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    """The adapter in a tiny app, and a fake WeCom that calls it."""
    callbacks = WeComCallbacks(token=TOKEN, encoding_aes_key=KEY, corp_id=CORP, agent_id=AGENT)
    async with running_wecom_app(callbacks, now=lambda: float(NOW)) as app:
        yield Rig(app=app, wecom=FakeWeComServer(url=app.url, token=TOKEN, aes_key=KEY, corp_id=CORP,
                                                 agent_id=AGENT, clock=lambda: float(NOW)))


async def _get(url: str | URL, params: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url, params=params) as resp:
        return resp.status, await resp.text()


# -- URL verification -----------------------------------------------------------------------------

async def test_url_verification_returns_the_decrypted_echostr(rig: Rig) -> None:
    assert await rig.wecom.verify_url("7355608123456789012") == (200, "7355608123456789012")


async def test_url_verification_refuses_a_bad_signature_and_another_corp(rig: Rig) -> None:
    query = rig.wecom.verify_query("1234")
    assert (await _get(rig.app.url, {**query, "msg_signature": "0" * 40}))[0] == 403
    assert (await _get(rig.app.url, {k: v for k, v in query.items() if k != "msg_signature"}))[0] == 403
    assert (await _get(rig.app.url, rig.wecom.verify_query("1234", corp_id="wwsomeoneelse00000")))[0] == 403
    assert (await _get(rig.app.url, rig.wecom.verify_query("1234", timestamp=NOW - 3600)))[0] == 403
    assert (await _get(rig.app.url, {k: v for k, v in query.items() if k != "echostr"}))[0] == 400
    assert [r.reason for r in rig.app.refused] == [
        "bad msg_signature", "bad msg_signature", "echostr for another corp id", "stale timestamp",
        "missing echostr"]


async def test_url_verification_survives_a_plus_decoded_as_space(rig: Rig) -> None:
    """WeCom URL-encodes the echostr; one that arrives with '+' unencoded still verifies."""
    for i in range(200):
        query = rig.wecom.verify_query(f"echo{i}", nonce=str(1000 + i))
        if "+" in query["echostr"]:
            break
    assert "+" in query["echostr"]
    raw = "&".join(f"{k}={v}" for k, v in query.items())  # '+' left as is: a form-decoder's space
    status, text = await _get(URL(f"{rig.app.url}?{raw}", encoded=True))
    assert (status, text) == (200, f"echo{i}")


# -- messages and events --------------------------------------------------------------------------

async def test_a_text_message_is_read_and_answered_encrypted(rig: Rig) -> None:
    answer = await rig.wecom.push(rig.wecom.text("zhangsan", "hello ]]> <b>&", msg_id=42))
    assert answer.status == 200 and answer.content == "echo: hello ]]> <b>&"
    assert answer.reply is not None
    assert (answer.reply["ToUserName"], answer.reply["FromUserName"], answer.reply["MsgType"]) == \
        ("zhangsan", CORP, "text")
    (cb,) = rig.app.accepted
    assert (cb.event.kind, cb.event.platform, cb.event.member_id, cb.event.text) == \
        (EventKind.TEXT, "wecom", "zhangsan", "hello ]]> <b>&")
    assert cb.event.dedupe_key == "wecom:msg:zhangsan:42" and cb.card is None


@pytest.mark.parametrize(("event", "key", "kind"), [
    ("subscribe", None, EventKind.SUBSCRIBE),
    ("unsubscribe", None, EventKind.UNSUBSCRIBE),
    ("enter_agent", "", EventKind.OTHER),
    ("LOCATION", None, EventKind.OTHER),
    ("view", "https://example.com/", EventKind.OTHER),
])
async def test_events_map_to_our_kinds_and_get_an_empty_200(
    rig: Rig, event: str, key: str | None, kind: EventKind
) -> None:
    answer = await rig.wecom.push(rig.wecom.event("lisi", event, key=key, create_time=NOW - 1))
    assert (answer.status, answer.body) == (200, "")
    (cb,) = rig.app.accepted
    assert cb.event.kind is kind and cb.event.member_id == "lisi"
    assert cb.event.dedupe_key == f"wecom:evt:lisi:{NOW - 1}:{event}"


async def test_a_menu_click_is_a_click_with_its_key(rig: Rig) -> None:
    answer = await rig.wecom.push(rig.wecom.event("lisi", "click", key="my card"))
    assert answer.content == "command: my card"
    (cb,) = rig.app.accepted
    assert (cb.event.kind, cb.event.key) == (EventKind.CLICK, "my card")


async def test_a_card_click_runs_its_command_and_greys_the_buttons(rig: Rig) -> None:
    xml = rig.wecom.card_click("wangwu", key="accept 12", task_id="intro-12-ab12", response_code="RC1",
                               create_time=NOW)
    answer = await rig.wecom.push(xml)
    assert answer.status == 200 and answer.replace_name == REPLACE_NAME
    assert answer.reply is not None and answer.reply["ToUserName"] == "wangwu"
    (cb,) = rig.app.accepted
    assert (cb.event.kind, cb.event.key, cb.event.member_id) == (EventKind.CLICK, "accept 12", "wangwu")
    assert cb.card is not None
    assert (cb.card.task_id, cb.card.event_key, cb.card.response_code, cb.card.card_type) == \
        ("intro-12-ab12", "accept 12", "RC1", "button_interaction")
    assert cb.event.dedupe_key == f"wecom:evt:wangwu:{NOW}:template_card_event:intro-12-ab12:accept 12"


async def test_two_clicks_in_one_second_on_other_buttons_or_cards_are_distinct(rig: Rig) -> None:
    for key, task in (("accept 12", "t1"), ("decline 12", "t1"), ("accept 12", "t2"), ("accept 12", "t1")):
        await rig.wecom.push(rig.wecom.card_click("wangwu", key=key, task_id=task, response_code="R",
                                                  create_time=NOW))
    keys = [cb.event.dedupe_key for cb in rig.app.accepted]
    assert len(set(keys)) == 3 and keys[0] == keys[3]  # the same click twice is one (a retry)


async def test_a_long_card_key_still_fits_the_dedupe_column(rig: Rig) -> None:
    long_key = "note " + "长" * 300
    for key in (long_key, long_key + "!"):
        await rig.wecom.push(rig.wecom.card_click("u" * 64, key=key, task_id="t" * 128,
                                                  response_code="R", create_time=NOW))
    first, second = (cb.event.dedupe_key for cb in rig.app.accepted)
    assert first != second and len(first) <= MAX_DEDUPE_KEY and len(second) <= MAX_DEDUPE_KEY
    assert rig.app.accepted[0].event.key == long_key


# -- refusals, and the next good callback still works -----------------------------------------------

async def test_refusals_then_a_good_callback(rig: Rig) -> None:
    w = rig.wecom
    xml = w.text("zhangsan", "hi", msg_id=7)
    query, body = w.seal(xml)

    other_corp = w.seal(xml, corp_id="wwsomeoneelse00000")
    assert (await w.post_raw(*other_corp)).status == 403
    assert (await w.post_raw({**query, "msg_signature": "f" * 40}, body)).status == 403
    assert (await w.post_raw({k: v for k, v in query.items() if k != "msg_signature"}, body)).status == 403
    assert (await w.post_raw(*w.seal(xml, timestamp=NOW - 301))).status == 403  # stale
    for ts in ("", "12a", "１７７２", "²", "-5", "1" * 13):
        assert (await w.post_raw({**query, "timestamp": ts}, body)).status == 400, ts
    for nonce in ("", "a<b", "x" * 65, "a]]>b"):
        assert (await w.post_raw({**query, "nonce": nonce}, body)).status == 400, nonce
    dtd = '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY e "x">]>' + body
    assert (await w.post_raw(query, dtd)).status == 400
    inner_dtd = w.seal('<!DOCTYPE xml [<!ENTITY e "x">]>' + xml)
    assert (await w.post_raw(*inner_dtd)).status == 400
    assert (await w.post_raw(query, "<xml><Encrypt>")).status == 400
    assert (await w.post_raw(query, b"\xff\xfe<xml/>")).status == 400
    assert (await w.post_raw(query, "<xml><ToUserName>x</ToUserName></xml>")).status == 400
    assert (await w.post_raw(*w.seal("<xml><Content>no type</Content></xml>"))).status == 400
    assert (await w.post_raw(*w.seal("<xml><MsgType>text</MsgType>"))).status == 400
    assert (await w.post_raw(query, "<xml>" + "x" * 70_000 + "</xml>")).status == 413
    assert not rig.app.accepted
    reasons = [r.reason for r in rig.app.refused]
    assert reasons[:4] == ["ciphertext for another corp id", "bad msg_signature", "bad msg_signature",
                           "stale timestamp"]
    assert "XML with DTD or entity declarations" in reasons and "malformed XML" in reasons

    answer = await w.post_raw(query, body)
    assert (answer.status, answer.content) == (200, "echo: hi")
    assert [cb.event.dedupe_key for cb in rig.app.accepted] == ["wecom:msg:zhangsan:7"]


async def test_a_callback_for_another_app_of_the_corp_is_refused(rig: Rig) -> None:
    other_app = FakeWeComServer(url=rig.app.url, token=TOKEN, aes_key=KEY, corp_id=CORP, agent_id=1000003,
                                clock=lambda: float(NOW))
    assert (await other_app.push(other_app.text("zhangsan", "hi"))).status == 403


async def test_undecryptable_encrypt_is_400() -> None:
    callbacks = WeComCallbacks(token=TOKEN, encoding_aes_key=KEY, corp_id=CORP)
    garbage = "bm90IGEgY2lwaGVydGV4dA=="  # base64, but not a multiple of the block size
    query = {"msg_signature": signature(TOKEN, str(NOW), "1", garbage), "timestamp": str(NOW), "nonce": "1"}
    body = f"<xml><ToUserName>{CORP}</ToUserName><Encrypt>{garbage}</Encrypt></xml>".encode()
    with pytest.raises(PushRejected) as info:
        callbacks.read(query, body, now=NOW)
    assert (info.value.status, info.value.reason) == (400, "undecryptable Encrypt")


def test_render_makes_every_value_cdata_safe_and_no_reply_empty() -> None:
    callbacks = WeComCallbacks(token=TOKEN, encoding_aes_key=KEY, corp_id=CORP)
    enc = encrypt(KEY, CORP, FakeWeComServer(url="", token=TOKEN, aes_key=KEY, corp_id=CORP)
                  .text("a]]>b", "x", msg_id=1, create_time=NOW), b"0" * 16)
    query = {"msg_signature": signature(TOKEN, str(NOW), "99", enc), "timestamp": str(NOW), "nonce": "99"}
    cb = callbacks.read(query, f"<xml><Encrypt><![CDATA[{enc}]]></Encrypt></xml>".encode(), now=NOW)
    assert callbacks.render(cb, NoReply()) == ""
    wecom = FakeWeComServer(url="", token=TOKEN, aes_key=KEY, corp_id=CORP)
    answer = wecom._read_answer(200, callbacks.render(cb, TextReply("x]]>y\x00"), now=NOW), query)
    assert answer.reply is not None
    assert answer.reply["ToUserName"] == "a]]>b" and answer.content == "x]]>y"
    assert answer.reply["CreateTime"] == str(NOW)
    with pytest.raises(ValueError):
        callbacks.render_update_button(cb)  # not a card click


def test_a_bad_aes_key_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="43"):
        WeComCallbacks(token=TOKEN, encoding_aes_key="short", corp_id=CORP)
    assert re.fullmatch(r"WeComCallbacks\(.*\)", repr(WeComCallbacks(token=TOKEN, encoding_aes_key=KEY,
                                                                     corp_id=CORP)))
    assert TOKEN not in repr(WeComCallbacks(token=TOKEN, encoding_aes_key=KEY, corp_id=CORP))
