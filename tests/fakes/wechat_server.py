"""FakeWeChatServer: pushes to our webhook signed and encrypted the way WeChat does it.

Its crypto is written here from the published scheme with `cryptography`, not borrowed from
wechatpy, so that the tests compare two implementations; tests/test_fake_wechat.py proves it
against the official vectors of WECHAT.md §1.4.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import secrets
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Optional
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import aiohttp
import xmltodict
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def signature(*parts: str) -> str:
    """sha1 over the lexicographically sorted parts, as WeChat signs."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def _pad(data: bytes) -> bytes:
    n = 32 - len(data) % 32
    return data + bytes([n]) * n


def encrypt(aes_key43: str, app_id: str, plaintext: str, random16: bytes) -> str:
    """AES-256-CBC of random(16) + len(4, big-endian) + msg + appid, PKCS#7 to 32 bytes."""
    key = base64.b64decode(aes_key43 + "=")
    msg = plaintext.encode()
    raw = random16 + struct.pack(">I", len(msg)) + msg + app_id.encode()
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(_pad(raw)) + enc.finalize()).decode()


def decrypt(aes_key43: str, encrypted: str) -> tuple[str, str, bytes]:
    """The inverse: (message, appid, random prefix)."""
    key = base64.b64decode(aes_key43 + "=")
    dec = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    raw = dec.update(base64.b64decode(encrypted)) + dec.finalize()
    raw = raw[: -raw[-1]]
    (length,) = struct.unpack(">I", raw[16:20])
    return raw[20 : 20 + length].decode(), raw[20 + length :].decode(), raw[:16]


def cdata(text: str) -> str:
    """Text as one CDATA value: a `]]>` inside is split across two sections, as XML requires."""
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def text_xml(openid: str, content: str, msg_id: int, *, create_time: Optional[int] = None,
             to: str = "gh_fakeaccount", extra: str = "") -> str:
    """A text message push."""
    ts = int(time.time()) if create_time is None else create_time
    return (f"<xml><ToUserName>{cdata(to)}</ToUserName><FromUserName>{cdata(openid)}"
            f"</FromUserName><CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content>{cdata(content)}</Content><MsgId>{msg_id}</MsgId>{extra}</xml>")


def parse_strictly(xml: str) -> dict[str, str]:
    """Read a flat <xml> message as WeChat must: well-formed, and every element at most once."""
    root = ElementTree.fromstring(xml)  # expat: any broken markup raises ParseError
    assert root.tag == "xml", f"reply root is <{root.tag}>"
    tags = [child.tag for child in root]
    assert len(tags) == len(set(tags)), f"reply repeats an element: {tags}"
    for child in root:
        assert len(child) == 0, f"reply element <{child.tag}> has markup inside: {xml!r}"
    return {child.tag: child.text or "" for child in root}


def event_xml(openid: str, event: str, *, key: Optional[str] = None, create_time: Optional[int] = None,
              to: str = "gh_fakeaccount", ticket: Optional[str] = None) -> str:
    """An event push (subscribe, unsubscribe, SCAN, CLICK …)."""
    ts = int(time.time()) if create_time is None else create_time
    body = (f"<xml><ToUserName><![CDATA[{to}]]></ToUserName><FromUserName><![CDATA[{openid}]]>"
            f"</FromUserName><CreateTime>{ts}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[{event}]]></Event>")
    if key is not None:
        body += f"<EventKey><![CDATA[{escape(key)}]]></EventKey>"
    if ticket is not None:
        body += f"<Ticket><![CDATA[{ticket}]]></Ticket>"
    return body + "</xml>"


@dataclass
class Answer:
    """What our webhook answered, decrypted when it was encrypted."""

    status: int
    body: str
    xml: Optional[dict[str, str]] = None  # the reply message, when it is XML

    @property
    def content(self) -> Optional[str]:
        """The text reply's Content, or None."""
        return self.xml.get("Content") if self.xml else None


