"""Our own, platform-neutral inbound event type. Handlers never see a wechatpy class."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum


class EventKind(str, Enum):
    """What happened."""

    TEXT = "text"  # a typed message, or a tapped choice (which arrives as text)
    SUBSCRIBE = "subscribe"  # a new follower; `scene` set when it came through a QR code
    UNSUBSCRIBE = "unsubscribe"
    SCAN = "scan"  # an existing follower scanned a parametric QR code
    CLICK = "click"  # a menu click with a key
    OTHER = "other"  # images, voice, locations and events we do not act on


@dataclass(frozen=True)
class InboundEvent:
    """One push from a member, already verified, decrypted and parsed."""

    kind: EventKind
    platform: str
    member_id: str  # the platform's id for the member (OpenID on the Official Account)
    dedupe_key: str
    created_at: datetime
    text: str = ""
    scene: str = ""  # the QR scene string, without WeChat's `qrscene_` prefix
    key: str = ""  # a menu click's key
    choice_id: str = ""  # bizmsgmenuid of a tapped choice, when WeChat sends one
    raw_type: str = ""  # the platform's message or event type, for logs

    @property
    def is_user_message(self) -> bool:
        """A message the member typed or tapped: it opens the 48-hour window."""
        return self.kind is EventKind.TEXT or self.kind is EventKind.OTHER and self.raw_type != "event"
