"""What every WeChat platform's webhook checks before anything reads a push.

The Official Account and WeCom sign, encrypt and format their pushes the same way (WECHAT.md
§1.3, §8.1); wechatpy does the crypto and the parsing, and this module closes the gaps it
leaves (§1.5, §9): constant-time signature checks, timestamp and nonce shapes, no DTD or
entity declarations, and text that cannot break the CDATA of a reply.
"""

from __future__ import annotations

import hmac
import re
from typing import Any
from xml.parsers.expat import ExpatError

import xmltodict
from wechatpy.utils import WeChatSigner

# A push is a few KiB (WECHAT.md §8.1 sample); anything larger is refused with 413.
MAX_BODY = 64 * 1024
_DOCTYPE = re.compile(rb"<!\s*(doctype|entity)", re.IGNORECASE)
# The nonce is echoed into the CDATA of an encrypted reply: WeChat's are digits; allow no markup.
_NONCE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Unix seconds in ASCII digits (str.isdigit also takes '²'); 12 digits last for 30,000 years.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# Characters XML 1.0 does not allow at all, not even in CDATA.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class PushRejected(Exception):
    """A push that is refused with an HTTP status and a short reason for the log."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def sign(*parts: str) -> str:
    """WeChat's signature: SHA-1 over the sorted, concatenated parts (wechatpy's signer)."""
    signer = WeChatSigner()
    signer.add_data(*parts)
    return str(signer.signature)


def check_signature(expected: str, given: str | None, what: str) -> None:
    """403 unless `given` is the expected signature (compared in constant time)."""
    if not given or not hmac.compare_digest(expected.encode(), given.lower().encode()):
        raise PushRejected(403, f"bad {what}")


def timestamp_and_nonce(query: Any) -> tuple[str, str]:
    """The query's timestamp and nonce, each well-formed (400 otherwise)."""
    timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
    if not _TIMESTAMP.fullmatch(timestamp) or not _NONCE.fullmatch(nonce):
        raise PushRejected(400, "missing or malformed timestamp/nonce")
    return str(timestamp), str(nonce)


def check_fresh(timestamp: str, *, now: float, skew: int) -> None:
    """403 when the timestamp is further than `skew` seconds from now (0: no check)."""
    if skew and abs(now - int(timestamp)) > skew:
        raise PushRejected(403, "stale timestamp")


def refuse_declarations(body: bytes) -> None:
    """400 for XML with a DTD or entity declarations, before any parser sees it."""
    if _DOCTYPE.search(body):
        raise PushRejected(400, "XML with DTD or entity declarations")


def parse_envelope(body: bytes) -> dict[str, Any]:
    """The <xml> root of a push's envelope as a dict (400 for anything else)."""
    refuse_declarations(body)
    try:
        doc = xmltodict.parse(body.decode("utf-8"), disable_entities=True)
    except (ExpatError, UnicodeDecodeError, ValueError):
        raise PushRejected(400, "malformed XML") from None
    root = doc.get("xml") if isinstance(doc, dict) else None
    if not isinstance(root, dict):
        raise PushRejected(400, "XML without an <xml> root")
    return root


def cdata_safe(text: str) -> str:
    """Text to place inside <![CDATA[…]]>: any `]]>` is split across two sections.

    The XML stays well-formed and reads back as exactly the same text; characters XML cannot
    carry at all are dropped.
    """
    return _NOT_XML.sub("", text).replace("]]>", "]]]]><![CDATA[>")
