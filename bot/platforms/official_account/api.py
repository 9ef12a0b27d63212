"""Our async client for the WeChat Official Account API, with one shared access_token.

wechatpy's client is synchronous, has no timeout by default and refreshes the token without a
lock, so outbound calls go through this client instead (WECHAT.md §7). The token is kept by
bot.platforms.token_keeper, as WeCom's is; wechatpy is used here only for its error codes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp
from wechatpy.constants import WeChatErrorCode

from bot.config import DEFAULT_API_BASE_URL, ConfigError, WeChatConfig
from bot.platforms.errors import ErrorKind, PlatformAPIError, TokenFetchError, TransientAPIError
from bot.platforms.token_keeper import Clock, FetchedToken, TokenKeeper
from handlers.replies import ChoicesReply, NoReply, Reply, TextReply, as_plain_text
from storage.db import Database

__all__ = ["ErrorKind", "QRCode", "TokenFetchError", "TransientAPIError", "WeChatAPI",
           "WeChatAPIError", "classify"]

log = logging.getLogger(__name__)

TOKEN_PATH = "/cgi-bin/token"
CUSTOM_SEND_PATH = "/cgi-bin/message/custom/send"
TEMPLATE_SEND_PATH = "/cgi-bin/message/template/send"
QRCODE_CREATE_PATH = "/cgi-bin/qrcode/create"
MENU_CREATE_PATH = "/cgi-bin/menu/create"
SHOW_QRCODE_URL = "https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket="

# "invalid account type": msgmenu on a test or unverified account. wechatpy 1.8.18's
# WeChatErrorCode has no member for it, so it is named here.
INVALID_ACCOUNT_TYPE = 40200
QR_MAX_EXPIRE_SECONDS = 2_592_000  # 30 days (WECHAT.md §6)

_KINDS: dict[int, ErrorKind] = {
    WeChatErrorCode.INVALID_CREDENTIAL: ErrorKind.TOKEN,
    WeChatErrorCode.INVALID_ACCESS_TOKEN: ErrorKind.TOKEN,
    WeChatErrorCode.EXPIRED_ACCESS_TOKEN: ErrorKind.TOKEN,
    WeChatErrorCode.SYSTEM_BUSY: ErrorKind.RETRY,
    WeChatErrorCode.OUT_OF_API_FREQ_LIMIT: ErrorKind.RETRY,
    WeChatErrorCode.OUT_OF_RESPONSE_TIME_LIMIT: ErrorKind.HOLD,
    WeChatErrorCode.OUT_OF_RESPONSE_COUNT_LIMIT: ErrorKind.HOLD,
    WeChatErrorCode.REQUIRE_SUBSCRIBE: ErrorKind.UNDELIVERABLE,
    WeChatErrorCode.INVALID_OPENID: ErrorKind.UNDELIVERABLE,
    # The member is on our own blacklist; WECHAT.md §4 treats it like 43004.
    WeChatErrorCode.REQUIRE_UNBLOCK_USER: ErrorKind.UNDELIVERABLE,
}


def classify(errcode: int | None) -> ErrorKind:
    """The kind of a WeChat errcode; None (no answer at all) is transient."""
    if errcode is None:
        return ErrorKind.RETRY
    return _KINDS.get(errcode, ErrorKind.FAIL)


class WeChatAPIError(PlatformAPIError):
    """WeChat answered with a non-zero errcode (or with something that is not an answer)."""

    def __init__(self, errcode: int | None, errmsg: str) -> None:
        super().__init__(errcode, errmsg,
                         kind=ErrorKind.FAIL if errcode is None else classify(errcode))
        self.args = (f"WeChat API error {errcode}: {errmsg}",)


@dataclass(frozen=True)
class QRCode:
    """A parametric QR code: WeChat's ticket, the encoded URL, and where to fetch the image."""

    ticket: str
    url: str
    expire_seconds: int

    @property
    def image_url(self) -> str:
        """The showqrcode address of the image; it needs no access_token."""
        return SHOW_QRCODE_URL + quote(self.ticket, safe="")


