"""The WeCom API client against FakeWeComAPI over HTTP, with the token shared in the database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from bot.platforms.errors import ErrorKind, PlatformAPIError, TokenFetchError, TransientAPIError
from bot.platforms.wecom.api import MAX_TEXT_BYTES, WeComAPI, WeComAPIError, classify, split_text
from handlers.replies import Choice, ChoicesReply, NoReply, TextReply, as_plain_text
from storage import tokens
from storage.db import Database
from tests.fakes.wecom_api import (
    AGENT_ID,
    CHAT_CREATE_PATH,
    CHAT_SEND_PATH,
    CORP_ID,
    GETTOKEN_PATH,
    MENU_CREATE_PATH,
    SECRET,
    SEND_PATH,
    UPDATE_CARD_PATH,
    FakeWeComAPI,
    fake_wecom_api,  # noqa: F401  (fixture)
)

NOW = datetime(2026, 3, 2, 8, 7, tzinfo=UTC)
INTRO = ChoicesReply(text="Li Wei would like to meet you.", footer="Reply within 7 days.",
                     choices=(Choice("Accept", "accept 12"), Choice("Decline", "decline 12")))
MakeAPI = Callable[..., WeComAPI]


class Clock:
    """The time every client and the fake read in a test."""

    def __init__(self) -> None:
        self.at = NOW

    def now(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        """Move forward."""
        self.at += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    """The test's clock."""
    return Clock()


@pytest.fixture
async def make_api(
    db: Database, fake_wecom_api: FakeWeComAPI, clock: Clock  # noqa: F811
) -> AsyncIterator[MakeAPI]:
    """Build clients (one per simulated worker) on the fake; all are closed afterwards."""
    fake_wecom_api.now = clock.now
    made: list[WeComAPI] = []

    def make(**kw: object) -> WeComAPI:
        args: dict[str, object] = {"db": db, "corp_id": CORP_ID, "agent_id": AGENT_ID, "secret": SECRET,
                                   "base_url": fake_wecom_api.base_url, "clock": clock, "timeout": 0.5,
                                   "poll_interval": 0.01}
        args.update(kw)
        api = WeComAPI(**args)  # type: ignore[arg-type]
        made.append(api)
        return api

    yield make
    for api in made:
        await api.close()


# -- the access_token -----------------------------------------------------------------------------

async def test_one_token_for_many_sends_and_two_workers(
    make_api: MakeAPI, fake_wecom_api: FakeWeComAPI, db: Database  # noqa: F811
) -> None:
    one, two = make_api(), make_api()
    await asyncio.gather(*(api.send_text(f"user{i}", "hi") for i, api in enumerate([one, two] * 10)))
    await one.send_text("user0", "again")
    assert fake_wecom_api.token_fetches == 1
    assert len(fake_wecom_api.calls_to(SEND_PATH)) == 21
    row = await db.run(tokens.get, app_id=f"wecom:{CORP_ID}:{AGENT_ID}")
    assert row is not None and row.token == await one.access_token()
    (fetch,) = fake_wecom_api.calls_to(GETTOKEN_PATH)
    assert fetch.query == {"corpid": CORP_ID, "corpsecret": SECRET}


async def test_an_expired_token_is_refreshed_once(make_api: MakeAPI, fake_wecom_api: FakeWeComAPI) -> None:  # noqa: F811
    api = make_api()
    await api.send_text("zhangsan", "one")
    fake_wecom_api.expire_tokens()  # 42001 from now on for the old token
    await asyncio.gather(*(api.send_text("zhangsan", f"n{i}") for i in range(5)))
    assert fake_wecom_api.token_fetches == 2
    assert len(fake_wecom_api.texts("zhangsan")) == 6
    fake_wecom_api.revoke_tokens()  # 40014: invalidated early (§8.3)
    await api.send_text("zhangsan", "after revoke")
    assert fake_wecom_api.token_fetches == 3


@pytest.mark.parametrize("errcode", [40001, 40014, 42001])
async def test_a_refused_token_is_refreshed_once_not_in_a_loop(
    make_api: MakeAPI, fake_wecom_api: FakeWeComAPI, errcode: int  # noqa: F811
) -> None:
    api = make_api()
    fake_wecom_api.fail(SEND_PATH, errcode, times=1)
    await api.send_text("zhangsan", "retried once")
    assert fake_wecom_api.token_fetches == 2 and fake_wecom_api.texts("zhangsan") == ["retried once"]
    fake_wecom_api.fail(SEND_PATH, errcode, times=2)
    with pytest.raises(WeComAPIError) as info:
        await api.send_text("zhangsan", "refused twice")
    assert info.value.kind is ErrorKind.TOKEN and fake_wecom_api.token_fetches == 3


