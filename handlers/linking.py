"""`link` / `关联`: one member on the Official Account and on WeCom.

`link` on one platform gives a one-time code; `link CODE` on the other joins the two members
into one (storage.linking): one card, one network, one language. The member is shown the card
they now have.
"""

from __future__ import annotations

from handlers.cards import render_card
from handlers.context import Context
from handlers.replies import Reply, TextReply
from handlers.router import Router, split_first
from handlers.texts import LANGS, text
from storage import cards, invites, linking, members, privacy
from storage.models import MemberStatus

router = Router(name="linking")

# The terminal (`yinjian chat`) is for trying things out; it has no identity worth keeping.
LINKABLE = ("oa", "wecom")


@router.command("link", en=["link"], zh=["关联"], summary="summary_link",
                usage_en="link [CODE]", usage_zh="关联 [关联码]", sets_language=False)
def link_command(ctx: Context, args: str) -> Reply:
    """A code to link my other platform's account, or use such a code here."""
    platform = ctx.identity.platform
    if platform not in LINKABLE:
        return TextReply(ctx.t("link_not_here"))
    if not ctx.settings.linking:
        return TextReply(ctx.t("link_not_set_up"))
    typed, _ = split_first(args)
    mid = ctx.member.id or 0
    if not typed:
        if _linked_platforms(ctx) >= set(LINKABLE):
            return TextReply(ctx.t("link_already"))
        code = linking.new_code(ctx.session, member_id=mid, now=ctx.now)
        phrases = [text(lang, "link_phrase", code=code)
                   for lang in sorted(LANGS, key=lambda lang: lang != ctx.lang)]
        minutes = int(linking.CODE_TTL.total_seconds() // 60)
        return TextReply(ctx.t("link_code", code=code, minutes=minutes, phrases="\n".join(phrases)))
    owner_id = linking.code_owner(ctx.session, code=invites.clean_code(typed), now=ctx.now)
    owner = members.by_id(ctx.session, member_id=owner_id) if owner_id is not None else None
    if owner is None or owner.status != MemberStatus.ACTIVE or owner.merged_into is not None:
        return TextReply(ctx.t("link_unknown"))
    if owner.id == mid:
        return TextReply(ctx.t("link_own"))
    theirs = {p for p, _ in linking.identities(ctx.session, member_id=owner.id)}
    mine = _linked_platforms(ctx)
    if theirs & mine:
        # Two accounts on the same platform cannot be one member: which would we write to?
        return TextReply(ctx.t("link_same_platform"))
    keep, drop = linking.survivor_of(owner, ctx.member)
    linked = linking.merge(ctx.session, keep=keep, drop=drop, now=ctx.now)
    ctx.member = keep
    card = render_card(ctx, cards.values(cards.get(ctx.session, member_id=linked.member_id)),
                       privacy.get(ctx.session, member_id=linked.member_id))
    return TextReply(ctx.t("link_done") + "\n\n" + card)


def _linked_platforms(ctx: Context) -> set[str]:
    return {p for p, _ in linking.identities(ctx.session, member_id=ctx.member.id or 0)}
