"""Invites, joining, the contact list, and how well members know each other."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from handlers.context import Context
from handlers.dates import local_date
from handlers.outgoing import tell
from handlers.replies import Choice, ChoicesReply, Reply, TextReply
from handlers.router import Router, parse_number, split_first
from handlers.texts import DEFAULT_LANG, LANGS, text
from handlers.visibility import visible_name, what_may_see
from storage import graph, invites, members, outbox
from storage.members import MemberRecord
from storage.models import MemberStatus

router = Router(name="connections")

STRENGTHS = (1, 2, 3)


def _days(ctx: Context) -> int:
    return max(1, round(ctx.settings.invite_ttl.total_seconds() / 86400))


@router.command("invite", en=["invite"], zh=["邀请"], summary="summary_invite")
def invite_command(ctx: Context, args: str) -> Reply:
    """A fresh personal invite: the code, the exact text to forward, and a QR code if possible."""
    invite = invites.create(ctx.session, inviter_id=ctx.member.id or 0, now=ctx.now,
                            ttl=ctx.settings.invite_ttl, max_uses=ctx.settings.invite_max_uses)
    uses = ctx.t("invite_single") if invite.max_uses == 1 else ctx.t("invite_multi", n=invite.max_uses)
    # Both forms, the member's own first: whoever receives it may read either language.
    phrases = [text(lang, "join_phrase", code=invite.code)
               for lang in sorted(LANGS, key=lambda lang: lang != ctx.lang)]
    reply = ctx.t("invite_text", code=invite.code, days=_days(ctx), uses=uses, join="\n".join(phrases))
    if ctx.settings.qr_invites:
        outbox.enqueue_qr_invite(
            ctx.session, member_id=ctx.member.id or 0, code=invite.code, now=ctx.now,
            expire_seconds=int(ctx.settings.invite_ttl.total_seconds()),
            text=ctx.t("invite_qr", days=_days(ctx), url="{url}"),  # the sender fills in {url}
        )
        reply += "\n\n" + ctx.t("invite_qr_follows")
    return TextReply(reply)


# A pasted code says nothing about the member's language: it was written by the inviter.
@router.command("join", en=["join"], zh=["加入"], summary="summary_join",
                usage_en="join CODE", usage_zh="加入 邀请码", sets_language=False)
def join_command(ctx: Context, args: str) -> Reply:
    """Use an invite code."""
    if not args.strip():
        return TextReply(ctx.t("join_usage"))
    return join_with_code(ctx, args, source="invite")


def join_with_code(ctx: Context, raw_code: str, *, source: str) -> Reply:
    """Connect the member with the code's inviter, and tell both; refusals change nothing."""
    # Only the first word: a pasted invite may carry the other language's line after it.
    typed, _ = split_first(raw_code)
    code = invites.clean_code(typed)
    me = ctx.member.id or 0
    invite = invites.get_for_update(ctx.session, code=code) if code else None
    inviter = members.by_id(ctx.session, member_id=invite.inviter_id) if invite else None
    if invite is None or inviter is None or inviter.status != MemberStatus.ACTIVE:
        return TextReply(ctx.t("join_unknown", code=code[:20] or typed[:20]))
    if invite.inviter_id == me:
        return TextReply(ctx.t("join_own"))
    if invite.expires_at <= ctx.now:
        return TextReply(ctx.t("join_expired"))
    if invite.uses >= invite.max_uses:
        return TextReply(ctx.t("join_used"))
    if graph.are_connected(ctx.session, a=me, b=invite.inviter_id):
        name = display_name(ctx, viewer_id=me, owner_id=invite.inviter_id, lang=ctx.lang)
        return TextReply(ctx.t("join_already", name=name))
    if not graph.connect(ctx.session, a=me, b=invite.inviter_id, source=source, now=ctx.now):
        # Another worker connected us a moment ago (each of us used the other's code).
        name = display_name(ctx, viewer_id=me, owner_id=invite.inviter_id, lang=ctx.lang)
        return TextReply(ctx.t("join_already", name=name))
    invites.use(ctx.session, invite=invite)
    # Names are looked up once connected: before that, neither may see the other's card.
    inviter_name = display_name(ctx, viewer_id=me, owner_id=invite.inviter_id, lang=ctx.lang)
    inviter_lang = inviter.lang or DEFAULT_LANG
    seen = what_may_see(ctx.session, viewer_id=invite.inviter_id, owner_id=me).get("name")
    if not seen:
        # They are told the name once the joiner has set one (tell_waiting_inviters).
        graph.set_name_pending(ctx.session, member_id=invite.inviter_id, contact_id=me, pending=True)
    joiner_name = str(seen) if seen else text(inviter_lang, "unnamed")
    inviter_number = _number_of(ctx, member_id=invite.inviter_id, contact_id=me)
    tell(ctx.session, member_id=invite.inviter_id, now=ctx.now, priority=outbox.PRIORITY_DECISION,
         reply=strength_question(ctx, inviter, ctx.text_for(inviter, "invite_accepted", name=joiner_name),
                                 number=inviter_number, name=joiner_name))
    my_number = _number_of(ctx, member_id=me, contact_id=invite.inviter_id)
    lead = ctx.t("join_done", name=inviter_name)
    return strength_question(ctx, ctx.member, lead, number=my_number, name=inviter_name)


