"""Help, language, welcome and the answers for everything no other handler takes."""

from __future__ import annotations

from handlers.context import Context
from handlers.replies import Reply, TextReply
from handlers.router import Router, normalize
from storage import members

router = Router(name="basics")

_LANG_WORDS = {
    "en": "en", "english": "en", "英文": "en", "英语": "en",
    "zh": "zh", "cn": "zh", "chinese": "zh", "中文": "zh", "汉语": "zh",
}


@router.command("help", en=["help", "h", "?"], zh=["帮助", "菜单"], summary="summary_help",
                usage_en="help", usage_zh="帮助")
def help_command(ctx: Context, args: str) -> Reply:
    """List every command with its usage in the member's language."""
    from handlers.core import root_router

    lines = [ctx.t("help_header")]
    for command in root_router().all_commands():
        if command.hidden:
            continue
        usage = command.usage_en if ctx.lang == "en" else command.usage_zh
        lines.append(ctx.t("help_line", usage=usage, summary=ctx.t(command.summary)))
    lines += ["", ctx.t("help_footer")]
    return TextReply("\n".join(lines))


@router.command("lang", en=["lang", "language"], zh=["语言"], summary="summary_lang",
                usage_en="lang en|zh", usage_zh="语言 中文|英文")
def lang_command(ctx: Context, args: str) -> Reply:
    """Switch the reply language."""
    lang = _LANG_WORDS.get(normalize(args))
    if lang is None:
        return TextReply(ctx.t("lang_usage"))
    members.set_lang(ctx.session, member=ctx.member, lang=lang, explicit=True)
    return TextReply(ctx.t("lang_set"))


def welcome(ctx: Context, *, returning: bool) -> Reply:
    """What a new (or returning) follower sees first."""
    return TextReply(ctx.t("welcome_back" if returning else "welcome"))


def unknown(ctx: Context) -> Reply:
    """A short, helpful answer to text that is no command: never silence."""
    shown = ctx.event.text.strip()
    if not shown:
        return TextReply(ctx.t("unknown_empty"))
    if len(shown) > 30:
        shown = shown[:30] + "…"
    return TextReply(ctx.t("unknown", text=shown))
