"""Our own reply types. Handlers return these; bot/ renders them for each platform."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Union


@dataclass(frozen=True)
class Choice:
    """One tappable choice. `command` is the exact text a tap sends, and what a member may type."""

    label: str
    command: str


@dataclass(frozen=True)
class TextReply:
    """A plain text answer.

    `status` is a few words saying what the answer did ("Accepted", "已婉拒"), for platforms
    that can show it on the message whose button was tapped (a WeCom card).
    """

    text: str
    status: str = ""


@dataclass(frozen=True)
class ChoicesReply:
    """Text followed by choices the member can tap, always with the text to type as a fallback."""

    text: str
    choices: tuple[Choice, ...] = field(default_factory=tuple)
    footer: str = ""
    status: str = ""


@dataclass(frozen=True)
class NoReply:
    """Nothing to say; the webhook answers `success`."""


Reply = Union[TextReply, ChoicesReply, NoReply]


def with_status(reply: Reply, status: str) -> Reply:
    """The reply, saying in a few words what it did (NoReply has nothing to say)."""
    if isinstance(reply, NoReply):
        return reply
    return replace(reply, status=status)


def reply_to_json(reply: Reply) -> str:
    """Serialise a reply for the database (dedupe results and the outbox)."""
    if isinstance(reply, TextReply):
        data: dict[str, Any] = {"type": "text", "text": reply.text}
    elif isinstance(reply, ChoicesReply):
        data = {
            "type": "choices",
            "text": reply.text,
            "choices": [{"label": c.label, "command": c.command} for c in reply.choices],
            "footer": reply.footer,
        }
    else:
        return json.dumps({"type": "none"})
    if reply.status:
        data["status"] = reply.status
    return json.dumps(data, ensure_ascii=False)


def reply_from_json(raw: str | None) -> Reply:
    """The inverse of reply_to_json."""
    if not raw:
        return NoReply()
    data = json.loads(raw)
    if data.get("type") == "text":
        return TextReply(text=data["text"], status=data.get("status", ""))
    if data.get("type") == "choices":
        return ChoicesReply(
            text=data["text"],
            choices=tuple(Choice(label=c["label"], command=c["command"]) for c in data["choices"]),
            footer=data.get("footer", ""),
            status=data.get("status", ""),
        )
    return NoReply()


def as_plain_text(reply: Reply) -> str:
    """The reply as one text message: choices listed with the exact text to type."""
    if isinstance(reply, TextReply):
        return reply.text
    if isinstance(reply, ChoicesReply):
        lines = [reply.text, ""]
        lines += [f"· {c.command}" if c.label == c.command else f"· {c.label}: {c.command}"
                  for c in reply.choices]
        if reply.footer:
            lines += ["", reply.footer]
        return "\n".join(lines).strip()
    return ""