async def test_a_wrong_secret_is_an_operator_error_that_never_shows_the_secret(
    make_api: MakeAPI, fake_wecom_api: FakeWeComAPI  # noqa: F811
) -> None:
    wrong = "wrong-secret-9f8e7d6c5b4a39281706"
    api = make_api(secret=wrong)
    with pytest.raises(TokenFetchError) as info:
        await api.send_text("zhangsan", "hi")
    exc = info.value
    assert exc.errcode == 40001 and exc.kind is ErrorKind.RETRY
    assert "secret" in str(exc)  # names the setting to check …
    for text in (str(exc), repr(exc), repr(api), str(exc.__cause__), str(exc.__context__)):
        assert wrong not in text and SECRET not in text  # … never its value
    assert exc.__cause__ is None and exc.__suppress_context__
    with pytest.raises(TokenFetchError):
        await make_api(corp_id="wwnotourcorp000000").send_text("zhangsan", "hi")


async def test_no_exception_carries_the_secret_or_the_token(
    make_api: MakeAPI, fake_wecom_api: FakeWeComAPI  # noqa: F811
) -> None:
    api = make_api()
    token = await api.access_token()
    fake_wecom_api.fail(SEND_PATH, 40058, errmsg=f"echoing access_token={token}")
    fake_wecom_api.hang(SEND_PATH, seconds=5)
    fake_wecom_api.fail_http(SEND_PATH, 502)
    fake_wecom_api.fail(GETTOKEN_PATH, 40013, errmsg=f"bad corpsecret={SECRET}")
    errors: list[PlatformAPIError] = []
    for _ in range(3):
        with pytest.raises(PlatformAPIError) as info:
            await api.send_text("zhangsan", "hi")
        errors.append(info.value)
    fake_wecom_api.expire_tokens()  # the next send meets 42001, and the refresh meets 40013
    with pytest.raises(TokenFetchError) as fetch_info:
        await api.send_text("zhangsan", "hi")
    errors.append(fetch_info.value)
    for exc in errors:
        for text in (str(exc), repr(exc), exc.errmsg):
            assert SECRET not in text and token not in text and "access_token=" + token not in text
            assert "http://" not in text and "?" not in text, text
        assert exc.__cause__ is None


# -- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("errcode", "kind"), [
    (-1, ErrorKind.RETRY), (45009, ErrorKind.RETRY), (81013, ErrorKind.UNDELIVERABLE),
    (60011, ErrorKind.FAIL), (40058, ErrorKind.FAIL), (42014, ErrorKind.FAIL),
])
async def test_errcodes_are_classified(make_api: MakeAPI, fake_wecom_api: FakeWeComAPI,  # noqa: F811
                                       errcode: int, kind: ErrorKind) -> None:
    assert classify(errcode) is kind
    fake_wecom_api.fail(SEND_PATH, errcode)
    with pytest.raises(WeComAPIError) as info:
        await make_api().send_text("zhangsan", "hi")
    assert info.value.errcode == errcode and info.value.kind is kind


async def test_no_answer_is_transient(make_api: MakeAPI, fake_wecom_api: FakeWeComAPI) -> None:  # noqa: F811
    api = make_api()
    await api.access_token()
    fake_wecom_api.fail_http(SEND_PATH, 500)
    fake_wecom_api.hang(SEND_PATH, seconds=5)  # past the client's 0.5 s timeout
    for _ in range(2):
        with pytest.raises(TransientAPIError) as info:
            await api.send_text("zhangsan", "hi")
        assert info.value.kind is ErrorKind.RETRY
    # gettoken without an answer is transient too, not an operator error.
    fake_wecom_api.expire_tokens()
    fake_wecom_api.fail_http(GETTOKEN_PATH, 503)
    with pytest.raises(TransientAPIError):
        await api.send_text("zhangsan", "hi")
    await api.send_text("zhangsan", "and then it works")
    assert fake_wecom_api.texts("zhangsan") == ["and then it works"]
    assert classify(None) is ErrorKind.RETRY


async def test_members_outside_the_apps_visibility_are_undeliverable(
    make_api: MakeAPI, fake_wecom_api: FakeWeComAPI  # noqa: F811
) -> None:
    fake_wecom_api.visible = {"zhangsan"}
    api = make_api()
    with pytest.raises(WeComAPIError) as info:
        await api.send_text("outsider", "hi")
    assert (info.value.errcode, info.value.kind) == (81013, ErrorKind.UNDELIVERABLE)
    await api.send_text("zhangsan", "hi")
    assert fake_wecom_api.texts("zhangsan") == ["hi"] and not fake_wecom_api.received("outsider")


