"""FakeWeChatAPI: a real HTTP server on 127.0.0.1 that plays the WeChat Official Account API.

It records every call, issues and checks access_tokens, answers the endpoints the bot uses, can
be scripted to fail the next calls of a path, and fails the test on any path it does not know.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

TOKEN_PATH = "/cgi-bin/token"
CUSTOM_SEND_PATH = "/cgi-bin/message/custom/send"
TEMPLATE_SEND_PATH = "/cgi-bin/message/template/send"
QRCODE_CREATE_PATH = "/cgi-bin/qrcode/create"
MENU_CREATE_PATH = "/cgi-bin/menu/create"

# WeChat's customer-service rules (WECHAT.md §4), enforced once a test calls `enforce_budget`.
WINDOW = timedelta(hours=48)
WINDOW_MESSAGES = 5
EVENT_WINDOW = timedelta(minutes=1)
EVENT_MESSAGES = 3

APP_ID = "wxfakeappid0000001"
APP_SECRET = "fake-secret-0123456789abcdef"


@dataclass
class Call:
    """One request the fake received, and the errcode it answered (None: HTTP error or hang)."""

    path: str
    query: dict[str, str]
    body: Any
    raw: bytes = b""
    errcode: int | None = None
    answered: bool = False  # the fake has sent its answer (False: still in flight)
    at: float = field(default_factory=time.monotonic)  # when it arrived

    @property
    def ok(self) -> bool:
        """The call succeeded."""
        return self.errcode == 0


@dataclass
class _Failure:
    errcode: int | None = None
    errmsg: str = ""
    http_status: int | None = None
    hang_seconds: float = 0.0


@dataclass
class FakeWeChatAPI:
    """The fake server's state; tests script it and read what it recorded."""

    app_id: str = APP_ID
    app_secret: str = APP_SECRET
    msgmenu_allowed: bool = True
    calls: list[Call] = field(default_factory=list)
    unknown_paths: list[str] = field(default_factory=list)
    token_fetches: int = 0
    template_repeats: int = 0  # template sends WeChat dropped as repeats of a client_msg_id
    base_url: str = ""
    menu: list[Any] | None = None  # the last menu set
    # Seconds each customer-service send takes to answer, as a slow WeChat (or a long way) would.
    latency: float = 0.0
    _valid_tokens: set[str] = field(default_factory=set)
    _expired_tokens: set[str] = field(default_factory=set)
    _script: dict[str, deque[_Failure]] = field(default_factory=lambda: defaultdict(deque))
    _template_keys: set[tuple[str, str]] = field(default_factory=set)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _release_hangs: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    # The 48-hour window and budgets, when enforced: WeChat's own view of each member.
    _now: Callable[[], datetime] | None = None
    _wrote_at: dict[str, datetime] = field(default_factory=dict)
    _event_at: dict[str, datetime] = field(default_factory=dict)
    _sent_at: dict[str, list[datetime]] = field(default_factory=lambda: defaultdict(list))

    # -- scripting --------------------------------------------------------------------------

    def fail(self, path: str, errcode: int, *, times: int = 1, errmsg: str = "scripted") -> None:
        """Answer the next `times` calls of `path` with this errcode."""
        self._script[path].extend(_Failure(errcode=errcode, errmsg=errmsg) for _ in range(times))

    def fail_http(self, path: str, status: int = 500, *, times: int = 1) -> None:
        """Answer the next `times` calls of `path` with an HTTP error status."""
        self._script[path].extend(_Failure(http_status=status) for _ in range(times))

    def hang(self, path: str, seconds: float = 5.0, *, times: int = 1) -> None:
        """Make the next `times` calls of `path` hang (longer than the client's timeout)."""
        self._script[path].extend(_Failure(hang_seconds=seconds) for _ in range(times))

    def enforce_budget(self, now: Callable[[], datetime]) -> None:
        """Answer customer-service sends as WeChat does: 45015 outside the window, 45047 over
        budget. `now` is the test's clock; tell the fake when a member writes or subscribes."""
        self._now = now

    def writes(self, openid: str) -> None:
        """The member sent a message now: a 48-hour window with 5 messages opens."""
        assert self._now is not None, "enforce_budget first"
        self._wrote_at[openid] = self._now()

    def subscribes(self, openid: str) -> None:
        """The member subscribed, scanned or clicked a menu now: 3 messages in the next minute."""
        assert self._now is not None, "enforce_budget first"
        self._event_at[openid] = self._now()

    def expire_tokens(self) -> None:
        """Every token issued so far now answers 42001, as after two hours."""
        self._expired_tokens |= self._valid_tokens
        self._valid_tokens.clear()

    # -- reading ----------------------------------------------------------------------------

    def in_flight(self) -> list[Call]:
        """Calls received and not answered yet."""
        return [c for c in self.calls if not c.answered]

    def calls_to(self, path: str) -> list[Call]:
        """Every call of one path, in order."""
        return [c for c in self.calls if c.path == path]

    def delivered(self) -> list[dict[str, Any]]:
        """Customer-service messages WeChat accepted, in order."""
        return [c.body for c in self.calls_to(CUSTOM_SEND_PATH) if c.ok]

    def delivered_to(self, openid: str) -> list[dict[str, Any]]:
        """Customer-service messages accepted for one member."""
        return [b for b in self.delivered() if b["touser"] == openid]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (without polling on a timer) until a call makes `predicate` true."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def assert_no_unknown_paths(self) -> None:
        """Fail when the client called a path the fake (and so our knowledge of WeChat) lacks."""
        assert not self.unknown_paths, f"unknown WeChat API paths called: {self.unknown_paths}"

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
        try:
            if self.latency and request.path == CUSTOM_SEND_PATH:
                await asyncio.sleep(self.latency)
            return await self._respond(request, call)
        finally:
            call.answered = True

    async def _respond(self, request: web.Request, call: Call) -> web.StreamResponse:
        handler = self._routes().get(request.path)
        if handler is None:
            self.unknown_paths.append(request.path)
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
        if request.path != TOKEN_PATH:
            refused = self._check_token(call.query.get("access_token", ""))
            if refused is not None:
                return self._answer(call, refused)
        return self._answer(call, handler(call))

    def _answer(self, call: Call, data: dict[str, Any]) -> web.Response:
        call.errcode = int(data.get("errcode", 0))
        self._changed.set()
        return web.json_response(data, dumps=lambda d: json.dumps(d, ensure_ascii=False))

    def _check_token(self, token: str) -> dict[str, Any] | None:
        if token in self._valid_tokens:
            return None
        if token in self._expired_tokens:
            return {"errcode": 42001, "errmsg": "access_token expired"}
        return {"errcode": 40014, "errmsg": "invalid access_token"}

    def _routes(self) -> dict[str, Any]:
        return {
            TOKEN_PATH: self._token,
            CUSTOM_SEND_PATH: self._custom_send,
            TEMPLATE_SEND_PATH: self._template_send,
            QRCODE_CREATE_PATH: self._qrcode_create,
            MENU_CREATE_PATH: self._menu_create,
        }

    def _menu_create(self, call: Call) -> dict[str, Any]:
        """menu/create: 1-3 buttons, each a click with a key or up to 5 sub-buttons."""
        buttons = (call.body or {}).get("button")
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= 3:
            return {"errcode": 40017, "errmsg": "invalid button size"}
        for b in buttons:
            subs = b.get("sub_button")
            items = subs if subs else [b]
            if subs is not None and not 1 <= len(subs) <= 5:
                return {"errcode": 40023, "errmsg": "invalid sub button size"}
            if any(i.get("type") != "click" or not i.get("key") or not i.get("name") for i in items):
                return {"errcode": 40016, "errmsg": "invalid button"}
        self.menu = buttons
        return {"errcode": 0, "errmsg": "ok"}

    def _token(self, call: Call) -> dict[str, Any]:
        q = call.query
        if q.get("grant_type") != "client_credential" or q.get("appid") != self.app_id:
            return {"errcode": 40013, "errmsg": "invalid appid"}
        if q.get("secret") != self.app_secret:
            return {"errcode": 40125, "errmsg": "invalid appsecret"}
        self.token_fetches += 1
        token = f"fake-token-{next(self._counter)}"
        self._valid_tokens.add(token)
        return {"access_token": token, "expires_in": 7200}

    def _window(self, openid: str) -> dict[str, Any] | None:
        """WeChat's answer when the member's window or budget does not allow a message now."""
        if self._now is None:
            return None
        now, sent = self._now(), self._sent_at[openid]
        open_grants = 0
        for since, span, limit in ((self._wrote_at.get(openid), WINDOW, WINDOW_MESSAGES),
                                   (self._event_at.get(openid), EVENT_WINDOW, EVENT_MESSAGES)):
            if since is None or now >= since + span:
                continue
            open_grants += 1
            if sum(1 for at in sent if at >= since) < limit:
                return None
        if open_grants == 0:
            return {"errcode": 45015, "errmsg": "response out of time limit or subscription is canceled"}
        return {"errcode": 45047, "errmsg": "out of response count limit"}

    def _custom_send(self, call: Call) -> dict[str, Any]:
        b = call.body or {}
        if not b.get("touser"):
            return {"errcode": 40003, "errmsg": "invalid openid"}
        refused = self._window(b["touser"])
        if refused is not None:
            return refused
        answer = self._custom_answer(b)
        if answer["errcode"] == 0 and self._now is not None:
            self._sent_at[b["touser"]].append(self._now())
        return answer

    def _custom_answer(self, b: dict[str, Any]) -> dict[str, Any]:
        if b.get("msgtype") == "text" and isinstance(b.get("text"), dict) and b["text"].get("content"):
            return {"errcode": 0, "errmsg": "ok"}
        if b.get("msgtype") == "msgmenu" and isinstance(b.get("msgmenu"), dict):
            if not self.msgmenu_allowed:
                return {"errcode": 40200, "errmsg": "invalid account type"}
            items = b["msgmenu"].get("list") or []
            if all(isinstance(i, dict) and i.get("id") and i.get("content") for i in items):
                return {"errcode": 0, "errmsg": "ok"}
        return {"errcode": 40008, "errmsg": "invalid message type"}

    def _template_send(self, call: Call) -> dict[str, Any]:
        b = call.body or {}
        if not (b.get("touser") and b.get("template_id") and isinstance(b.get("data"), dict)):
            return {"errcode": 47001, "errmsg": "data format error"}
        key = b.get("client_msg_id")
        if key:
            # WeChat sends a repeated (openid, client_msg_id) only once; the repeat still succeeds.
            if (b["touser"], key) in self._template_keys:
                self.template_repeats += 1
            self._template_keys.add((b["touser"], key))
        return {"errcode": 0, "errmsg": "ok", "msgid": next(self._counter)}

    def _qrcode_create(self, call: Call) -> dict[str, Any]:
        b = call.body or {}
        scene = (b.get("action_info") or {}).get("scene") or {}
        if b.get("action_name") != "QR_STR_SCENE" or not scene.get("scene_str"):
            return {"errcode": 40097, "errmsg": "invalid args"}
        n = next(self._counter)
        return {"errcode": 0, "ticket": f"gQH/ticket+{n}==", "url": f"http://weixin.qq.com/q/fake{n}",
                "expire_seconds": int(b.get("expire_seconds", 60))}


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeWeChatAPI]:
    """A started fake; the test fails if the client called a path the fake does not know."""
    fake = FakeWeChatAPI()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()
    fake.assert_no_unknown_paths()
