"""Our ChoicesReply as a WeCom `button_interaction` template card.

A click comes back as a template_card_event whose EventKey is the button's key (WECHAT.md §8.2);
the key is the choice's command, so a click runs exactly what a member could type. Typing must
keep working, so the card shows the commands as text too.

Limits. task_id: unique within the app, `[0-9a-zA-Z_-@]`, at most 128 bytes (WECHAT.md §8.3).
Field sizes are not in WECHAT.md yet; they come from the official send-message doc's template
card section (developer.work.weixin.qq.com/document/path/90372, quoted field by field in the SDK
comments of zsmhub/workweixin `apis/发送应用消息-模板卡片消息.go`, WECHAT.md source
[WC-card-sdk-comment]): button_list at most 6 buttons; a button's key at most 1,024 bytes and
unique within the card; button text "建议不超过10个字"; main_title.title "建议不超过36个字",
main_title.desc "建议不超过44个字"; sub_title_text "建议不超过160个字". The character counts are
recommendations ("建议"): text past them is cut here, with an ellipsis, rather than left to
each client.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from handlers.replies import ChoicesReply, as_plain_text

CARD_TYPE = "button_interaction"
MAX_BUTTONS = 6
MAX_BUTTON_KEY_BYTES = 1024
BUTTON_TEXT_CHARS = 10
TITLE_CHARS = 36
DESC_CHARS = 44
SUB_TITLE_CHARS = 160
MAX_TASK_ID_BYTES = 128
_RANDOM_HEX = 16  # 64 random bits: two cards from one id never share a task_id
_NOT_TASK_ID = re.compile(r"[^0-9A-Za-z_@-]")
TASK_ID = re.compile(r"[0-9A-Za-z_@-]{1,128}")


@dataclass(frozen=True)
class ChoiceCard:
    """A card to send, its task_id, and the reply's full text when the card cannot hold it."""

    template_card: dict[str, Any]  # the `template_card` object of message/send
    task_id: str
    # When set, send this as a text message just before the card: the card alone would cut it.
    lead_text: str | None = None

    @property
    def commands(self) -> tuple[str, ...]:
        """The button keys, in order: what a click on each sends as a command."""
        return tuple(b["key"] for b in self.template_card["button_list"])


def task_id_for(unique_id: str) -> str:
    """A task_id from our own id plus a random part, in WeCom's alphabet and length (§8.3)."""
    suffix = secrets.token_hex(_RANDOM_HEX // 2)
    head = _NOT_TASK_ID.sub("_", unique_id)[: MAX_TASK_ID_BYTES - len(suffix) - 1]
    return f"{head}-{suffix}" if head else suffix


def choice_card(reply: ChoicesReply, *, unique_id: str) -> ChoiceCard:
    """The button_interaction card for a ChoicesReply; `unique_id` names it (an outbox row id)."""
    if not reply.choices:
        raise ValueError("a card needs at least one choice; send a text instead")
    buttons = _buttons(reply)
    if not buttons:
        raise ValueError("no choice can be a button (keys too long); send a text instead")
    lines = [line.strip() for line in reply.text.splitlines() if line.strip()]
    title, rest = _head(lines) if lines else (_cut(reply.footer.strip() or reply.choices[0].label,
                                                   TITLE_CHARS), "")
    commands = as_plain_text(ChoicesReply(text="", choices=reply.choices))
    card: dict[str, Any] = {"card_type": CARD_TYPE, "task_id": task_id_for(unique_id)}
    lead_text: str | None = None
    more = rest.split("\n") if rest else []
    desc = ""
    if more and len(more[0]) <= DESC_CHARS:
        desc, more = more[0], more[1:]
    sub = "\n".join(p for p in ("\n".join(more), reply.footer.strip(), commands) if p)
    if len(sub) <= SUB_TITLE_CHARS:
        card["main_title"] = {"title": title, **({"desc": desc} if desc else {})}
        card["sub_title_text"] = sub
    else:
        # Too long for a card: the whole reply goes first as text, the card keeps the buttons
        # and, when they fit, the commands to type.
        lead_text = as_plain_text(reply)
        card["main_title"] = {"title": _cut(lines[0], TITLE_CHARS) if lines else title}
        if len(commands) <= SUB_TITLE_CHARS:
            card["sub_title_text"] = commands
    card["button_list"] = buttons
    return ChoiceCard(template_card=card, task_id=card["task_id"], lead_text=lead_text)


def _buttons(reply: ChoicesReply) -> list[dict[str, Any]]:
    """One button per choice, at most six; keys unique and within 1,024 bytes.

    A choice that cannot be a button (a seventh, a repeated or an overlong command) is still
    listed in the card's text, where it can be typed.
    """
    buttons: list[dict[str, Any]] = []
    seen: set[str] = set()
    for choice in reply.choices:
        key = choice.command
        if not key or key in seen or len(key.encode()) > MAX_BUTTON_KEY_BYTES:
            continue
        seen.add(key)
        # Style 1 for the first and 2 for the others, as in the official sample (WECHAT.md §8.3).
        buttons.append({"text": _cut(choice.label or key, BUTTON_TEXT_CHARS),
                        "style": 1 if not buttons else 2, "key": key})
        if len(buttons) == MAX_BUTTONS:
            break
    return buttons


def _head(lines: list[str]) -> tuple[str, str]:
    """The title and the text after it: the first line, or as much of it as fits, cut at a space.

    The rest of a cut line continues in the desc or sub-title, so the card reads as one text.
    """
    first, others = lines[0], lines[1:]
    if len(first) > TITLE_CHARS:
        space = first.rfind(" ", 0, TITLE_CHARS + 1)
        cut = space if space > 0 else TITLE_CHARS
        first, others = first[:cut], [first[cut:].strip(), *others]
    return first, "\n".join(others)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
