"""Privacy settings: who sees each card field, stealth, and pausing introductions."""

from __future__ import annotations

from datetime import timedelta

from handlers import fields
from handlers.context import Context
from handlers.dates import local_minute
from handlers.replies import Reply, TextReply
from handlers.router import Router, normalize, parse_number
from storage import privacy
from storage.cards import FIELD_NAMES

router = Router(name="privacy")

ON = {"on", "开", "开启", "打开", "是"}
OFF = {"off", "关", "关闭", "否"}
MAX_PAUSE_DAYS = 365


@router.command("privacy", en=["privacy"], zh=["隐私"], summary="summary_privacy",
                usage_en="privacy [FIELD connections|network|hidden]", usage_zh="隐私 [字段 仅好友|人脉圈|隐藏]")
def privacy_command(ctx: Context, args: str) -> Reply:
    """Show my privacy settings, or set one field's level."""
    mid = ctx.member.id or 0
    if args.strip():
        field_name, rest = fields.split_alias(args, fields.FIELD_ALIASES)
        level, extra = fields.split_alias(rest, fields.LEVEL_ALIASES) if field_name else (None, "")
        if field_name is None or level is None or extra:
            return TextReply(ctx.t("privacy_usage"))
        if level not in privacy.allowed_levels(field_name):
            return TextReply(ctx.t("privacy_contact_network"))
        privacy.set_level(ctx.session, member_id=mid, field_name=field_name, level=level)
        return TextReply(ctx.t("privacy_saved", field=ctx.t(f"field_{field_name}"), level=ctx.t(f"level_{level}")))
    prefs = privacy.get(ctx.session, member_id=mid)
    lines = [ctx.t("privacy_header")]
    lines += [ctx.t("privacy_line", field=ctx.t(f"field_{name}"), level=ctx.t(f"level_{prefs.level(name)}"))
              for name in FIELD_NAMES]
    lines.append(ctx.t("stealth_state_on" if prefs.stealth else "stealth_state_off"))
    until = prefs.paused_until if prefs.paused(ctx.now) else None
    lines.append(ctx.t("pause_state_on", until=local_minute(until)) if until else ctx.t("pause_state_off"))
    lines += ["", ctx.t("privacy_footer")]
    return TextReply("\n".join(lines))


@router.command("stealth", en=["stealth"], zh=["隐身"], summary="summary_stealth",
                usage_en="stealth on|off", usage_zh="隐身 开|关")
def stealth_command(ctx: Context, args: str) -> Reply:
    """Stealth: invisible to search beyond my own connections."""
    word = normalize(args)
    if word not in ON | OFF:
        return TextReply(ctx.t("stealth_usage"))
    on = word in ON
    privacy.set_stealth(ctx.session, member_id=ctx.member.id or 0, on=on)
    return TextReply(ctx.t("stealth_on" if on else "stealth_off"))


@router.command("pause", en=["pause"], zh=["暂停"], summary="summary_pause",
                usage_en="pause DAYS", usage_zh="暂停 天数")
def pause_command(ctx: Context, args: str) -> Reply:
    """No introduction requests or nudges for N days; `pause 0` resumes."""
    days = parse_number(normalize(args).removesuffix("天").removesuffix("days").removesuffix("day"))
    if days is None or days > MAX_PAUSE_DAYS:
        return TextReply(ctx.t("pause_usage", max=MAX_PAUSE_DAYS))
    until = ctx.now + timedelta(days=days) if days else None
    privacy.set_pause(ctx.session, member_id=ctx.member.id or 0, until=until)
    if until is None:
        return TextReply(ctx.t("pause_off"))
    return TextReply(ctx.t("pause_on", days=days, until=local_minute(until)))
