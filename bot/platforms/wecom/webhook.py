"""Reading WeCom self-built app callbacks with wechatpy: signatures, crypto, parsing, replies.

The WeCom counterpart of bot/platforms/official_account/webhook.py, with its guarantees: msg_signature compared in
constant time, timestamps checked for freshness, XML with a DTD or entity declarations refused
before any parser sees it, and every reply value made CDATA-safe. WeCom differs from the
Official Account in that every callback is encrypted, the GET `echostr` is encrypted too, and the
id after the message is the corp id (WECHAT.md §0 rule 9, §8.1).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from xml.parsers.expat import ExpatError

from wechatpy.enterprise import parse_message
from wechatpy.enterprise.crypto import WeChatCrypto
from wechatpy.enterprise.exceptions import InvalidCorpIdException
from wechatpy.exceptions import InvalidSignatureException

from bot.platforms.inbound import (
    MAX_BODY,
    PushRejected,
    cdata_safe,
    check_fresh,
    parse_envelope,
    refuse_declarations,
    sign,
    timestamp_and_nonce,
)
from handlers.events import EventKind, InboundEvent
from handlers.replies import NoReply, Reply, as_plain_text

PLATFORM = "wecom"
# storage.models.InboundPush.key is VARCHAR(200).
MAX_DEDUPE_KEY = 200
# The text a button shows after a click when the caller has nothing better (WECHAT.md §8.3 example).
DEFAULT_REPLACE_NAME = "已处理"
TEMPLATE_CARD_EVENT = "template_card_event"

_SIGNATURE = re.compile(r"[0-9a-fA-F]{40}")


@dataclass(frozen=True)
class CardClick:
    """What a template_card_event says beyond our InboundEvent (WECHAT.md §8.2)."""

    task_id: str  # our card's task_id
    event_key: str  # the clicked button's key: the command text
    card_type: str  # button_interaction for the cards we send
    response_code: str  # single use, to update this card through the API (§8.3)


@dataclass(frozen=True)
class VerifiedCallback:
    """A callback whose signature and freshness were checked, decrypted and parsed."""

    event: InboundEvent
    timestamp: str
    nonce: str
    corp_id: str  # ToUserName: the passive reply comes from the corp
    agent_id: str  # AgentID of the app the member used ("" when WeCom sent none)
    card: CardClick | None = None  # set for a template_card_event


class WeComCallbacks:
    """Verifies, decrypts and parses callbacks for one WeCom self-built app, and renders replies."""

    def __init__(
        self,
        *,
        token: str,
        encoding_aes_key: str,
        corp_id: str,
        agent_id: str | int | None = None,
        max_clock_skew_seconds: int = 300,
    ) -> None:
        if not (token and corp_id):
            raise ValueError("a WeCom callback needs its Token and the corp id")
        if len(encoding_aes_key) != 43:  # WECHAT.md §1.3: 43 characters, 32 bytes once decoded
            raise ValueError("the WeCom EncodingAESKey must be 43 characters")
        self._token = token
        self.corp_id = corp_id
        self.agent_id = str(agent_id) if agent_id is not None else ""
        self._skew = max_clock_skew_seconds
        # receive_id = corp id for a self-built app (WECHAT.md §8.1).
        self._crypto = WeChatCrypto(token, encoding_aes_key, corp_id)

    def __repr__(self) -> str:
        return f"WeComCallbacks(corp_id={self.corp_id!r}, agent_id={self.agent_id!r})"

    def _check_query(self, query: Mapping[str, str]) -> tuple[str, str, str]:
        """timestamp, nonce and msg_signature, each well-formed (400 otherwise)."""
        timestamp, nonce = timestamp_and_nonce(query)
        return timestamp, nonce, query.get("msg_signature", "")

    def _check_signature(self, msg_signature: str, timestamp: str, nonce: str, encrypted: str,
                         now: float) -> None:
        expected = sign(self._token, timestamp, nonce, encrypted)
        if not _SIGNATURE.fullmatch(msg_signature) or not hmac.compare_digest(
            expected.encode(), msg_signature.lower().encode()
        ):
            raise PushRejected(403, "bad msg_signature")
        check_fresh(timestamp, now=now, skew=self._skew)

    def verify_url(self, query: Mapping[str, str], *, now: float | None = None) -> str:
        """GET URL verification: the decrypted echostr, to send back as the plain body.

        WeCom wants the answer within 1 s (WECHAT.md §8.1): this touches neither the database
        nor the network.
        """
        timestamp, nonce, msg_signature = self._check_query(query)
        echostr = query.get("echostr")
        if not echostr:
            raise PushRejected(400, "missing echostr")
        # Base64 has no spaces: a space is a '+' that someone form-decoded on the way (§8.1 says
        # to URL-decode the parameters; a proxy or a hand-made test may have decoded '+' too).
        echostr = echostr.replace(" ", "+")
        self._check_signature(msg_signature, timestamp, nonce, echostr,
                              time.time() if now is None else now)
        try:
            plain = self._crypto.check_signature(msg_signature.lower(), timestamp, nonce, echostr)
        except InvalidCorpIdException:
            raise PushRejected(403, "echostr for another corp id") from None
        except InvalidSignatureException:
            raise PushRejected(403, "bad msg_signature") from None
        except (ValueError, TypeError, IndexError, struct.error):
            raise PushRejected(400, "undecryptable echostr") from None
        return str(plain)

    def read(
        self, query: Mapping[str, str], body: bytes, *, now: float | None = None
    ) -> VerifiedCallback:
        """Verify, decrypt and parse a POSTed callback."""
        if len(body) > MAX_BODY:
            raise PushRejected(413, "body too large")
        timestamp, nonce, msg_signature = self._check_query(query)
        envelope = parse_envelope(body)
        encrypt = envelope.get("Encrypt")
        if not isinstance(encrypt, str) or not encrypt:
            # WeCom never sends plaintext (WECHAT.md §0 rule 9).
            raise PushRejected(400, "callback without Encrypt")
        self._check_signature(msg_signature, timestamp, nonce, encrypt,
                              time.time() if now is None else now)
        try:
            inner = self._crypto.decrypt_message({"Encrypt": encrypt}, msg_signature.lower(),
                                                 timestamp, nonce)
        # InvalidCorpIdException is not an InvalidSignatureException: both must be caught.
        except InvalidCorpIdException:
            raise PushRejected(403, "ciphertext for another corp id") from None
        except InvalidSignatureException:
            raise PushRejected(403, "bad msg_signature") from None
        except (ValueError, TypeError, IndexError, struct.error):
            raise PushRejected(400, "undecryptable Encrypt") from None
        raw = inner.encode() if isinstance(inner, str) else inner
        refuse_declarations(raw)
        try:
            msg = parse_message(raw.decode("utf-8"))
        except (ExpatError, UnicodeDecodeError, ValueError):
            raise PushRejected(400, "malformed XML") from None
        except (KeyError, TypeError, AttributeError):
            raise PushRejected(400, "callback without an <xml> root, MsgType or Event") from None
        data: Mapping[str, Any] = getattr(msg, "_data", None) or {}
        agent_id = _text(data.get("AgentID"))
        if self.agent_id and agent_id and agent_id != self.agent_id:
            # Another app of the same corp configured with our Token and key: not ours to answer.
            raise PushRejected(403, "callback for another agent id")
        event, card = _to_event(data)
        return VerifiedCallback(event=event, timestamp=timestamp, nonce=nonce,
                                corp_id=_text(data.get("ToUserName")) or self.corp_id,
                                agent_id=agent_id, card=card)

    def render(self, callback: VerifiedCallback, reply: Reply, *, now: float | None = None) -> str:
        """The HTTP body that answers a callback: empty for no reply, else an encrypted text reply.

        Choices become plain text with the commands to type: a passive reply cannot carry a
        template card (send one with WeComAPI.send_card instead).
        """
        if isinstance(reply, NoReply):
            return ""  # WeCom: HTTP 200 with an empty body means "received, no reply" (§8.1)
        return self._encrypt(callback, "text", {"Content": cdata_safe(as_plain_text(reply))}, now)

    def render_update_button(
        self, callback: VerifiedCallback, replace_name: str = DEFAULT_REPLACE_NAME,
        *, now: float | None = None,
    ) -> str:
        """The encrypted update_button reply to a card click: its buttons then show `replace_name`.

        WECHAT.md §8.3 (way 1): it updates the clicker's card only, and must come within 5 s.
        """
        if callback.card is None:
            raise ValueError("update_button answers a template_card_event only")
        name = cdata_safe(replace_name)
        inner = f"<Button><ReplaceName><![CDATA[{name}]]></ReplaceName></Button>"
        return self._encrypt(callback, "update_button", {}, now, raw_tail=inner)

    def _encrypt(self, callback: VerifiedCallback, msg_type: str, fields: Mapping[str, str],
                 now: float | None, *, raw_tail: str = "") -> str:
        created = int(time.time() if now is None else now)
        # The passive-reply header of WECHAT.md §2, addressed back: to the member, from the corp.
        parts = [
            f"<ToUserName><![CDATA[{cdata_safe(callback.event.member_id)}]]></ToUserName>",
            f"<FromUserName><![CDATA[{cdata_safe(callback.corp_id)}]]></FromUserName>",
            f"<CreateTime>{created}</CreateTime>",
            f"<MsgType><![CDATA[{msg_type}]]></MsgType>",
        ]
        parts += [f"<{name}><![CDATA[{value}]]></{name}>" for name, value in fields.items()]
        xml = "<xml>" + "".join(parts) + raw_tail + "</xml>"
        # Nonce = the request's, TimeStamp = now, MsgSignature over both (WECHAT.md §1.3).
        return str(self._crypto.encrypt_message(xml, callback.nonce, str(created)))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dedupe_key(user: str, created: int, event_name: str, card: CardClick | None) -> str:
    # Namespaced by platform: a UserID could equal some Official Account's OpenID.
    key = f"{PLATFORM}:evt:{user}:{created}:{event_name}"
    if card is None:
        return key
    # WeCom's event dedupe is FromUserName + CreateTime (WECHAT.md §8.1), but two clicks in one
    # second on two cards, or on two buttons, are two decisions: the card and button go in too.
    full = f"{key}:{card.task_id}:{card.event_key}"
    if len(full) <= MAX_DEDUPE_KEY:
        return full
    # A button key may be 1,024 bytes: past the column's width, a digest keeps clicks apart.
    digest = hashlib.sha256(f"{card.task_id}\0{card.event_key}".encode()).hexdigest()[:40]
    return f"{key}:#{digest}"


def _to_event(data: Mapping[str, Any]) -> tuple[InboundEvent, CardClick | None]:
    """wechatpy's parsed callback (its `_data`) -> our own event, and a card click's details."""
    msg_type, user = data.get("MsgType"), data.get("FromUserName")
    if not isinstance(msg_type, str) or not isinstance(user, str) or not user:
        raise PushRejected(400, "callback without MsgType or FromUserName")
    try:
        created = int(data.get("CreateTime") or 0)
        created_at = datetime.fromtimestamp(created, UTC)
    except (ValueError, TypeError, OverflowError, OSError):
        raise PushRejected(400, "callback with a malformed CreateTime") from None
    msg_type = msg_type.lower()
    msg_id = _text(data.get("MsgId"))
    event_name = _text(data.get("Event"))
    kind = EventKind.OTHER
    extra: dict[str, str] = {}
    card: CardClick | None = None
    if msg_type == "text":
        kind, extra = EventKind.TEXT, {"text": _text(data.get("Content"))}
    elif msg_type == "event":
        event = event_name.lower()
        if event == "subscribe":  # added to the app's visibility (WECHAT.md §8.2)
            kind = EventKind.SUBSCRIBE
        elif event == "unsubscribe":
            kind = EventKind.UNSUBSCRIBE
        elif event == "click":  # a menu item: its key is a command (set_menu)
            kind, extra = EventKind.CLICK, {"key": _text(data.get("EventKey"))}
        elif event == TEMPLATE_CARD_EVENT:
            # wechatpy 1.8.18 parses this as UnknownMessage (WECHAT.md §8.2): read the fields.
            card = CardClick(task_id=_text(data.get("TaskId")),
                             event_key=_text(data.get("EventKey")),
                             card_type=_text(data.get("CardType")),
                             response_code=_text(data.get("ResponseCode")))
            # The button's key is the command text (cards.py), so a click runs it as if typed.
            kind, extra = EventKind.CLICK, {"key": card.event_key}
    # MsgId alone is not enough: a stored reply (an export link, say) belongs to its sender.
    key = (f"{PLATFORM}:msg:{user}:{msg_id}" if msg_id and msg_id != "0"
           else _dedupe_key(user, created, event_name, card))
    event_obj = InboundEvent(kind=kind, platform=PLATFORM, member_id=user, dedupe_key=key,
                             created_at=created_at, raw_type=msg_type, **extra)
    return event_obj, card
