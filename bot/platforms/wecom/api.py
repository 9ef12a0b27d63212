"""Our async client for the WeCom self-built app API, with one shared access_token.

Like bot/platforms/official_account/api.py: aiohttp with a timeout and an injectable base URL, the token shared by
every worker through the database (bot/platforms/token_keeper.py), a refused token refreshed
once, and errors sorted into the kinds the outbox sender acts on. Exceptions never carry a URL,
whose query string holds the token or the secret. wechatpy is used only for its errcode names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

import aiohttp
from wechatpy.constants import WeChatErrorCode

from bot.platforms.errors import ErrorKind, PlatformAPIError, TokenFetchError, TransientAPIError
from bot.platforms.token_keeper import Clock, FetchedToken, TokenKeeper
from bot.platforms.wecom.cards import choice_card
from handlers.replies import ChoicesReply, NoReply, Reply, TextReply, as_plain_text
from storage.db import Database

DEFAULT_BASE_URL = "https://qyapi.weixin.qq.com"
GETTOKEN_PATH = "/cgi-bin/gettoken"
SEND_PATH = "/cgi-bin/message/send"
UPDATE_CARD_PATH = "/cgi-bin/message/update_template_card"
CHAT_CREATE_PATH = "/cgi-bin/appchat/create"
CHAT_SEND_PATH = "/cgi-bin/appchat/send"
MENU_CREATE_PATH = "/cgi-bin/menu/create"

# A text message holds at most 2,048 bytes (WECHAT.md §8.3); a group message too (the appchat
# send doc, developer.work.weixin.qq.com/document/path/90248).
MAX_TEXT_BYTES = 2048
# WeCom's errcodes beyond the Official Account's (WECHAT.md §8.3; 60011 from the appchat docs).
ALL_RECIPIENTS_INVALID = 81013  # every touser outside the app's visibility, or unknown
NO_PRIVILEGE = 60011  # appchat: the app's visibility is not the root department
INVALID_TASK_ID = 42014  # task_id repeated, empty or too long
# appchat/create (developer.work.weixin.qq.com/document/path/90245): 2 to 2,000 members, a chat
# id of at most 32 characters from [0-9a-zA-Z], a name of at most 50 UTF-8 characters.
CHAT_MIN_MEMBERS, CHAT_MAX_MEMBERS = 2, 2000
CHAT_ID = re.compile(r"[0-9A-Za-z]{1,32}")
CHAT_NAME_CHARS = 50
# menu/create (old 企业号 doc, same API): 1-3 buttons, 1-5 sub-buttons, names at most 16 bytes
# (sub-buttons 40), a click key at most 128 bytes.
MENU_BUTTONS, MENU_SUB_BUTTONS = 3, 5
MENU_NAME_BYTES, MENU_SUB_NAME_BYTES, MENU_KEY_BYTES = 16, 40, 128

_KINDS: dict[int, ErrorKind] = {
    WeChatErrorCode.INVALID_CREDENTIAL: ErrorKind.TOKEN,  # 40001
    WeChatErrorCode.INVALID_ACCESS_TOKEN: ErrorKind.TOKEN,  # 40014
    WeChatErrorCode.EXPIRED_ACCESS_TOKEN: ErrorKind.TOKEN,  # 42001
    WeChatErrorCode.SYSTEM_BUSY: ErrorKind.RETRY,  # -1
    WeChatErrorCode.OUT_OF_API_FREQ_LIMIT: ErrorKind.RETRY,  # 45009
    ALL_RECIPIENTS_INVALID: ErrorKind.UNDELIVERABLE,
}


def classify(errcode: int | None) -> ErrorKind:
    """The kind of a WeCom errcode; None (no answer at all) is transient."""
    if errcode is None:
        return ErrorKind.RETRY
    return _KINDS.get(errcode, ErrorKind.FAIL)


class WeComAPIError(PlatformAPIError):
    """WeCom answered with a non-zero errcode, or refused a member it lists as invalid."""

    def __init__(self, errcode: int | None, errmsg: str, *, kind: ErrorKind | None = None) -> None:
        super().__init__(errcode, errmsg,
                         kind=kind or (ErrorKind.FAIL if errcode is None else classify(errcode)))


@dataclass(frozen=True)
class SentCard:
    """A template card WeCom accepted: msgid, task_id, and the response_code to update it once."""

    msgid: str
    task_id: str
    response_code: str


def split_text(text: str, limit: int = MAX_TEXT_BYTES) -> list[str]:
    """Text in parts of at most `limit` UTF-8 bytes, cut at line breaks, numbered "(1/2)" last.

    A line longer than a part is cut at its last space, or between characters; a part never
    splits a character.
    """
    if len(text.encode()) <= limit:
        return [text]
    digits = 1
    while True:
        # The marker's size depends on how many parts there are: grow it until it is wide enough.
        budget = limit - len(f"\n({'9' * digits}/{'9' * digits})".encode())
        if budget < 8:
            raise ValueError(f"a limit of {limit} bytes leaves no room for the text")
        parts = _pack(text, budget)
        if len(parts) < 10 ** digits:
            return [f"{part}\n({i}/{len(parts)})" for i, part in enumerate(parts, 1)]
        digits += 1


def _pack(text: str, budget: int) -> list[str]:
    parts: list[str] = []
    current = ""
    for line in text.split("\n"):
        for piece in _cut_line(line, budget):
            candidate = f"{current}\n{piece}" if current else piece
            if len(candidate.encode()) <= budget:
                current = candidate
                continue
            if current.strip():
                parts.append(current)
            current = piece
    if current.strip():
        parts.append(current)
    return parts


def _cut_line(line: str, budget: int) -> list[str]:
    """A line as pieces of at most `budget` bytes, cut at the last space where there is one."""
    pieces: list[str] = []
    while len(line.encode()) > budget:
        size, end = 0, len(line)
        for i, char in enumerate(line):
            size += len(char.encode())
            if size > budget:
                end = i  # the first character that does not fit
                break
        space = line.rfind(" ", 0, end)
        cut = space if space > 0 else end
        pieces.append(line[:cut])
        line = line[cut:].lstrip(" ") if space > 0 else line[cut:]
    pieces.append(line)
    return pieces


class WeComAPI:
    """Async client for one WeCom self-built app; all workers share its token in the database."""

    def __init__(
        self,
        *,
        db: Database,
        corp_id: str,
        agent_id: int,
        secret: str,
        base_url: str = DEFAULT_BASE_URL,
        clock: Clock | None = None,
        timeout: float = 10.0,
        refresh_margin: timedelta = timedelta(minutes=5),
        refresh_lease: timedelta = timedelta(seconds=30),
        refresh_wait: float = 30.0,
        poll_interval: float = 0.05,
    ) -> None:
        if not (corp_id and secret and agent_id):
            raise ValueError("a WeCom client needs the corp id, the app's agent id and its secret")
        self.corp_id = corp_id
        self.agent_id = int(agent_id)
        self._secret = secret
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None
        # One row per app: a corp's apps each have their own secret and token (WECHAT.md §8.3).
        self.keeper = TokenKeeper(
            db=db, key=f"wecom:{corp_id}:{self.agent_id}", fetch=self._fetch_token, clock=clock,
            refresh_margin=refresh_margin, refresh_lease=refresh_lease,
            refresh_wait=refresh_wait, poll_interval=poll_interval,
        )

    def __repr__(self) -> str:
        # Never show the secret or the token, even in a debugger or a traceback's locals.
        return (f"WeComAPI(corp_id={self.corp_id!r}, agent_id={self.agent_id}, "
                f"base_url={self._base_url!r})")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- messages to members --------------------------------------------------------------------

    async def send_reply(self, user: str, reply: Reply, *, unique_id: str) -> SentCard | None:
        """Send one of our replies: a text, or choices as a card (after its text, when too long)."""
        if isinstance(reply, TextReply):
            await self.send_text(user, reply.text)
            return None
        if isinstance(reply, ChoicesReply):
            if not reply.choices:
                await self.send_text(user, as_plain_text(reply))
                return None
            card = choice_card(reply, unique_id=unique_id)
            if card.lead_text is not None:
                await self.send_text(user, card.lead_text)
            return await self.send_card(user, card.template_card)
        if isinstance(reply, NoReply):
            return None
        raise TypeError(f"cannot send {type(reply).__name__}")

    async def send_text(
        self, user: str, text: str, *, duplicate_check_seconds: int | None = None
    ) -> list[str]:
        """Send a text, in numbered parts when it is over 2,048 bytes; WeCom's msgids.

        With `duplicate_check_seconds`, WeCom delivers an identical request only once in that
        window (WECHAT.md §8.3): a retried multi-part text does not repeat the parts that went out.
        It also swallows a member's identical answer asked for twice, so it is off by default.
        """
        if not text.strip():
            raise ValueError("WeCom refuses an empty text")
        msgids = []
        for part in split_text(text):
            answer = await self._send(user, {"msgtype": "text", "text": {"content": part}},
                                      duplicate_check_seconds)
            msgids.append(str(answer.get("msgid") or ""))
        return msgids

    async def send_card(self, user: str, card: Mapping[str, Any]) -> SentCard:
        """Send a template card (cards.choice_card builds one); the response_code comes back."""
        body = {"msgtype": "template_card", "template_card": dict(card)}
        answer = await self._send(user, body, None)
        return SentCard(msgid=str(answer.get("msgid") or ""),
                        task_id=str(card.get("task_id") or ""),
                        response_code=str(answer.get("response_code") or ""))

    async def update_card(
        self, response_code: str, replace_name: str, users: Iterable[str] = ()
    ) -> None:
        """Grey out a card's buttons with `replace_name`, for `users` (everyone it went to if none).

        Each response_code works once (WECHAT.md §8.3): from send_card, or from a click's callback.
        """
        if not response_code:
            raise ValueError("update_card needs a response_code")
        userids = list(users)
        body: dict[str, Any] = {"agentid": self.agent_id, "response_code": response_code,
                                "button": {"replace_name": replace_name}}
        if userids:
            body["userids"] = userids
        else:
            body["atall"] = 1
        await self._call(UPDATE_CARD_PATH, body)

    # -- group chats ----------------------------------------------------------------------------

    async def create_chat(self, name: str, owner: str, users: Sequence[str], chat_id: str) -> str:
        """Create a group chat of `users` owned by `owner`, with our own chat id; WeCom's chat id.

        Only self-built apps whose visibility is the root department may (appchat doc, 60011).
        """
        members = list(dict.fromkeys(users))
        if not CHAT_MIN_MEMBERS <= len(members) <= CHAT_MAX_MEMBERS:
            raise ValueError(f"a group chat needs {CHAT_MIN_MEMBERS} to {CHAT_MAX_MEMBERS} members")
        if owner not in members:
            raise ValueError("the owner must be one of the members")
        if not CHAT_ID.fullmatch(chat_id):
            raise ValueError("a chat id is 1 to 32 characters from [0-9a-zA-Z]")
        body = {"name": name[:CHAT_NAME_CHARS], "owner": owner, "userlist": members,
                "chatid": chat_id}
        try:
            answer = await self._call(CHAT_CREATE_PATH, body)
        except WeComAPIError as exc:
            if exc.errcode != NO_PRIVILEGE:
                raise
            raise WeComAPIError(exc.errcode, f"{exc.errmsg} (group chats need the app's visibility "
                                "to be the root department)") from None
        return str(answer.get("chatid") or chat_id)

    async def send_chat_text(self, chat_id: str, text: str) -> None:
        """Send a text to a group chat this app created, in numbered parts when over 2,048 bytes."""
        if not text.strip():
            raise ValueError("WeCom refuses an empty text")
        for part in split_text(text):
            await self._call(CHAT_SEND_PATH, {"chatid": chat_id, "msgtype": "text",
                                              "text": {"content": part}})

    # -- the app's menu -------------------------------------------------------------------------

    async def set_menu(self, buttons: Sequence[Mapping[str, Any]]) -> None:
        """Replace the app's menu; a `click` button's key is the command a tap runs."""
        _check_menu(buttons)
        await self._call(MENU_CREATE_PATH, {"button": [dict(b) for b in buttons]},
                         extra_params={"agentid": str(self.agent_id)})

    # -- access_token ---------------------------------------------------------------------------

    async def access_token(self) -> str:
        """The shared token, fetched or refreshed first when needed."""
        return await self.keeper.token()

    async def _fetch_token(self) -> FetchedToken:
        try:
            answer = await self._request(
                "GET", GETTOKEN_PATH, params={"corpid": self.corp_id, "corpsecret": self._secret})
        except TransientAPIError:
            raise
        except PlatformAPIError as exc:
            raise TokenFetchError(exc.errcode, f"{exc.errmsg} (check the WeCom corp id, the app's "
                                  "secret and its trusted IP list)") from None
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise TokenFetchError(None, "the gettoken answer has no access_token")
        try:
            expires_in = int(answer.get("expires_in", 7200))
        except (TypeError, ValueError):
            expires_in = 7200
        return FetchedToken(token=token, expires_in=expires_in)

    # -- HTTP -----------------------------------------------------------------------------------

    async def _send(
        self, user: str, body: dict[str, Any], duplicate_check_seconds: int | None
    ) -> dict[str, Any]:
        """message/send to one member; a member WeCom lists as invalid is undeliverable."""
        if not user or "|" in user:
            raise ValueError("send to one member's UserID at a time")
        body = {"touser": user, "agentid": self.agent_id, **body}
        if duplicate_check_seconds:
            body["enable_duplicate_check"] = 1
            body["duplicate_check_interval"] = duplicate_check_seconds
        answer = await self._call(SEND_PATH, body)
        # Some recipients invalid: WeCom still sends to the rest and names them, in lower case
        # (WECHAT.md §8.3; the send doc). With one recipient that is 81013, but be sure.
        invalid = {u.lower() for u in str(answer.get("invaliduser") or "").split("|") if u}
        if user.lower() in invalid:
            raise WeComAPIError(None, "the member is outside the app's visibility",
                                kind=ErrorKind.UNDELIVERABLE)
        return answer

    async def _call(self, path: str, body: dict[str, Any], *,
                    extra_params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """POST with the token; on a refused token, refresh once and retry once."""
        async def request(token: str) -> dict[str, Any]:
            params = {"access_token": token, **(extra_params or {})}
            return await self._request("POST", path, params=params, body=body)

        return await self.keeper.call(request, refused=_token_refused)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        return self._http

    async def _request(
        self, method: str, path: str, *, params: dict[str, str], body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One HTTP call; WeCom's answer, or an exception that never carries the query string."""
        data = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
        headers = {"Content-Type": "application/json; charset=utf-8"} if data is not None else None
        try:
            async with self._session().request(
                method, self._base_url + path, params=params, data=data, headers=headers
            ) as resp:
                if resp.status >= 500:
                    raise TransientAPIError(f"HTTP {resp.status} from {path}")
                if resp.status != 200:
                    raise WeComAPIError(None, f"HTTP {resp.status} from {path}")
                answer = await resp.json(content_type=None)
        # `from None`: aiohttp's messages can hold the URL, whose query has the token or secret.
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransientAPIError(f"{type(exc).__name__} calling {path}") from None
        except ValueError:
            raise WeComAPIError(None, f"{path} answered something that is not JSON") from None
        if not isinstance(answer, dict):
            raise WeComAPIError(None, f"{path} answered JSON that is not an object")
        try:
            errcode = int(answer.get("errcode") or 0)
        except (TypeError, ValueError):
            raise WeComAPIError(None, f"{path} answered a malformed errcode") from None
        if errcode != 0:
            errmsg = self._scrub(str(answer.get("errmsg", "")), params)
            raise WeComAPIError(errcode, f"{path}: {errmsg}")
        return answer

    def _scrub(self, errmsg: str, params: Mapping[str, str]) -> str:
        """errmsg without the secret or token, should a server ever echo the request back."""
        for secret in (self._secret, params.get("access_token", "")):
            if secret:
                errmsg = errmsg.replace(secret, "***")
        return errmsg


