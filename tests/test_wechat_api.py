"""The WeChat API client against the fake API over HTTP, with the token shared in the database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.clock import FixedClock
from bot.platforms.official_account.api import (
    ErrorKind,
    TokenFetchError,
    TransientAPIError,
    WeChatAPI,
    WeChatAPIError,
    classify,
)
from handlers.replies import Choice, ChoicesReply, TextReply, as_plain_text
from storage import tokens
from storage.db import Database
from tests.fakes.fake_api import (
    APP_ID,
    APP_SECRET,
    CUSTOM_SEND_PATH,
    QRCODE_CREATE_PATH,
    TEMPLATE_SEND_PATH,
    TOKEN_PATH,
    FakeWeChatAPI,
    fake_api,  # noqa: F401  (fixture)
)

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
CHOICES = ChoicesReply(
    text="Li Wei asks to be introduced to Zhang Min.",
    choices=(Choice("Accept", "accept 12"), Choice("Decline", "decline 12")),
    footer="Reply within 7 days.",
)

MakeAPI = Callable[..., WeChatAPI]


def _our_log(caplog: pytest.LogCaptureFixture) -> str:
    """Everything our own modules logged (SQLAlchemy's DEBUG log echoes SQL parameters)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("bot", "storage")))


@pytest.fixture
def clock() -> FixedClock:
    """The time every client in a test reads."""
    return FixedClock(NOW)


@pytest.fixture
async def make_api(
    db: Database, fake_api: FakeWeChatAPI, clock: FixedClock  # noqa: F811
) -> AsyncIterator[MakeAPI]:
    """Build clients (one per simulated worker) on the fake; all are closed afterwards."""
    made: list[WeChatAPI] = []

    def make(**kwargs: object) -> WeChatAPI:
        options: dict[str, object] = {"db": db, "app_id": APP_ID, "app_secret": APP_SECRET,
                                      "base_url": fake_api.base_url, "clock": clock, "timeout": 0.3}
        options.update(kwargs)
        api = WeChatAPI(**options)  # type: ignore[arg-type]
        made.append(api)
        return api

    yield make
    for api in made:
        await api.close()


async def test_text_is_sent_as_utf8_json_with_the_token(
    make_api: MakeAPI, fake_api: FakeWeChatAPI  # noqa: F811
) -> None:
    await make_api().send_reply("o-alice", TextReply("你好, Alice"))
    [call] = fake_api.calls_to(CUSTOM_SEND_PATH)
    assert call.body == {"touser": "o-alice", "msgtype": "text", "text": {"content": "你好, Alice"}}
    # WeChat would show \u escapes literally, so the Chinese must travel as UTF-8.
    assert "你好".encode() in call.raw
    [token_call] = fake_api.calls_to(TOKEN_PATH)
    assert token_call.query == {"grant_type": "client_credential", "appid": APP_ID,
                                "secret": APP_SECRET}
    assert call.query == {"access_token": "fake-token-1"} and call.ok


async def test_choices_go_as_msgmenu_whose_taps_send_the_commands(
    make_api: MakeAPI, fake_api: FakeWeChatAPI  # noqa: F811
) -> None:
    await make_api().send_reply("o-alice", CHOICES)
    [call] = fake_api.calls_to(CUSTOM_SEND_PATH)
    assert call.ok and call.body["msgtype"] == "msgmenu"
    menu = call.body["msgmenu"]
    assert menu["head_content"] == CHOICES.text
    assert menu["list"] == [{"id": "1", "content": "accept 12"}, {"id": "2", "content": "decline 12"}]
    assert menu["tail_content"].startswith("Reply within 7 days.")
    assert "Accept: accept 12" in menu["tail_content"]


async def test_msgmenu_refused_with_40200_falls_back_to_one_text(
    make_api: MakeAPI, fake_api: FakeWeChatAPI  # noqa: F811
) -> None:
    fake_api.msgmenu_allowed = False
    api = make_api()
    await api.send_reply("o-alice", CHOICES)
    first, second = fake_api.calls_to(CUSTOM_SEND_PATH)
    assert first.body["msgtype"] == "msgmenu" and first.errcode == 40200
    assert second.ok and second.body["text"] == {"content": as_plain_text(CHOICES)}
    # The account cannot do msgmenu; the next choices go straight to text.
    await api.send_reply("o-bob", CHOICES)
    third = fake_api.calls_to(CUSTOM_SEND_PATH)[2]
    assert third.ok and third.body["msgtype"] == "text" and len(fake_api.calls) == 4


async def test_template_carries_client_msg_id(
    make_api: MakeAPI, fake_api: FakeWeChatAPI  # noqa: F811
) -> None:
    data = {"thing1": {"value": "2 introductions are waiting"}}
    msgid = await make_api().send_template("o-alice", template_id="T-1", data=data,
                                           url="https://example.org/x", client_msg_id="k-1")
    [call] = fake_api.calls_to(TEMPLATE_SEND_PATH)
    assert call.body == {"touser": "o-alice", "template_id": "T-1", "data": data,
                         "url": "https://example.org/x", "client_msg_id": "k-1"}
    assert isinstance(msgid, int)


async def test_qrcode_with_string_scene(make_api: MakeAPI, fake_api: FakeWeChatAPI) -> None:  # noqa: F811
    qr = await make_api().create_qrcode("invite:Ab3", expire_seconds=7 * 86400)
    [call] = fake_api.calls_to(QRCODE_CREATE_PATH)
    assert call.body == {"expire_seconds": 604800, "action_name": "QR_STR_SCENE",
                         "action_info": {"scene": {"scene_str": "invite:Ab3"}}}
    assert qr.ticket == "gQH/ticket+2==" and qr.url == "http://weixin.qq.com/q/fake2"
    assert qr.expire_seconds == 604800
    assert qr.image_url == "https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket=gQH%2Fticket%2B2%3D%3D"
    with pytest.raises(ValueError):
        await make_api().create_qrcode("x" * 65, expire_seconds=60)


async def test_two_workers_share_one_token(
    db: Database, make_api: MakeAPI, fake_api: FakeWeChatAPI  # noqa: F811
) -> None:
    worker_a, worker_b = make_api(), make_api()
    await asyncio.gather(*(w.send_text(f"o-{i}", "hi") for i in range(5) for w in (worker_a, worker_b)))
    assert fake_api.token_fetches == 1
    assert {c.query["access_token"] for c in fake_api.calls_to(CUSTOM_SEND_PATH)} == {"fake-token-1"}
    # A worker started later reads the stored token instead of fetching one.
    await make_api().send_text("o-late", "hi")
    assert fake_api.token_fetches == 1
    with db.session() as s:
        row = tokens.get(s, app_id=APP_ID)
    assert row is not None and row.token == "fake-token-1" and row.refresh_lock_until is None
    assert row.expires_at == NOW + timedelta(seconds=7200)


async def test_token_refreshed_ahead_of_expiry(
    make_api: MakeAPI, fake_api: FakeWeChatAPI, clock: FixedClock  # noqa: F811
) -> None:
    api = make_api()
    await api.send_text("o-a", "one")
    clock.advance(seconds=7200 - 301)
    await api.send_text("o-a", "two")
    assert fake_api.token_fetches == 1
    clock.advance(seconds=2)  # under five minutes left
    await api.send_text("o-a", "three")
    assert fake_api.token_fetches == 2
    assert fake_api.calls_to(CUSTOM_SEND_PATH)[-1].query["access_token"] == "fake-token-2"


async def test_expired_token_refreshed_once_for_many_concurrent_sends(
    make_api: MakeAPI, fake_api: FakeWeChatAPI  # noqa: F811
) -> None:
    workers = [make_api(), make_api()]
    await workers[0].send_text("o-warm", "warm up")
    fake_api.expire_tokens()
    await asyncio.gather(*(w.send_text(f"o-{i}", "hello") for i in range(5) for w in workers))
    assert fake_api.token_fetches == 2
    sends = fake_api.calls_to(CUSTOM_SEND_PATH)
    assert len([c for c in sends if c.ok]) == 11
    assert all(c.errcode == 42001 for c in sends if not c.ok)


async def test_refused_token_refreshed_and_retried_once_then_given_up(
    make_api: MakeAPI, fake_api: FakeWeChatAPI  # noqa: F811
) -> None:
    api = make_api()
    fake_api.fail(CUSTOM_SEND_PATH, 40001, times=1)
    await api.send_text("o-a", "recovers")
    assert fake_api.token_fetches == 2 and fake_api.calls_to(CUSTOM_SEND_PATH)[-1].ok

    fake_api.fail(CUSTOM_SEND_PATH, 40001, times=2)
    with pytest.raises(WeChatAPIError) as caught:
        await api.send_text("o-a", "gives up")
    assert caught.value.errcode == 40001 and caught.value.kind is ErrorKind.TOKEN
    assert fake_api.token_fetches == 3
    assert len(fake_api.calls_to(CUSTOM_SEND_PATH)) == 4


@pytest.mark.parametrize("failure", ["timeout", "http500"])
async def test_no_answer_is_transient(
    make_api: MakeAPI, fake_api: FakeWeChatAPI, failure: str  # noqa: F811
) -> None:
    api = make_api()
    if failure == "timeout":
        fake_api.hang(CUSTOM_SEND_PATH)
    else:
        fake_api.fail_http(CUSTOM_SEND_PATH, 502)
    with pytest.raises(TransientAPIError) as caught:
        await api.send_text("o-a", "hi")
    assert caught.value.errcode is None and caught.value.kind is ErrorKind.RETRY
    assert "access_token" not in str(caught.value)


async def test_wrong_secret_names_the_setting_and_frees_the_lease(
    db: Database, make_api: MakeAPI, fake_api: FakeWeChatAPI, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TokenFetchError) as caught:
        await make_api(app_secret="not-the-secret").send_text("o-a", "hi")
    assert caught.value.errcode == 40125 and caught.value.kind is ErrorKind.RETRY
    assert "wechat.app_secret" in str(caught.value) and "not-the-secret" not in str(caught.value)
    assert not fake_api.calls_to(CUSTOM_SEND_PATH)
    with db.session() as s:
        row = tokens.get(s, app_id=APP_ID)
    assert row is not None and row.token is None and row.refresh_lock_until is None
    # The right secret works at once: the failed fetch left no lease behind.
    await make_api().send_text("o-a", "hi")
    assert fake_api.token_fetches == 1
    assert "not-the-secret" not in _our_log(caplog)


async def test_neither_secret_nor_token_is_logged(
    make_api: MakeAPI, fake_api: FakeWeChatAPI, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    caplog.set_level(logging.DEBUG)
    api = make_api()
    await api.send_reply("o-a", CHOICES)
    fake_api.expire_tokens()
    await api.send_text("o-a", "after expiry")
    assert fake_api.token_fetches == 2
    assert any(r.name == "bot.platforms.official_account.api" for r in caplog.records)
    for secret in (APP_SECRET, "fake-token-1", "fake-token-2"):
        assert secret not in _our_log(caplog)
        assert secret not in repr(api)


def test_errcodes_are_classified() -> None:
    assert {classify(c) for c in (40001, 40014, 42001)} == {ErrorKind.TOKEN}
    assert {classify(c) for c in (45009, -1, None)} == {ErrorKind.RETRY}
    assert {classify(c) for c in (45015, 45047)} == {ErrorKind.HOLD}
    assert {classify(c) for c in (43004, 40003)} == {ErrorKind.UNDELIVERABLE}
    assert classify(48001) is ErrorKind.FAIL


async def test_refresh_lease_is_claimed_only_on_the_token_seen(db: Database) -> None:
    later = NOW + timedelta(seconds=30)
    with db.session() as s:
        assert tokens.claim_refresh(s, app_id=APP_ID, seen_token=None, now=NOW, lease_until=later)
        # Held: nobody else may fetch until it is given back or runs out.
        assert not tokens.claim_refresh(s, app_id=APP_ID, seen_token=None, now=NOW,
                                        lease_until=later)
        tokens.store(s, app_id=APP_ID, token="new", expires_at=NOW + timedelta(hours=2), now=NOW)
        # A worker that read the row before "new" was stored must not fetch yet another token.
        assert not tokens.claim_refresh(s, app_id=APP_ID, seen_token=None, now=NOW,
                                        lease_until=later)
        assert tokens.claim_refresh(s, app_id=APP_ID, seen_token="new", now=NOW,
                                    lease_until=later)
        assert not tokens.claim_refresh(s, app_id=APP_ID, seen_token="new", now=NOW,
                                        lease_until=later)
        assert tokens.claim_refresh(s, app_id=APP_ID, seen_token="new", now=later,
                                    lease_until=later + timedelta(seconds=30))
