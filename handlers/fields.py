"""Card field names and visibility levels in both languages, and cleaning what members type."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Optional

from handlers.router import after_alias, normalize
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
                original = text.strip()
                best = (name, original[len(original) - len(rest):].strip() if rest else "")
                best_len = len(alias)
    return best


def clean(value: str) -> str:
    """Trimmed, with control characters removed (line breaks become spaces)."""
    out = []
    for ch in unicodedata.normalize("NFC", value):
        if ch in "\r\n\t":
            out.append(" ")
        elif unicodedata.category(ch) in {"Cc", "Cs", "Co"} or (unicodedata.category(ch) == "Cf" and ch != "\u200d"):
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