def _token_refused(exc: Exception) -> bool:
    return isinstance(exc, WeComAPIError) and exc.kind is ErrorKind.TOKEN


def _check_menu(buttons: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a menu WeCom would refuse, with a message that says which limit."""
    if not 1 <= len(buttons) <= MENU_BUTTONS:
        raise ValueError(f"a menu has 1 to {MENU_BUTTONS} buttons")
    for button in buttons:
        subs = button.get("sub_button")
        _check_menu_item(button, MENU_NAME_BYTES, has_subs=bool(subs))
        if subs is not None:
            if not 1 <= len(subs) <= MENU_SUB_BUTTONS:
                raise ValueError(f"a sub-menu has 1 to {MENU_SUB_BUTTONS} buttons")
            for sub in subs:
                _check_menu_item(sub, MENU_SUB_NAME_BYTES, has_subs=False)


def _check_menu_item(item: Mapping[str, Any], name_bytes: int, *, has_subs: bool) -> None:
    name = item.get("name")
    if not isinstance(name, str) or not name or len(name.encode()) > name_bytes:
        raise ValueError(f"menu name {name!r} must be 1 to {name_bytes} bytes")
    if has_subs:
        return
    if item.get("type") == "click":
        key = item.get("key")
        if not isinstance(key, str) or not key or len(key.encode()) > MENU_KEY_BYTES:
            raise ValueError(f"menu key {key!r} must be 1 to {MENU_KEY_BYTES} bytes")
    elif item.get("type") == "view":
        if not isinstance(item.get("url"), str) or not item["url"]:
            raise ValueError(f"menu item {name!r} of type view needs a url")
    else:
        raise ValueError(f"menu item {name!r} needs type click or view (or sub_button)")
