"""FakeWeComServer: callbacks to our webhook, encrypted and signed the way WeCom sends them.

WeCom always encrypts (WECHAT.md §0 rule 9, §8.1): the GET URL check carries an encrypted
`echostr` and a msg_signature, every POST is `<xml><ToUserName>corp</ToUserName><Encrypt>…
</Encrypt><AgentID>…</AgentID></xml>` with msg_signature/timestamp/nonce in the query, and the
id after each message is the corp id. The crypto is the `cryptography`-based implementation of
tests/fakes/wechat_server.py (the scheme of §1.3 is the same), not wechatpy's, so the tests
compare two implementations; tests/test_fake_wecom.py proves it against Vectors C and D (§1.4).
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

import aiohttp

from tests.fakes.wechat_server import cdata, decrypt, encrypt, signature

# Elements a passive reply may nest one level deep (update_button, update_template_card: §8.3).
_NESTED = {"Button", "TemplateCard"}


def parse_reply(xml: str) -> dict[str, Any]:
    """Read a reply as WeCom must: well-formed, every element at most once, nesting only where
    the passive-reply formats have it (a dict for those elements, text for the others)."""
    root = ElementTree.fromstring(xml)  # expat: any broken markup raises ParseError
    assert root.tag == "xml", f"reply root is <{root.tag}>"
    tags = [child.tag for child in root]
    assert len(tags) == len(set(tags)), f"reply repeats an element: {tags}"
    out: dict[str, Any] = {}
    for child in root:
        if child.tag in _NESTED:
            inner_tags = [c.tag for c in child]
            assert len(inner_tags) == len(set(inner_tags)), f"<{child.tag}> repeats: {inner_tags}"
            assert all(len(c) == 0 for c in child), f"<{child.tag}> nests too deep: {xml!r}"
            out[child.tag] = {c.tag: c.text or "" for c in child}
        else:
            assert len(child) == 0, f"reply element <{child.tag}> has markup inside: {xml!r}"
            out[child.tag] = child.text or ""
    return out


@dataclass
class Answer:
    """What our webhook answered; an encrypted reply is verified and decrypted."""

    status: int
    body: str
    reply: dict[str, Any] | None = None  # the decrypted passive reply, when there is one

    @property
    def content(self) -> str | None:
        """A text reply's Content, or None."""
        return self.reply.get("Content") if self.reply else None

    @property
    def replace_name(self) -> str | None:
        """An update_button reply's ReplaceName, or None."""
        if not self.reply or self.reply.get("MsgType") != "update_button":
            return None
        button = self.reply.get("Button")
        return button.get("ReplaceName") if isinstance(button, dict) else None


