"""FakeWeComAPI: a real HTTP server on 127.0.0.1 that plays the WeCom self-built app API.

It issues and checks access_tokens, answers the endpoints our client uses, records every call,
and keeps what each member actually received. Like WeCom (WECHAT.md §0 rule 10, §8.3) it drops,
silently, what goes over 30 messages a minute or 1,000 an hour to one member from the app: the
answer is errcode 0, the message is recorded as dropped and never reaches the member. It can be
scripted to fail the next calls of a path with any errcode, an HTTP error or a hang, and it
fails the test on any path it does not know.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

GETTOKEN_PATH = "/cgi-bin/gettoken"
SEND_PATH = "/cgi-bin/message/send"
UPDATE_CARD_PATH = "/cgi-bin/message/update_template_card"
CHAT_CREATE_PATH = "/cgi-bin/appchat/create"
CHAT_SEND_PATH = "/cgi-bin/appchat/send"
MENU_CREATE_PATH = "/cgi-bin/menu/create"

CORP_ID = "wwfakecorp00000001"
AGENT_ID = 1000002
SECRET = "fake-wecom-secret-0123456789abcdefghijklmn"

# WeCom's rules (WECHAT.md §8.3 and the send/appchat docs cited in bot/platforms/wecom/api.py).
PER_MINUTE, PER_HOUR = 30, 1000  # per member per app; the excess is dropped without an error
MAX_TEXT_BYTES = 2048
MAX_RECIPIENTS = 1000
RESPONSE_CODE_TTL = timedelta(hours=24)  # 72 h in the 2025 doc; 24 h is the safe lower bound (§8.3)
CALLBACK_CARDS = {"button_interaction", "vote_interaction", "multiple_interaction"}
CARD_TYPES = CALLBACK_CARDS | {"text_notice", "news_notice"}
TASK_ID = re.compile(r"[0-9A-Za-z_@-]{1,128}")
CHAT_ID = re.compile(r"[0-9A-Za-z]{1,32}")

# errcodes WECHAT.md documents, and answered as documented.
INVALID_CREDENTIAL = 40001  # also a wrong corpsecret (§7)
INVALID_TOKEN, EXPIRED_TOKEN = 40014, 42001
ALL_INVALID = 81013
INVALID_TASK_ID = 42014
NO_PRIVILEGE = 60011  # appchat from an app whose visibility is not the root department
# errcodes WECHAT.md does not document: the fake's own choices, for tests only. Our client
# treats them as plain failures, so nothing in production depends on these values.
FAKE_INVALID_CORPID = 40013
FAKE_INVALID_MSGTYPE = 40008
FAKE_INVALID_AGENTID = 40056
FAKE_INVALID_PARAMETER = 40058
FAKE_EMPTY_CONTENT = 44004
FAKE_CONTENT_TOO_LONG = 45002  # the real API cuts the text instead; the fake fails loudly
FAKE_USER_NOT_FOUND = 60111
FAKE_CHAT_NOT_FOUND = 86003
FAKE_CHAT_EXISTS = 86215


@dataclass
class Call:
    """One request the fake received, and the errcode it answered (None: HTTP error or hang)."""

    path: str
    query: dict[str, str]
    body: Any
    raw: bytes = b""
    errcode: int | None = None

    @property
    def ok(self) -> bool:
        """The call succeeded."""
        return self.errcode == 0


@dataclass
class Delivery:
    """One message to one member: what it was, when, and whether WeCom dropped it."""

    user: str
    msgtype: str
    content: Any  # the text's content, or the template_card object
    at: datetime
    msgid: str
    dropped: str = ""  # "", "rate" (over 30/min or 1,000/h) or "duplicate" (duplicate check)

    @property
    def delivered(self) -> bool:
        """The member saw it."""
        return not self.dropped


@dataclass
class Chat:
    """A group chat the app created, and the texts sent to it."""

    chat_id: str
    name: str
    owner: str
    members: list[str]
    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CardUpdate:
    """An accepted update_template_card call."""

    response_code: str
    task_id: str
    users: list[str]  # empty: everyone the card went to (atall)
    replace_name: str | None
    template_card: dict[str, Any] | None


@dataclass
class _ResponseCode:
    task_id: str
    issued_at: datetime
    used: bool = False


@dataclass
class _Failure:
    errcode: int | None = None
    errmsg: str = ""
    http_status: int | None = None
    hang_seconds: float = 0.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class FakeWeComAPI:
    """The fake server's state; tests script it and read what it recorded."""

    corp_id: str = CORP_ID
    agent_id: int = AGENT_ID
    secret: str = SECRET
    visible: set[str] | None = None  # members in the app's visibility; None: everyone
    root_visibility: bool = True  # appchat needs the app visible to the root department
    now: Callable[[], datetime] = _utcnow  # the test's clock, for limits and code lifetimes
    calls: list[Call] = field(default_factory=list)
    unknown_paths: list[str] = field(default_factory=list)
    token_fetches: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    card_updates: list[CardUpdate] = field(default_factory=list)
    chats: dict[str, Chat] = field(default_factory=dict)
    menus: dict[int, list[Any]] = field(default_factory=dict)
    base_url: str = ""
    _valid_tokens: set[str] = field(default_factory=set)
    _expired_tokens: set[str] = field(default_factory=set)
    _script: dict[str, deque[_Failure]] = field(default_factory=lambda: defaultdict(deque))
    _task_ids: set[str] = field(default_factory=set)
    _card_users: dict[str, set[str]] = field(default_factory=dict)
    _response_codes: dict[str, _ResponseCode] = field(default_factory=dict)
    _duplicates: dict[str, datetime] = field(default_factory=dict)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _release_hangs: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    # -- scripting --------------------------------------------------------------------------

    def fail(self, path: str, errcode: int, *, times: int = 1, errmsg: str = "scripted") -> None:
        """Answer the next `times` calls of `path` with this errcode (40014, 42001, 45009, -1 …)."""
        self._script[path].extend(_Failure(errcode=errcode, errmsg=errmsg) for _ in range(times))

    def fail_http(self, path: str, status: int = 500, *, times: int = 1) -> None:
        """Answer the next `times` calls of `path` with an HTTP error status."""
        self._script[path].extend(_Failure(http_status=status) for _ in range(times))

    def hang(self, path: str, seconds: float = 5.0, *, times: int = 1) -> None:
        """Make the next `times` calls of `path` hang (longer than the client's timeout)."""
        self._script[path].extend(_Failure(hang_seconds=seconds) for _ in range(times))

    def expire_tokens(self) -> None:
        """Every token issued so far now answers 42001, as after two hours."""
        self._expired_tokens |= self._valid_tokens
        self._valid_tokens.clear()

    def revoke_tokens(self) -> None:
        """Every token issued so far now answers 40014, as when WeCom invalidates one early (§8.3)."""
        self._valid_tokens.clear()

    def click(self, user: str, task_id: str) -> str:
        """The member clicks a card they received: the callback's fresh ResponseCode (§8.3)."""
        assert user in self._card_users.get(task_id, set()), f"{user} never received card {task_id}"
        return self._mint(task_id)

    # -- reading ----------------------------------------------------------------------------

    def calls_to(self, path: str) -> list[Call]:
        """Every call of one path, in order."""
        return [c for c in self.calls if c.path == path]

    def received(self, user: str) -> list[Delivery]:
        """What one member actually received from the app, in order."""
        return [d for d in self.deliveries if d.user == user and d.delivered]

    def dropped(self, user: str) -> list[Delivery]:
        """What WeCom accepted for one member but never delivered."""
        return [d for d in self.deliveries if d.user == user and not d.delivered]

    def texts(self, user: str) -> list[str]:
        """The texts one member received."""
        return [str(d.content) for d in self.received(user) if d.msgtype == "text"]

    def cards(self, user: str) -> list[dict[str, Any]]:
        """The template cards one member received."""
        return [d.content for d in self.received(user) if d.msgtype == "template_card"]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (without polling on a timer) until a call makes `predicate` true."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def assert_no_unknown_paths(self) -> None:
        """Fail when the client called a path the fake (and so our knowledge of WeCom) lacks."""
        assert not self.unknown_paths, f"unknown WeCom API paths called: {self.unknown_paths}"

    # -- server -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"

    async def close(self) -> None:
        """Stop listening; hung handlers are let go first."""
        self._release_hangs.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = {"__invalid_json__": raw.decode(errors="replace")}
        call = Call(path=request.path, query=dict(request.query), body=body, raw=raw)
        self.calls.append(call)
        self._changed.set()
        routes: dict[str, tuple[str, Callable[[Call], dict[str, Any]]]] = {
            GETTOKEN_PATH: ("GET", self._gettoken),
            SEND_PATH: ("POST", self._send),
            UPDATE_CARD_PATH: ("POST", self._update_card),
            CHAT_CREATE_PATH: ("POST", self._chat_create),
            CHAT_SEND_PATH: ("POST", self._chat_send),
            MENU_CREATE_PATH: ("POST", self._menu_create),
        }
        route = routes.get(request.path)
        if route is None or route[0] != request.method:
            self.unknown_paths.append(f"{request.method} {request.path}")
            return web.json_response({"errcode": 404, "errmsg": "unknown path"}, status=404)
        scripted = self._script[request.path].popleft() if self._script[request.path] else None
        if scripted is not None:
            if scripted.hang_seconds:
                try:
                    await asyncio.wait_for(self._release_hangs.wait(), scripted.hang_seconds)
                except TimeoutError:
                    pass
                return web.json_response({"errcode": 0, "errmsg": "too late"})
            if scripted.http_status is not None:
                return web.Response(status=scripted.http_status, text="scripted HTTP error")
            return self._answer(call, {"errcode": scripted.errcode, "errmsg": scripted.errmsg})
        if request.path != GETTOKEN_PATH:
            refused = self._check_token(call.query.get("access_token", ""))
            if refused is not None:
                return self._answer(call, refused)
        if request.method == "POST" and not isinstance(call.body, dict):
            return self._answer(call, _error(FAKE_INVALID_PARAMETER, "body is not a JSON object"))
        return self._answer(call, route[1](call))

    def _answer(self, call: Call, data: dict[str, Any]) -> web.Response:
        call.errcode = int(data.get("errcode", 0))
        self._changed.set()
        return web.json_response(data, dumps=lambda d: json.dumps(d, ensure_ascii=False))

    def _check_token(self, token: str) -> dict[str, Any] | None:
        if token in self._valid_tokens:
            return None
        if token in self._expired_tokens:
            return _error(EXPIRED_TOKEN, "access_token expired")
        return _error(INVALID_TOKEN, "invalid access_token")

    def _visible(self, user: str) -> bool:
        return self.visible is None or user in self.visible

    def _mint(self, task_id: str) -> str:
        code = f"rc-{next(self._counter)}-{task_id}"
        self._response_codes[code] = _ResponseCode(task_id=task_id, issued_at=self.now())
        return code

    # -- endpoints ----------------------------------------------------------------------------

    def _gettoken(self, call: Call) -> dict[str, Any]:
        q = call.query
        if q.get("corpid") != self.corp_id:
            return _error(FAKE_INVALID_CORPID, "invalid corpid")
        if q.get("corpsecret") != self.secret:
            return _error(INVALID_CREDENTIAL, "invalid credential")
        self.token_fetches += 1
        token = f"fake-wecom-token-{next(self._counter)}"
        self._valid_tokens.add(token)
        return {"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200}

    def _send(self, call: Call) -> dict[str, Any]:
        b: dict[str, Any] = call.body
        if b.get("agentid") != self.agent_id:
            return _error(FAKE_INVALID_AGENTID, "invalid agentid")
        touser = b.get("touser")
        users = [u for u in touser.split("|") if u] if isinstance(touser, str) else []
        if not users or len(users) > MAX_RECIPIENTS:
            return _error(FAKE_INVALID_PARAMETER, "touser must list 1 to 1000 members")
        msgtype = str(b.get("msgtype") or "")
        refused = self._check_message(b, msgtype)
        if refused is not None:
            return refused
        valid = [u for u in users if self._visible(u)]
        invalid = [u for u in users if not self._visible(u)]
        if not valid:
            return _error(ALL_INVALID, "all touser invalid (outside the app's visibility)")
        content: Any
        if msgtype == "template_card":
            content = b["template_card"]
            self._task_ids.add(content["task_id"])
            self._card_users.setdefault(content["task_id"], set()).update(valid)
        else:
            content = b[msgtype]["content"]
        msgid = f"msgid-{next(self._counter)}"
        duplicate = self._is_duplicate(b)
        for user in valid:
            dropped = "duplicate" if duplicate else ("" if self._within_limits(user) else "rate")
            self.deliveries.append(Delivery(user=user, msgtype=msgtype, content=content,
                                            at=self.now(), msgid=msgid, dropped=dropped))
        # Invalid recipients are named in lower case (the send doc); the rest still get it.
        answer: dict[str, Any] = {"errcode": 0, "errmsg": "ok", "msgid": msgid,
                                  "invaliduser": "|".join(u.lower() for u in invalid)}
        if msgtype == "template_card" and content["card_type"] in CALLBACK_CARDS:
            answer["response_code"] = self._mint(content["task_id"])
        return answer

    def _check_message(self, b: dict[str, Any], msgtype: str) -> dict[str, Any] | None:
        if msgtype in ("text", "markdown"):
            part = b.get(msgtype)
            text = part.get("content") if isinstance(part, dict) else None
            return _check_text(text)
        if msgtype == "template_card":
            return self._check_card(b.get("template_card"))
        return _error(FAKE_INVALID_MSGTYPE, "invalid message type")

    def _check_card(self, card: Any) -> dict[str, Any] | None:
        if not isinstance(card, dict) or card.get("card_type") not in CARD_TYPES:
            return _error(FAKE_INVALID_PARAMETER, "invalid card_type")
        task_id = card.get("task_id")
        # Unique within the app, [0-9a-zA-Z_-@], at most 128 bytes (WECHAT.md §8.3).
        needs_task_id = card["card_type"] in CALLBACK_CARDS or task_id is not None
        if needs_task_id and (not isinstance(task_id, str) or not TASK_ID.fullmatch(task_id)
                              or task_id in self._task_ids):
            return _error(INVALID_TASK_ID, "invalid or duplicated task_id")
        title = (card.get("main_title") or {}).get("title")
        if not (title or card.get("sub_title_text")):
            return _error(FAKE_INVALID_PARAMETER, "main_title.title or sub_title_text is required")
        if card["card_type"] == "button_interaction":
            buttons = card.get("button_list")
            if not isinstance(buttons, list) or not 1 <= len(buttons) <= 6:
                return _error(FAKE_INVALID_PARAMETER, "button_list must have 1 to 6 buttons")
            keys = [b.get("key") for b in buttons if isinstance(b, dict)]
            if (len(keys) != len(buttons) or len(set(keys)) != len(keys)
                    or not all(isinstance(k, str) and k and len(k.encode()) <= 1024 for k in keys)
                    or not all(isinstance(b.get("text"), str) and b["text"] for b in buttons)):
                return _error(FAKE_INVALID_PARAMETER, "each button needs a text and a unique key")
        return None

    def _is_duplicate(self, b: dict[str, Any]) -> bool:
        """enable_duplicate_check: the same request JSON is delivered once per interval (§8.3)."""
        if not b.get("enable_duplicate_check"):
            return False
        now = self.now()
        key = json.dumps(b, sort_keys=True, ensure_ascii=False)
        interval = timedelta(seconds=int(b.get("duplicate_check_interval") or 1800))
        seen = self._duplicates.get(key)
        if seen is not None and now - seen < interval:
            return True
        self._duplicates[key] = now
        return False

    def _within_limits(self, user: str) -> bool:
        """At most 30 a minute and 1,000 an hour reach one member; what was dropped never counts."""
        now = self.now()
        times = [d.at for d in self.deliveries if d.user == user and d.delivered]
        last_minute = sum(1 for at in times if now - at < timedelta(minutes=1))
        last_hour = sum(1 for at in times if now - at < timedelta(hours=1))
        return last_minute < PER_MINUTE and last_hour < PER_HOUR

    def _update_card(self, call: Call) -> dict[str, Any]:
        b: dict[str, Any] = call.body
        if b.get("agentid") != self.agent_id:
            return _error(FAKE_INVALID_AGENTID, "invalid agentid")
        code = self._response_codes.get(str(b.get("response_code") or ""))
        if code is None or code.used or self.now() - code.issued_at >= RESPONSE_CODE_TTL:
            # One use each, and only for a while (WECHAT.md §8.3).
            return _error(FAKE_INVALID_PARAMETER, "invalid response_code (unknown, used or expired)")
        users = b.get("userids") or []
        if not isinstance(users, list) or len(users) > MAX_RECIPIENTS or not (users or b.get("atall")):
            return _error(FAKE_INVALID_PARAMETER, "userids (at most 1000) or atall is required")
        button, card = b.get("button"), b.get("template_card")
        replace_name = button.get("replace_name") if isinstance(button, dict) else None
        if not (isinstance(replace_name, str) and replace_name) and not isinstance(card, dict):
            return _error(FAKE_INVALID_PARAMETER, "button.replace_name or template_card is required")
        code.used = True
        self.card_updates.append(CardUpdate(response_code=str(b["response_code"]), task_id=code.task_id,
                                            users=list(users), replace_name=replace_name,
                                            template_card=card if isinstance(card, dict) else None))
        return {"errcode": 0, "errmsg": "ok"}

    def _chat_create(self, call: Call) -> dict[str, Any]:
        b: dict[str, Any] = call.body
        if not self.root_visibility:
            return _error(NO_PRIVILEGE, "no privilege to access/modify contact/party/agent")
        members = b.get("userlist")
        if (not isinstance(members, list) or not 2 <= len(members) <= 2000
                or not all(isinstance(m, str) and m for m in members)):
            return _error(FAKE_INVALID_PARAMETER, "userlist must have 2 to 2000 members")
        unknown = [m for m in members if not self._visible(m)]
        if unknown:
            return _error(FAKE_USER_NOT_FOUND, f"userid not found: {unknown[0]}")
        owner = b.get("owner") or members[0]
        if owner not in members:
            return _error(FAKE_INVALID_PARAMETER, "the owner must be a member")
        chat_id = b.get("chatid") or f"fakechat{next(self._counter)}"
        if not isinstance(chat_id, str) or not CHAT_ID.fullmatch(chat_id):
            return _error(FAKE_INVALID_PARAMETER, "chatid is 1 to 32 characters from [0-9a-zA-Z]")
        if chat_id in self.chats:
            return _error(FAKE_CHAT_EXISTS, "chatid exists")
        self.chats[chat_id] = Chat(chat_id=chat_id, name=str(b.get("name") or "")[:50], owner=owner,
                                   members=list(members))
        return {"errcode": 0, "errmsg": "ok", "chatid": chat_id}

    def _chat_send(self, call: Call) -> dict[str, Any]:
        b: dict[str, Any] = call.body
        chat = self.chats.get(str(b.get("chatid") or ""))
        if chat is None:
            return _error(FAKE_CHAT_NOT_FOUND, "chatid not found (or not created by this app)")
        msgtype = b.get("msgtype")
        if msgtype not in ("text", "markdown"):
            return _error(FAKE_INVALID_MSGTYPE, "invalid message type")
        part = b.get(msgtype)
        refused = _check_text(part.get("content") if isinstance(part, dict) else None)
        if refused is not None:
            return refused
        assert isinstance(part, dict)
        chat.messages.append({"msgtype": msgtype, "content": part["content"], "at": self.now()})
        return {"errcode": 0, "errmsg": "ok"}

    def _menu_create(self, call: Call) -> dict[str, Any]:
        try:
            agent_id = int(call.query.get("agentid", ""))
        except ValueError:
            agent_id = -1
        if agent_id != self.agent_id:
            return _error(FAKE_INVALID_AGENTID, "invalid agentid")
        buttons = call.body.get("button")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            return _error(FAKE_INVALID_PARAMETER, "a menu has 1 to 3 buttons")
        for button in buttons:
            subs = button.get("sub_button") if isinstance(button, dict) else None
            if subs is not None and not (isinstance(subs, list) and 1 <= len(subs) <= 5):
                return _error(FAKE_INVALID_PARAMETER, "a sub-menu has 1 to 5 buttons")
        self.menus[agent_id] = buttons
        return {"errcode": 0, "errmsg": "ok"}


def _error(errcode: int, errmsg: str) -> dict[str, Any]:
    return {"errcode": errcode, "errmsg": errmsg}


def _check_text(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str) or not text:
        return _error(FAKE_EMPTY_CONTENT, "empty content")
    if len(text.encode()) > MAX_TEXT_BYTES:
        return _error(FAKE_CONTENT_TOO_LONG, "content size out of limit")
    return None


@pytest.fixture
async def fake_wecom_api() -> AsyncIterator[FakeWeComAPI]:
    """A started fake; the test fails if the client called a path the fake does not know."""
    fake = FakeWeComAPI()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()
    fake.assert_no_unknown_paths()