# -- texts ----------------------------------------------------------------------------------------

async def test_a_long_text_goes_out_in_numbered_parts(make_api: MakeAPI, fake_wecom_api: FakeWeComAPI) -> None:  # noqa: F811
    lines = [f"第{i}行：" + "引荐" * 40 for i in range(30)]  # ~7.8 KB of UTF-8
    text = "\n".join(lines)
    msgids = await make_api().send_text("zhangsan", text)
    received = fake_wecom_api.texts("zhangsan")
    n = len(received)
    assert n == len(msgids) == 4
    assert all(len(part.encode()) <= MAX_TEXT_BYTES for part in received)
    assert [part.rsplit("\n", 1)[1] for part in received] == [f"({i}/{n})" for i in range(1, n + 1)]
    # Cut only at line breaks: every line arrives whole, in order.
    assert "\n".join(part.rsplit("\n", 1)[0] for part in received) == text


def test_split_text_edges() -> None:
    assert split_text("short") == ["short"]
    exact = "x" * MAX_TEXT_BYTES
    assert split_text(exact) == [exact]
    one_line = "词" * 2000  # 6,000 bytes, no line break, no space: cut between characters
    parts = split_text(one_line)
    assert all(len(p.encode()) <= MAX_TEXT_BYTES for p in parts)
    assert "".join(p.rsplit("\n", 1)[0] for p in parts) == one_line
    words = " ".join(["word"] * 1000)  # cut at spaces
    parts = split_text(words)
    assert all(not p.rsplit("\n", 1)[0].startswith(" ") for p in parts)
    assert " ".join(p.rsplit("\n", 1)[0] for p in parts) == words
    many = split_text("\n".join(f"line {i}" for i in range(200)), limit=64)  # 10+ parts: wider numbers
    assert len(many) >= 10 and all(len(p.encode()) <= 64 for p in many)
    assert many[0].endswith(f"(1/{len(many)})") and many[-1].endswith(f"({len(many)}/{len(many)})")
    assert split_text("a\n\n\n" + "b" * 3000)[0].startswith("a")


async def test_empty_text_and_several_members_are_refused_before_any_call(
    make_api: MakeAPI, fake_wecom_api: FakeWeComAPI  # noqa: F811
) -> None:
    api = make_api()
    with pytest.raises(ValueError):
        await api.send_text("zhangsan", "  \n")
    with pytest.raises(ValueError):
        await api.send_text("a|b", "hi")
    assert not fake_wecom_api.calls_to(SEND_PATH)


async def test_duplicate_check_delivers_a_retried_part_once(make_api: MakeAPI, fake_wecom_api: FakeWeComAPI) -> None:  # noqa: F811
    api = make_api()
    await api.send_text("zhangsan", "same", duplicate_check_seconds=600)
    await api.send_text("zhangsan", "same", duplicate_check_seconds=600)
    assert fake_wecom_api.texts("zhangsan") == ["same"]
    assert [d.dropped for d in fake_wecom_api.dropped("zhangsan")] == ["duplicate"]
    (call,) = fake_wecom_api.calls_to(SEND_PATH)[:1]
    assert call.body["enable_duplicate_check"] == 1 and call.body["duplicate_check_interval"] == 600


# -- WeCom's per-member limits (the fake) ---------------------------------------------------------

async def test_over_30_a_minute_is_silently_dropped(make_api: MakeAPI, fake_wecom_api: FakeWeComAPI,  # noqa: F811
                                                   clock: Clock) -> None:
    api = make_api()
    for i in range(31):
        await api.send_text("zhangsan", f"m{i}")  # every call answers errcode 0
    assert len(fake_wecom_api.texts("zhangsan")) == 30
    assert [d.content for d in fake_wecom_api.dropped("zhangsan")] == ["m30"]
    await api.send_text("lisi", "others are not affected")
    assert fake_wecom_api.texts("lisi") == ["others are not affected"]
    clock.advance(seconds=60)
    await api.send_text("zhangsan", "a minute later")
    assert fake_wecom_api.texts("zhangsan")[-1] == "a minute later"