@dataclass
class FakeWeComServer:
    """Sends callbacks like WeCom's servers do for one self-built app."""

    url: str
    token: str
    aes_key: str
    corp_id: str
    agent_id: int = 1000002
    clock: Callable[[], float] = time.time
    random16: Callable[[], bytes] = lambda: os.urandom(16)
    _nonces: itertools.count[int] = field(default_factory=lambda: itertools.count(1_500_000_000))
    # Random per fake, as WeCom's ids are unique: a restarted bot must not see old ids reused.
    _msg_ids: itertools.count[int] = field(
        default_factory=lambda: itertools.count(secrets.randbits(56) + (1 << 60)))

    # -- messages and events (decrypted shapes of WECHAT.md §8.2) --------------------------------

    def next_msg_id(self) -> int:
        """A fresh MsgId."""
        return next(self._msg_ids)

    def _head(self, user: str, msg_type: str, create_time: int | None) -> str:
        ts = int(self.clock()) if create_time is None else create_time
        return (f"<xml><ToUserName>{cdata(self.corp_id)}</ToUserName><FromUserName>{cdata(user)}"
                f"</FromUserName><CreateTime>{ts}</CreateTime><MsgType>{cdata(msg_type)}</MsgType>")

    def text(self, user: str, content: str, *, msg_id: int | None = None,
             create_time: int | None = None) -> str:
        """A text message from a member."""
        mid = self.next_msg_id() if msg_id is None else msg_id
        return (self._head(user, "text", create_time) + f"<Content>{cdata(content)}</Content>"
                f"<MsgId>{mid}</MsgId><AgentID>{self.agent_id}</AgentID></xml>")

    def event(self, user: str, event: str, *, key: str | None = None,
              create_time: int | None = None) -> str:
        """An event: subscribe, unsubscribe, enter_agent (with an empty EventKey), click …"""
        body = self._head(user, "event", create_time) + f"<Event>{cdata(event)}</Event>"
        if key is not None:
            body += f"<EventKey>{cdata(key)}</EventKey>"
        return body + f"<AgentID>{self.agent_id}</AgentID></xml>"

    def card_click(self, user: str, *, key: str, task_id: str, response_code: str,
                   card_type: str = "button_interaction", create_time: int | None = None) -> str:
        """A template_card_event: a member clicked a card's button (§8.2's official sample)."""
        return (self._head(user, "event", create_time)
                + f"<Event>{cdata('template_card_event')}</Event><EventKey>{cdata(key)}</EventKey>"
                f"<TaskId>{cdata(task_id)}</TaskId><CardType>{cdata(card_type)}</CardType>"
                f"<ResponseCode>{cdata(response_code)}</ResponseCode><AgentID>{self.agent_id}</AgentID></xml>")

    # -- signing and sending ---------------------------------------------------------------------

    def seal(self, xml: str, *, timestamp: int | None = None, nonce: str | None = None,
             corp_id: str | None = None) -> tuple[dict[str, str], str]:
        """The query and body WeCom sends for this message (`corp_id`: encrypt for another corp)."""
        ts = str(int(self.clock()) if timestamp is None else timestamp)
        nonce = nonce or str(next(self._nonces))
        enc = encrypt(self.aes_key, self.corp_id if corp_id is None else corp_id, xml, self.random16())
        query = {"msg_signature": signature(self.token, ts, nonce, enc), "timestamp": ts, "nonce": nonce}
        body = (f"<xml><ToUserName>{cdata(self.corp_id)}</ToUserName><Encrypt>{cdata(enc)}</Encrypt>"
                f"<AgentID>{cdata(str(self.agent_id))}</AgentID></xml>")
        return query, body

    async def post_raw(self, query: dict[str, str], body: str | bytes,
                       session: aiohttp.ClientSession | None = None) -> Answer:
        """POST exactly this query and body; verify and decrypt an encrypted answer."""
        own = session is None
        session = session or aiohttp.ClientSession()
        try:
            async with session.post(self.url, params=query, data=body,
                                    headers={"Content-Type": "text/xml"}) as resp:
                text, status = await resp.text(), resp.status
        finally:
            if own:
                await session.close()
        return self._read_answer(status, text, query)

    async def push(self, xml: str, *, session: aiohttp.ClientSession | None = None,
                   timestamp: int | None = None, nonce: str | None = None) -> Answer:
        """Encrypt, sign and deliver a callback."""
        query, body = self.seal(xml, timestamp=timestamp, nonce=nonce)
        return await self.post_raw(query, body, session=session)

    def verify_query(self, plaintext: str, *, timestamp: int | None = None, nonce: str | None = None,
                     corp_id: str | None = None) -> dict[str, str]:
        """The GET query of the URL check WeCom makes when the callback URL is saved."""
        ts = str(int(self.clock()) if timestamp is None else timestamp)
        nonce = nonce or str(next(self._nonces))
        echostr = encrypt(self.aes_key, self.corp_id if corp_id is None else corp_id, plaintext,
                          self.random16())
        return {"msg_signature": signature(self.token, ts, nonce, echostr), "timestamp": ts,
                "nonce": nonce, "echostr": echostr}

    async def verify_url(self, plaintext: str, **kw: Any) -> tuple[int, str]:
        """Make the URL check: WeCom expects exactly `plaintext` back."""
        params = self.verify_query(plaintext, **kw)
        async with aiohttp.ClientSession() as session, session.get(self.url, params=params) as resp:
            return resp.status, await resp.text()

    def _read_answer(self, status: int, text: str, query: dict[str, str]) -> Answer:
        if status != 200 or text == "":
            return Answer(status=status, body=text)  # 200 + empty body: received, no reply (§8.1)
        envelope = parse_reply(text)
        # A passive reply must be encrypted (§8.1): a plain one is a bug, not a reply.
        assert set(envelope) == {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}, \
            f"reply is not an encrypted envelope: {text!r}"
        expected = signature(self.token, envelope["TimeStamp"], envelope["Nonce"], envelope["Encrypt"])
        assert envelope["MsgSignature"] == expected, "reply MsgSignature does not verify"
        assert envelope["Nonce"] == query.get("nonce"), "reply must echo the request nonce"
        inner, receive_id, _ = decrypt(self.aes_key, envelope["Encrypt"])
        assert receive_id == self.corp_id, "reply encrypted for another corp id"
        return Answer(status=status, body=text, reply=parse_reply(inner))
