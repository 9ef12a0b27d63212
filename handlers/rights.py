"""The member's rights under PIPL: a copy of all their data, and deleting it."""

from __future__ import annotations

from handlers.context import Context
from handlers.replies import Choice, ChoicesReply, Reply, TextReply
from handlers.router import Router, normalize
from storage import erasure, exports

router = Router(name="rights")

CONFIRM = {"confirm", "确认", "yes"}


@router.command("export", en=["export", "export my data"], zh=["导出", "导出数据"], summary="summary_export")
def export_command(ctx: Context, args: str) -> Reply:
    """A one-time link, valid 24 hours, to all my data as JSON."""
    link = exports.create_link(ctx.session, member_id=ctx.member.id or 0, now=ctx.now)
    return TextReply(ctx.t("export_link", url=f"{ctx.settings.public_url}/export/{link.token}"))


@router.command("delete me", en=["delete me", "delete my data"], zh=["注销", "删除我的数据"],
                summary="summary_delete", usage_en="delete me", usage_zh="注销")
def delete_command(ctx: Context, args: str) -> Reply:
    """Ask for confirmation, then delete my card, settings and connections."""
    if normalize(args) not in CONFIRM:
        confirm = ctx.t("delete_confirm_command")
        return ChoicesReply(text=ctx.t("delete_ask"), choices=(Choice(confirm, confirm),),
                            footer=ctx.t("delete_ask_footer", command=confirm))
    erasure.erase_member(ctx.session, member=ctx.member, keep_push_key=ctx.push_key)
    return TextReply(ctx.t("delete_done"))