@dataclass
class FakeWeChatServer:
    """Sends pushes like WeChat's servers: plain, compatible or safe mode."""

    url: str
    token: str
    app_id: str = ""
    aes_key: str = ""
    mode: str = "plain"  # plain | compat | safe
    clock: Callable[[], float] = time.time
    random16: Callable[[], bytes] = lambda: os.urandom(16)
    # Random per fake, as WeChat's nonces are: two fakes pushing to workers that share one
    # database (and its memory of plain-mode nonces) must not send the same ones.
    _nonces: "itertools.count[int]" = field(
        default_factory=lambda: itertools.count(100_000_000 + secrets.randbelow(800_000_000)))
    # Random per fake, as WeChat's ids are unique: a restarted bot must not see old ids reused.
    _msg_ids: "itertools.count[int]" = field(
        default_factory=lambda: itertools.count(secrets.randbits(56) + (1 << 60)))

    def next_msg_id(self) -> int:
        """A fresh MsgId."""
        return next(self._msg_ids)

    def sign_query(self, xml: str, *, timestamp: Optional[int] = None, nonce: Optional[str] = None,
                   openid: str = "") -> tuple[dict[str, str], str]:
        """The query string and body WeChat would send for this XML in the current mode."""
        ts = str(int(self.clock()) if timestamp is None else timestamp)
        nonce = nonce or str(next(self._nonces))
        query = {"signature": signature(self.token, ts, nonce), "timestamp": ts, "nonce": nonce}
        if openid:
            query["openid"] = openid
        if self.mode == "plain":
            return query, xml
        enc = encrypt(self.aes_key, self.app_id, xml, self.random16())
        query["encrypt_type"] = "aes"
        query["msg_signature"] = signature(self.token, ts, nonce, enc)
        if self.mode == "compat":
            body = xml[: -len("</xml>")] + f"<Encrypt><![CDATA[{enc}]]></Encrypt></xml>"
        else:
            to = xmltodict.parse(xml)["xml"].get("ToUserName", "")
            body = f"<xml><ToUserName>{cdata(to)}</ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt></xml>"
        return query, body

    async def post_raw(self, query: dict[str, str], body: str | bytes,
                       session: Optional[aiohttp.ClientSession] = None) -> Answer:
        """POST exactly this query and body; decrypt and check an encrypted answer."""
        own = session is None
        session = session or aiohttp.ClientSession()
        try:
            async with session.post(self.url, params=query, data=body,
                                    headers={"Content-Type": "text/xml"}) as resp:
                text = await resp.text()
                status = resp.status
        finally:
            if own:
                await session.close()
        return self._read_answer(status, text, query)

    async def push(self, xml: str, *, session: Optional[aiohttp.ClientSession] = None, **kw: object) -> Answer:
        """Sign (and encrypt) a push and deliver it."""
        query, body = self.sign_query(xml, **kw)  # type: ignore[arg-type]
        return await self.post_raw(query, body, session=session)

    async def verify_url(self, echostr: str, *, timestamp: Optional[int] = None) -> tuple[int, str]:
        """The GET URL check WeChat makes when the server address is saved."""
        ts = str(int(self.clock()) if timestamp is None else timestamp)
        nonce = str(next(self._nonces))
        params = {"signature": signature(self.token, ts, nonce), "timestamp": ts, "nonce": nonce,
                  "echostr": echostr}
        async with aiohttp.ClientSession() as session:
            async with session.get(self.url, params=params) as resp:
                return resp.status, await resp.text()

    def _read_answer(self, status: int, text: str, query: dict[str, str]) -> Answer:
        if status != 200 or text in ("", "success") or not text.startswith("<xml"):
            return Answer(status=status, body=text)
        doc = parse_strictly(text)
        if "Encrypt" in doc:
            expected = signature(self.token, doc["TimeStamp"], doc["Nonce"], doc["Encrypt"])
            assert doc["MsgSignature"] == expected, "reply MsgSignature does not verify"
            assert doc["Nonce"] == query["nonce"], "reply must echo the request nonce"
            inner, app_id, _ = decrypt(self.aes_key, doc["Encrypt"])
            assert app_id == self.app_id, "reply encrypted for another appid"
            return Answer(status=status, body=text, xml=parse_strictly(inner))
        return Answer(status=status, body=text, xml=doc)
