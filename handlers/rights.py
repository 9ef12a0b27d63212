"""The member's rights under PIPL: a copy of all their data, and deleting it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from handlers.context import Context
from handlers.replies import Choice, ChoicesReply, Reply, TextReply
from handlers.router import Router, normalize
from handlers.visibility import what_may_see
from storage import erasure, exports, graph

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


def export_for_link(session: Session, *, token: str, now: datetime) -> dict[str, Any]:
    """Use a one-time export link: all the member's data, or {} when the link is not valid.

    Their connections are listed with each contact's card as the member may see it right
    now, through the one visibility rule: a hidden field is not in it.
    """
    member_id = exports.consume_link(session, token=token, now=now)
    if member_id is None:
        return {}
    data = exports.collect(session, member_id=member_id)
    if not data:
        return {}
    data["connections"] = [
        {"number": c.number, "strength": c.strength, "since": exports.iso(c.since),
         "card": what_may_see(session, viewer_id=member_id, owner_id=c.contact_id)}
        for c in graph.contacts(session, member_id=member_id)
    ]
    return data