async def test_over_1000_an_hour_is_silently_dropped(make_api: MakeAPI, fake_wecom_api: FakeWeComAPI,  # noqa: F811
                                                    clock: Clock) -> None:
    api = make_api()
    for minute in range(34):
        for i in range(30):
            await api.send_text("zhangsan", f"{minute}-{i}")
        clock.advance(seconds=60)
    assert len(fake_wecom_api.texts("zhangsan")) == 1000 and len(fake_wecom_api.dropped("zhangsan")) == 20
    clock.at = NOW + timedelta(hours=1, seconds=1)
    await api.send_text("zhangsan", "next hour")
    assert fake_wecom_api.texts("zhangsan")[-1] == "next hour"


# -- cards ----------------------------------------------------------------------------------------

async def test_a_card_is_sent_and_updated_once(make_api: MakeAPI, fake_wecom_api: FakeWeComAPI) -> None:  # noqa: F811
    api = make_api()
    sent = await api.send_reply("zhangsan", INTRO, unique_id="outbox-7")
    assert sent is not None and sent.response_code and sent.task_id.startswith("outbox-7-")
    (card,) = fake_wecom_api.cards("zhangsan")
    assert [b["key"] for b in card["button_list"]] == ["accept 12", "decline 12"]
    (call,) = fake_wecom_api.calls_to(SEND_PATH)
    assert call.body["agentid"] == AGENT_ID and call.body["touser"] == "zhangsan"

    await api.update_card(sent.response_code, "已处理", ["zhangsan"])
    (update,) = fake_wecom_api.card_updates
    assert (update.task_id, update.users, update.replace_name) == (sent.task_id, ["zhangsan"], "已处理")
    with pytest.raises(WeComAPIError) as info:  # each response_code works once (§8.3)
        await api.update_card(sent.response_code, "again", ["zhangsan"])
    assert info.value.kind is ErrorKind.FAIL

    clicked = fake_wecom_api.click("zhangsan", sent.task_id)  # the callback's own code
    await api.update_card(clicked, "Accepted")
    assert fake_wecom_api.card_updates[-1].users == [] and fake_wecom_api.calls_to(UPDATE_CARD_PATH)[-1].body["atall"] == 1


async def test_a_task_id_is_never_reused(make_api: MakeAPI, fake_wecom_api: FakeWeComAPI) -> None:  # noqa: F811
    api = make_api()
    first = await api.send_reply("zhangsan", INTRO, unique_id="outbox-7")
    second = await api.send_reply("zhangsan", INTRO, unique_id="outbox-7")  # a retry of the same row
    assert first is not None and second is not None and first.task_id != second.task_id
    with pytest.raises(WeComAPIError) as info:
        await api.send_card("zhangsan", fake_wecom_api.cards("zhangsan")[0])
    assert info.value.errcode == 42014


async def test_a_long_reply_sends_its_text_then_the_card(make_api: MakeAPI, fake_wecom_api: FakeWeComAPI) -> None:  # noqa: F811
    reply = ChoicesReply(text="Zhang Min asks:\n" + "a long reason. " * 30, choices=INTRO.choices)
    await make_api().send_reply("zhangsan", reply, unique_id="u1")
    kinds = [d.msgtype for d in fake_wecom_api.received("zhangsan")]
    assert kinds == ["text", "template_card"]
    assert "accept 12" in fake_wecom_api.texts("zhangsan")[0]


async def test_other_replies(make_api: MakeAPI, fake_wecom_api: FakeWeComAPI) -> None:  # noqa: F811
    api = make_api()
    assert await api.send_reply("zhangsan", TextReply("plain"), unique_id="u") is None
    assert await api.send_reply("zhangsan", NoReply(), unique_id="u") is None
    bare = ChoicesReply(text="no choices", footer="f")
    assert await api.send_reply("zhangsan", bare, unique_id="u") is None
    assert fake_wecom_api.texts("zhangsan") == ["plain", as_plain_text(bare)]


# -- group chats and the menu ---------------------------------------------------------------------

