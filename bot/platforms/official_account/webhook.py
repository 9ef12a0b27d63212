"""Reading WeChat Official Account pushes with wechatpy: signatures, crypto, parsing, replies.

wechatpy does the crypto, the XML parsing and the reply rendering; bot.platforms.inbound
closes the gaps it leaves (WECHAT.md §1.5, §9), for this platform and WeCom alike.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping
from xml.parsers.expat import ExpatError

from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.replies import TextReply as WeChatTextReply

from bot.config import WeChatConfig
from bot.platforms.inbound import (
    PushRejected,
    cdata_safe,
    check_fresh,
    check_signature,
    parse_envelope,
    refuse_declarations,
    sign,
    timestamp_and_nonce,
)
from handlers.events import EventKind, InboundEvent
from handlers.replies import NoReply, Reply, as_plain_text

PLATFORM = "oa"


@dataclass(frozen=True)
class VerifiedPush:
    """A push whose signature and freshness were checked, decrypted and parsed."""

    event: InboundEvent
    encrypted: bool
    timestamp: str
    nonce: str
    to_user: str


class OfficialAccountPushes:
    """Verifies, decrypts and parses pushes for one Official Account, and renders replies."""

    def __init__(self, config: WeChatConfig) -> None:
        self.config = config
        self.crypto = (
            WeChatCrypto(config.token, config.encoding_aes_key, config.app_id)
            if config.encoding_aes_key else None
        )

    def _check_query(self, query: Mapping[str, str], now: float) -> tuple[str, str]:
        timestamp, nonce = timestamp_and_nonce(query)
        check_signature(sign(self.config.token, timestamp, nonce), query.get("signature"), "signature")
        check_fresh(timestamp, now=now, skew=self.config.max_clock_skew_seconds)
        return timestamp, nonce

    def verify_url(self, query: Mapping[str, str], *, now: float | None = None) -> str:
        """GET URL verification: the echostr to send back."""
        self._check_query(query, time.time() if now is None else now)
        echostr = query.get("echostr")
        if echostr is None:
            raise PushRejected(400, "missing echostr")
        return echostr

    def read(self, query: Mapping[str, str], body: bytes, *, now: float | None = None) -> VerifiedPush:
        """Verify and parse a POSTed push in plain, compatible or safe mode."""
        timestamp, nonce = self._check_query(query, time.time() if now is None else now)
        encrypted = query.get("encrypt_type", "raw").lower() == "aes"
        if not encrypted and self.crypto is not None:
            # With an EncodingAESKey the account is in safe or compatible mode, and WeChat signs
            # the body (msg_signature). A plain push here is someone replaying a captured URL,
            # whose `signature` covers only timestamp and nonce, with a body of their own.
            raise PushRejected(403, "plain push, but wechat.encoding_aes_key is set (safe or "
                               "compatible mode); if the account was switched to plain mode, "
                               "clear wechat.encoding_aes_key")
        if encrypted:
            xml = parse_envelope(body)
            if self.crypto is None:
                raise PushRejected(400, "encrypted push but wechat.encoding_aes_key is not set")
            encrypt = xml.get("Encrypt")
            if not isinstance(encrypt, str) or not encrypt:
                raise PushRejected(400, "encrypted push without Encrypt")
            check_signature(sign(self.config.token, timestamp, nonce, encrypt),
                            query.get("msg_signature"), "msg_signature")
            try:
                inner = self.crypto.decrypt_message({"Encrypt": encrypt}, query["msg_signature"].lower(),
                                                    timestamp, nonce)
            except InvalidAppIdException:
                raise PushRejected(403, "ciphertext for another appid") from None
            except InvalidSignatureException:
                raise PushRejected(403, "bad msg_signature") from None
            except (ValueError, TypeError, IndexError, struct.error):
                raise PushRejected(400, "undecryptable Encrypt") from None
            raw = inner.encode() if isinstance(inner, str) else inner
        else:
            raw = body
        # The message itself is parsed once, by wechatpy, after the same guards.
        refuse_declarations(raw)
        try:
            msg = parse_message(raw.decode("utf-8"))
        except (ExpatError, UnicodeDecodeError, ValueError):
            raise PushRejected(400, "malformed XML") from None
        except (KeyError, TypeError, AttributeError):
            raise PushRejected(400, "push without an <xml> root or MsgType") from None
        data: Mapping[str, Any] = getattr(msg, "_data", None) or {}
        return VerifiedPush(event=_to_event(msg, data), encrypted=encrypted, timestamp=timestamp,
                            nonce=nonce, to_user=str(data.get("ToUserName") or ""))

    def render(self, push: VerifiedPush, reply: Reply) -> str:
        """The HTTP body that answers a push: `success`, or a (possibly encrypted) XML reply."""
        if isinstance(reply, NoReply):
            return "success"
        # wechatpy puts each value into CDATA as it is; a `]]>` in a card would end it there.
        xml = WeChatTextReply(
            source=cdata_safe(push.to_user), target=cdata_safe(push.event.member_id),
            content=cdata_safe(as_plain_text(reply)),
        ).render()
        if push.encrypted and self.crypto is not None:
            return str(self.crypto.encrypt_message(xml, push.nonce))
        return str(xml)


def _to_event(msg: Any, data: Mapping[str, Any]) -> InboundEvent:
    """wechatpy's parsed message -> our own event."""
    if not isinstance(data.get("MsgType"), str) or not isinstance(data.get("FromUserName"), str):
        raise PushRejected(400, "push without MsgType or FromUserName")
    try:
        created = int(data.get("CreateTime") or 0)
        created_at = datetime.fromtimestamp(created, timezone.utc)
    except (ValueError, TypeError, OverflowError, OSError):
        raise PushRejected(400, "push with a malformed CreateTime") from None
    openid = str(msg.source)
    msg_id = str(data.get("MsgId") or "")
    event_name = str(data.get("Event") or "")
    # MsgId alone is not enough: a stored reply (an export link, say) belongs to its sender.
    key = f"msg:{openid}:{msg_id}" if msg_id and msg_id != "0" else f"evt:{openid}:{created}:{event_name}"
    kind = EventKind.OTHER
    extra: dict[str, str] = {}
    if msg.type == "text":
        kind = EventKind.TEXT
        extra = {"text": str(msg.content or ""), "choice_id": str(data.get("bizmsgmenuid") or "")}
    elif msg.type == "voice" and getattr(msg, "recognition", None):
        # With speech recognition on, a spoken command is as good as a typed one.
        kind, extra = EventKind.TEXT, {"text": str(msg.recognition)}
    elif msg.type == "event":
        event = str(msg.event)
        if event in {"subscribe", "subscribe_scan"}:
            kind = EventKind.SUBSCRIBE
            extra = {"scene": str(data.get("EventKey") or "") if event == "subscribe_scan" else ""}
        elif event == "unsubscribe":
            kind = EventKind.UNSUBSCRIBE
        elif event == "scan":
            kind, extra = EventKind.SCAN, {"scene": str(data.get("EventKey") or "")}
        elif event == "click":
            kind, extra = EventKind.CLICK, {"key": str(data.get("EventKey") or "")}
    return InboundEvent(kind=kind, platform=PLATFORM, member_id=openid, dedupe_key=key,
                        created_at=created_at, raw_type=str(msg.type), **extra)