def tell_waiting_inviters(session: Session, *, member_id: int, now: datetime) -> int:
    """The member has a name now: tell whoever they joined without one, once; how many were told."""
    told = 0
    for row in graph.waiting_for_name(session, contact_id=member_id):
        inviter = row.contact_id
        seen = what_may_see(session, viewer_id=inviter, owner_id=member_id).get("name")
        if not seen or not graph.set_name_pending(session, member_id=inviter, contact_id=member_id,
                                                  pending=False):
            continue  # a name they may not see is no name to them: keep waiting
        lang = members_lang(session, inviter)
        tell(session, member_id=inviter, now=now, priority=outbox.PRIORITY_FOLLOW_UP,
             key=f"named:{inviter}:{member_id}",
             reply=TextReply(text(lang, "invite_named", name=seen, n=row.number,
                                  date=local_date(row.since))))
        told += 1
    return told


def members_lang(session: Session, member_id: int) -> str:
    """A member's reply language."""
    member = members.by_id(session, member_id=member_id)
    return member.lang if member and member.lang else DEFAULT_LANG


def display_name(ctx: Context, *, viewer_id: int, owner_id: int, lang: str) -> str:
    """The owner's name as the viewer may see it, or a neutral stand-in."""
    return visible_name(ctx.session, viewer_id=viewer_id, owner_id=owner_id, lang=lang)


def _number_of(ctx: Context, *, member_id: int, contact_id: int) -> int:
    return contact_number(ctx.session, member_id=member_id, contact_id=contact_id)


def contact_number(session: Session, *, member_id: int, contact_id: int) -> int:
    """Where contact_id stands in member_id's `contacts` list (0 when not there)."""
    for row in graph.contacts(session, member_id=member_id):
        if row.contact_id == contact_id:
            return row.number
    return 0


def strength_question(ctx: Context, who: MemberRecord, lead: str, *, number: int, name: str) -> ChoicesReply:
    """Ask `who` how well they know contact `number`, as taps with the text to type."""
    return ask_strength(who.lang or DEFAULT_LANG, lead, number=number, name=name)


def ask_strength(lang: str, lead: str, *, number: int, name: str) -> ChoicesReply:
    """After any new connection: how well do you know contact `number`? Taps and text to type."""
    command = text(lang, "strength_command", n=number, level="{level}")
    choices = tuple(
        Choice(label=text(lang, f"strength_{level}"), command=command.replace("{level}", str(level)))
        for level in STRENGTHS
    )
    question = text(lang, "strength_question", name=name)
    return ChoicesReply(text=f"{lead}\n\n{question}", choices=choices,
                        footer=text(lang, "strength_footer", example=command.replace("{level}", "2")))


@router.command("contacts", en=["contacts", "connections"], zh=["人脉", "联系人", "好友"],
                summary="summary_contacts")
def contacts_command(ctx: Context, args: str) -> Reply:
    """My connections, numbered."""
    rows = graph.contacts(ctx.session, member_id=ctx.member.id or 0)
    if not rows:
        return TextReply(ctx.t("contacts_none"))
    lines = [ctx.t("contacts_header", n=len(rows))]
    for row in rows:
        name = display_name(ctx, viewer_id=ctx.member.id or 0, owner_id=row.contact_id, lang=ctx.lang)
        tie = ctx.t(f"strength_{row.strength}") if row.strength else ctx.t("strength_unrated", n=row.number)
        lines.append(ctx.t("contacts_line", n=row.number, name=name, tie=tie))
    return TextReply("\n".join(lines))


@router.command("strength", en=["strength", "tie"], zh=["熟悉度", "熟悉"], summary="summary_strength",
                usage_en="strength N 1|2|3", usage_zh="熟悉度 编号 1|2|3")
def strength_command(ctx: Context, args: str) -> Reply:
    """Say how well I know contact N: 1 met once, 2 worked or studied together, 3 close."""
    parts = [parse_number(p) for p in args.split()]
    if len(parts) != 2 or parts[0] is None or parts[1] not in STRENGTHS:
        return TextReply(ctx.t("strength_usage"))
    number, level = parts[0], parts[1]
    assert level is not None
    rows = graph.contacts(ctx.session, member_id=ctx.member.id or 0)
    row = next((r for r in rows if r.number == number), None)
    if row is None:
        return TextReply(ctx.t("contact_number_unknown", n=number, count=len(rows)))
    graph.set_strength(ctx.session, member_id=ctx.member.id or 0, contact_id=row.contact_id,
                             strength=level)
    name = display_name(ctx, viewer_id=ctx.member.id or 0, owner_id=row.contact_id, lang=ctx.lang)
    return TextReply(ctx.t("strength_saved", name=name, tie=ctx.t(f"strength_{level}")),
                     status=ctx.t("status_noted"))