class WeChatAPI:
    """Async client for the Official Account API; all workers share the token in the database."""

    def __init__(
        self,
        *,
        db: Database,
        app_id: str,
        app_secret: str,
        base_url: str = DEFAULT_API_BASE_URL,
        clock: Clock | None = None,
        timeout: float = 10.0,
        refresh_margin: timedelta = timedelta(minutes=5),
        refresh_lease: timedelta = timedelta(seconds=30),
        refresh_wait: float = 30.0,
        poll_interval: float = 0.05,
    ) -> None:
        if not (app_id and app_secret):
            raise ConfigError("wechat.app_id and wechat.app_secret must both be set to call the API")
        self._app_id = app_id
        self._secret = app_secret
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        # The row key stays the bare app id: tokens stored before the platforms shared a keeper.
        self._tokens = TokenKeeper(db=db, key=app_id, fetch=self._fetch_token, clock=clock,
                                   refresh_margin=refresh_margin, refresh_lease=refresh_lease,
                                   refresh_wait=refresh_wait, poll_interval=poll_interval)
        self._http: aiohttp.ClientSession | None = None
        # Learned from a 40200: this account cannot send msgmenu, so stop asking.
        self._msgmenu_supported = True

    @classmethod
    def from_config(
        cls, config: WeChatConfig, *, db: Database, clock: Clock | None = None, timeout: float = 10.0
    ) -> WeChatAPI:
        """A client for the configured account (check `config.api_configured` first)."""
        return cls(db=db, app_id=config.app_id, app_secret=config.app_secret,
                   base_url=config.api_base_url, clock=clock, timeout=timeout)

    def __repr__(self) -> str:
        # Never show the secret or the token, even in a debugger or a traceback's locals.
        return f"WeChatAPI(app_id={self._app_id!r}, base_url={self._base_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- messages -----------------------------------------------------------------------------

    async def send_reply(self, openid: str, reply: Reply) -> None:
        """Send one of our replies as a customer-service message."""
        if isinstance(reply, TextReply):
            await self.send_text(openid, reply.text)
        elif isinstance(reply, ChoicesReply):
            await self.send_choices(openid, reply)
        elif not isinstance(reply, NoReply):
            raise TypeError(f"cannot send {type(reply).__name__}")

    async def send_text(self, openid: str, text: str) -> None:
        """Send a customer-service text message."""
        await self._call(CUSTOM_SEND_PATH, {"touser": openid, "msgtype": "text",
                                            "text": {"content": text}})

    async def send_choices(self, openid: str, reply: ChoicesReply) -> None:
        """Send choices as a msgmenu, or as one plain text where the account cannot (40200)."""
        if not (reply.choices and self._msgmenu_supported):
            await self.send_text(openid, as_plain_text(reply))
            return
        try:
            await self._call(CUSTOM_SEND_PATH, {"touser": openid, "msgtype": "msgmenu",
                                                "msgmenu": _msgmenu(reply)})
        except WeChatAPIError as exc:
            if exc.errcode != INVALID_ACCOUNT_TYPE:
                raise
            log.warning("this account cannot send msgmenu (40200); sending choices as text")
            self._msgmenu_supported = False
            await self.send_text(openid, as_plain_text(reply))

    async def send_template(
        self,
        openid: str,
        *,
        template_id: str,
        data: Mapping[str, Any],
        url: str | None = None,
        client_msg_id: str | None = None,
    ) -> int | None:
        """Send a template message; WeChat's msgid. `client_msg_id` makes a repeat a no-op."""
        body: dict[str, Any] = {"touser": openid, "template_id": template_id, "data": dict(data)}
        if url:
            body["url"] = url
        if client_msg_id:
            body["client_msg_id"] = client_msg_id
        answer = await self._call(TEMPLATE_SEND_PATH, body)
        msgid = answer.get("msgid")
        return int(msgid) if msgid is not None else None

    async def set_menu(self, buttons: list[dict[str, Any]]) -> None:
        """Replace the account's custom menu (menu/create); click keys are our commands."""
        await self._call(MENU_CREATE_PATH, {"button": buttons})

    async def create_qrcode(self, scene: str, *, expire_seconds: int) -> QRCode:
        """Create a temporary QR code carrying a string scene (QR_STR_SCENE)."""
        if not 1 <= len(scene) <= 64:
            raise ValueError("a QR scene must be 1 to 64 characters")
        if not 1 <= expire_seconds <= QR_MAX_EXPIRE_SECONDS:
            raise ValueError(f"expire_seconds must be 1 to {QR_MAX_EXPIRE_SECONDS}")
        answer = await self._call(QRCODE_CREATE_PATH, {
            "expire_seconds": expire_seconds,
            "action_name": "QR_STR_SCENE",
            "action_info": {"scene": {"scene_str": scene}},
        })
        try:
            return QRCode(ticket=str(answer["ticket"]), url=str(answer["url"]),
                          expire_seconds=int(answer.get("expire_seconds", expire_seconds)))
        except KeyError as exc:
            raise WeChatAPIError(None, f"qrcode/create answer lacks {exc.args[0]}") from None

    # -- access_token -------------------------------------------------------------------------

    async def access_token(self) -> str:
        """A token with more than the refresh margin left, refreshed first when needed."""
        return await self._tokens.token()

    async def refresh_token(self, *, stale: str | None) -> str:
        """Replace `stale` with a new token; exactly one fetch however many callers ask at once."""
        return await self._tokens.refresh(stale=stale)

    async def _fetch_token(self) -> FetchedToken:
        """/cgi-bin/token, for the keeper (which holds the refresh lease meanwhile)."""
        try:
            answer = await self._request("GET", TOKEN_PATH, params={
                "grant_type": "client_credential", "appid": self._app_id, "secret": self._secret,
            })
        except WeChatAPIError as exc:
            raise TokenFetchError(
                exc.errcode,
                f"{exc.errmsg} (check wechat.app_id, wechat.app_secret and the IP whitelist)",
            ) from None
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise TokenFetchError(None, "the /cgi-bin/token answer has no access_token")
        log.info("fetched a new access_token for app %s", self._app_id)
        return FetchedToken(token=token, expires_in=int(answer.get("expires_in", 7200)))

    # -- HTTP ---------------------------------------------------------------------------------

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST with the token; on a refused token, refresh once and retry once."""

        async def request(token: str) -> dict[str, Any]:
            return await self._request("POST", path, params={"access_token": token}, body=body)

        return await self._tokens.call(
            request, refused=lambda exc: isinstance(exc, WeChatAPIError) and exc.kind is ErrorKind.TOKEN)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        return self._http

    async def _request(
        self, method: str, path: str, *, params: dict[str, str], body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One HTTP call; WeChat's answer, or an exception that never carries the query string."""
        # ensure_ascii=False: WeChat shows \uXXXX escapes literally in customer-service messages.
        data = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
        headers = {"Content-Type": "application/json; charset=utf-8"} if data is not None else None
        try:
            async with self._session().request(
                method, self._base_url + path, params=params, data=data, headers=headers
            ) as resp:
                if resp.status >= 500:
                    raise TransientAPIError(f"HTTP {resp.status} from {path}")
                if resp.status != 200:
                    raise WeChatAPIError(None, f"HTTP {resp.status} from {path}")
                answer = await resp.json(content_type=None)
        # `from None`: aiohttp's messages can include the URL, whose query holds the token or secret.
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransientAPIError(f"{type(exc).__name__} calling {path}") from None
        except ValueError:
            raise WeChatAPIError(None, f"{path} answered something that is not JSON") from None
        if not isinstance(answer, dict):
            raise WeChatAPIError(None, f"{path} answered JSON that is not an object")
        errcode = int(answer.get("errcode") or 0)
        if errcode != WeChatErrorCode.SUCCESS:
            raise WeChatAPIError(errcode, str(answer.get("errmsg", "")))
        return answer


def _msgmenu(reply: ChoicesReply) -> dict[str, Any]:
    """The msgmenu body: a tap sends the command itself, which the router understands as typed."""
    # The tail repeats the commands as text, for clients that show the menu without tap targets.
    fallback = as_plain_text(ChoicesReply(text="", choices=reply.choices))
    return {
        "head_content": reply.text,
        "list": [{"id": str(i), "content": c.command} for i, c in enumerate(reply.choices, 1)],
        "tail_content": "\n\n".join(part for part in (reply.footer, fallback) if part),
    }
