"""Card field names and visibility levels in both languages, and cleaning what members type."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Optional

from handlers.router import after_alias, normalize, text_after
from storage.cards import MAX_TAGS, SPECS, Value
from storage.privacy import CONNECTIONS, HIDDEN, NETWORK

FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "name": ("name", "姓名", "名字"),
    "title": ("title", "职位", "头衔"),
    "company": ("company", "公司", "单位"),
    "city": ("city", "城市"),
    "industry": ("industry", "行业"),
    "offers": ("offers", "offer", "擅长", "能提供"),
    "needs": ("needs", "need", "需要", "需求"),
    "bio": ("bio", "简介", "介绍"),
    "contact": ("contact", "联系方式", "联系"),
}
LEVEL_ALIASES: dict[str, tuple[str, ...]] = {
    CONNECTIONS: ("connections", "connection", "仅好友", "好友"),
    NETWORK: ("network", "人脉圈", "人脉"),
    HIDDEN: ("hidden", "hide", "隐藏"),
}
TAG_SEPARATORS = ",，、;；"
CLEAR = {"-", "—", "clear", "清空"}


def split_alias(text: str, aliases: dict[str, tuple[str, ...]]) -> tuple[Optional[str], str]:
    """(canonical name, rest of the text) for the alias the text starts with; longest alias wins."""
    folded = normalize(text)
    best: tuple[Optional[str], str] = (None, text.strip())
    best_len = 0
    for name, names in aliases.items():
        for alias in names:
            if len(alias) <= best_len:
                continue
            rest = after_alias(folded, alias)
            if rest is not None:
                typed = text_after(text, alias)
                best = (name, rest.strip() if typed is None else typed)
                best_len = len(alias)
    return best


# Control, surrogate and private-use characters, and the line and paragraph separators
# (U+2028, U+2029), which would let a value start a fake line of its own in our messages.
_DROPPED = {"Cc", "Cs", "Co", "Zl", "Zp"}


def clean(value: str) -> str:
    """What a member typed into a card field, a note, a vouch or an ask, made safe to show.

    Trimmed; tabs and line breaks become spaces; control and format characters and the line
    and paragraph separators are dropped (the zero-width joiner stays: emoji need it).
    Everything else is kept exactly as typed: full-width punctuation too.
    """
    out = []
    for ch in unicodedata.normalize("NFC", value):
        category = unicodedata.category(ch)
        if ch in "\r\n\t":
            out.append(" ")
        elif category in _DROPPED or (category == "Cf" and ch != "\u200d"):
            continue
        else:
            out.append(ch)
    return "".join(out).strip()


@dataclass(frozen=True)
class Invalid:
    """Why a value was refused: a catalogue key and its parameters."""

    key: str
    params: dict[str, object]


def parse_value(field_name: str, raw: str) -> Value | Invalid:
    """Validate one field's new value; too long is refused with the limit, never cut."""
    spec = SPECS[field_name]
    value = clean(raw)
    if value in CLEAR:
        return [] if spec.tags else None
    if not value:
        return Invalid("value_empty", {})
    if not spec.tags:
        if len(value) > spec.max_len:
            return Invalid("value_too_long", {"max": spec.max_len, "got": len(value)})
        return value
    tags: list[str] = []
    current = value
    for sep in TAG_SEPARATORS[1:]:
        current = current.replace(sep, TAG_SEPARATORS[0])
    for part in current.split(TAG_SEPARATORS[0]):
        tag = part.strip()
        if not tag or tag.casefold() in {t.casefold() for t in tags}:
            continue
        if len(tag) > spec.max_len:
            return Invalid("tag_too_long", {"tag": tag, "max": spec.max_len, "got": len(tag)})
        tags.append(tag)
    if not tags:
        return Invalid("value_empty", {})
    if len(tags) > MAX_TAGS:
        return Invalid("too_many_tags", {"max": MAX_TAGS, "got": len(tags)})
    return tags