async def test_a_group_chat_is_created_and_spoken_to(make_api: MakeAPI, fake_wecom_api: FakeWeComAPI) -> None:  # noqa: F811
    api = make_api()
    chat_id = await api.create_chat("Li Wei · Zhang Min · Wang Wu", "wangwu",
                                    ["liwei", "zhangmin", "wangwu"], "intro12")
    assert chat_id == "intro12"
    chat = fake_wecom_api.chats["intro12"]
    assert (chat.owner, chat.members) == ("wangwu", ["liwei", "zhangmin", "wangwu"])
    await api.send_chat_text(chat_id, "Meet each other!")
    assert [m["content"] for m in chat.messages] == ["Meet each other!"]
    with pytest.raises(WeComAPIError):  # the same chat id twice
        await api.create_chat("again", "wangwu", ["liwei", "wangwu"], "intro12")
    with pytest.raises(WeComAPIError):
        await api.send_chat_text("nosuchchat", "hi")
    for bad in ({"users": ["liwei"]}, {"owner": "stranger"}, {"chat_id": "has-dash"}):
        kwargs = {"name": "n", "owner": "liwei", "users": ["liwei", "zhangmin"], "chat_id": "ok1", **bad}
        with pytest.raises(ValueError):
            await api.create_chat(**kwargs)  # type: ignore[arg-type]
    assert len(fake_wecom_api.calls_to(CHAT_CREATE_PATH)) == 2 and len(fake_wecom_api.calls_to(CHAT_SEND_PATH)) == 2


async def test_group_chats_need_root_visibility(make_api: MakeAPI, fake_wecom_api: FakeWeComAPI) -> None:  # noqa: F811
    fake_wecom_api.root_visibility = False
    with pytest.raises(WeComAPIError) as info:
        await make_api().create_chat("n", "liwei", ["liwei", "zhangmin"], "intro13")
    assert info.value.errcode == 60011 and "root department" in str(info.value)
    assert info.value.kind is ErrorKind.FAIL


async def test_the_menu_is_set_with_its_agentid(make_api: MakeAPI, fake_wecom_api: FakeWeComAPI) -> None:  # noqa: F811
    menu: list[dict[str, Any]] = [
        {"type": "click", "name": "我的名片", "key": "my card"},
        {"name": "更多", "sub_button": [{"type": "click", "name": "帮助", "key": "help"},
                                        {"type": "view", "name": "网页", "url": "https://example.com/"}]},
    ]
    await make_api().set_menu(menu)
    (call,) = fake_wecom_api.calls_to(MENU_CREATE_PATH)
    assert call.query["agentid"] == str(AGENT_ID) and fake_wecom_api.menus[AGENT_ID] == menu
    bads: list[list[dict[str, Any]]] = [
        [], [menu[0]] * 4,
        [{"type": "click", "name": "六个汉字太长", "key": "k"}],  # 18 bytes: past 16
        [{"type": "click", "name": "ok", "key": "k" * 129}],
        [{"name": "x", "sub_button": []}],
        [{"type": "scancode_push", "name": "x", "key": "k"}],  # we only build click and view
    ]
    for bad in bads:
        with pytest.raises(ValueError):
            await make_api().set_menu(bad)
    assert len(fake_wecom_api.calls_to(MENU_CREATE_PATH)) == 1


async def test_an_unknown_path_fails_the_test(fake_wecom_api: FakeWeComAPI) -> None:  # noqa: F811
    async with aiohttp.ClientSession() as s:
        async with s.post(fake_wecom_api.base_url + "/cgi-bin/message/recall") as resp:
            assert resp.status == 404
        async with s.post(fake_wecom_api.base_url + GETTOKEN_PATH) as resp:  # right path, wrong method
            assert resp.status == 404
    with pytest.raises(AssertionError, match="recall"):
        fake_wecom_api.assert_no_unknown_paths()
    fake_wecom_api.unknown_paths.clear()


async def test_the_fake_records_markdown_and_checks_agentid_and_touser(
    make_api: MakeAPI, fake_wecom_api: FakeWeComAPI  # noqa: F811
) -> None:
    token = await make_api().access_token()
    url = f"{fake_wecom_api.base_url}{SEND_PATH}"
    bodies: list[dict[str, Any]] = [
        {"touser": "zhangsan", "agentid": AGENT_ID, "msgtype": "markdown",
         "markdown": {"content": "**hi**"}},
        {"touser": "zhangsan", "agentid": 1000099, "msgtype": "markdown", "markdown": {"content": "x"}},
        {"touser": "", "agentid": AGENT_ID, "msgtype": "text", "text": {"content": "x"}},
        {"touser": "zhangsan", "agentid": AGENT_ID, "msgtype": "text", "text": {"content": "x" * 2049}},
    ]
    answers = []
    async with aiohttp.ClientSession() as s:
        for body in bodies:
            async with s.post(url, params={"access_token": token}, json=body) as resp:
                answers.append((await resp.json())["errcode"])
    assert answers[0] == 0 and all(code != 0 for code in answers[1:])
    (only,) = fake_wecom_api.received("zhangsan")
    assert (only.msgtype, only.content) == ("markdown", "**hi**")
