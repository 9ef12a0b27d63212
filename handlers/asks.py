"""Asks, referral nudges and follow-ups: `ask TEXT`, `asks`, `close ID`, and their answers.

A nudge goes to the mutual connector of an asker and a 2nd-degree match; Introduce on it starts
a real broker introduction (handlers.intros.start_broker), so both sides still opt in. A week
after an introduction completes, both sides are asked whether they met; the connectors hear
the outcome. Messages to anyone but the member being answered go through the outbox, and every
card field shown to another member goes through handlers.visibility.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from handlers import texts
from handlers.context import Context, Settings
from handlers.dates import local_date
from handlers.intros import start_broker
from handlers.outgoing import tell
from handlers.replies import Choice, ChoicesReply, Reply, TextReply
from handlers.fields import clean
from handlers.router import Router, normalize, parse_number, split_first
from handlers.visibility import visible_name, what_may_see
from storage import asks as store
from storage import followups, members, outbox, privacy
from storage import intros as intro_store
from storage.models import MemberStatus
from storage.search import tokenize

router = Router(name="asks")

MAX_LISTED = 20


# --- helpers that work without a Context (the jobs have none) ---

def _lang(session: Session, member_id: int) -> str:
    member = members.by_id(session, member_id=member_id)
    return member.lang if member and member.lang else texts.DEFAULT_LANG


def _active(session: Session, member_id: int) -> bool:
    member = members.by_id(session, member_id=member_id)
    return member is not None and member.status == MemberStatus.ACTIVE


def _id_and_rest(args: str) -> tuple[int | None, str]:
    raw, rest = split_first(args)
    return parse_number(raw), rest


# --- ask, asks, close ---

@router.command("ask", en=["ask"], zh=["求助"], summary="summary_ask", usage_en="ask TEXT", usage_zh="求助 内容")
def ask_command(ctx: Context, args: str) -> Reply:
    """Post a need to my network; it stays open for 30 days."""
    text = clean(args)
    if not text:
        return TextReply(ctx.t("ask_usage"))
    if len(text) > store.ASK_MAX:
        return TextReply(ctx.t("ask_too_long", max=store.ASK_MAX, got=len(text)))
    ask = store.create(ctx.session, member_id=ctx.member.id or 0, text=text, now=ctx.now)
    return TextReply(ctx.t("ask_posted", id=ask.id, date=local_date(ask.expires_at),
                           close=ctx.t("close_command", id=ask.id)))


@router.command("asks", en=["asks", "my asks"], zh=["我的求助"], summary="summary_asks")
def asks_command(ctx: Context, args: str) -> Reply:
    """My open asks, with their ids."""
    mine = store.open_asks(ctx.session, member_id=ctx.member.id or 0, now=ctx.now)
    if not mine:
        return TextReply(ctx.t("asks_none"))
    lines = [ctx.t("asks_header", n=len(mine))]
    lines += [ctx.t("asks_line", id=a.id, text=a.text, date=local_date(a.expires_at)) for a in mine[:MAX_LISTED]]
    lines += ["", ctx.t("asks_footer")]
    return TextReply("\n".join(lines))


@router.command("close", en=["close"], zh=["关闭"], summary="summary_close",
                usage_en="close ID", usage_zh="关闭 编号")
def close_command(ctx: Context, args: str) -> Reply:
    """Close one of my asks."""
    ask_id, _ = _id_and_rest(args)
    if ask_id is None:
        return TextReply(ctx.t("close_usage"))
    outcome = store.close(ctx.session, member_id=ctx.member.id or 0, ask_id=ask_id, now=ctx.now)
    return TextReply(ctx.t(f"close_{outcome}", id=ask_id))


# --- referral nudges ---

def _nudge_commands(lang: str, nudge_id: int) -> tuple[str, str]:
    return texts.text(lang, "nudge_yes_command", id=nudge_id), texts.text(lang, "nudge_no_command", id=nudge_id)


def _what(session: Session, *, viewer_id: int, match: store.AskMatch, lang: str) -> str:
    """The matched parts of the candidate's card the connector may see, or '' when none."""
    seen = what_may_see(session, viewer_id=viewer_id, owner_id=match.member_id)
    words = set(match.words)
    parts: list[str] = []
    for name in match.fields:
        value = seen.get(name)
        if isinstance(value, list):
            parts += [tag for tag in value if words & set(tokenize(tag))] or value
        elif value:
            parts.append(str(value))
    return texts.text(lang, "list_joiner").join(parts)


def nudge_message(session: Session, *, nudge: store.NudgeView, ask: store.AskView, match: store.AskMatch,
                  lang: str) -> ChoicesReply:
    """"R is looking for …; your contact M offers … — introduce them?" with Introduce / Not now."""
    c = nudge.connector_id
    requester = visible_name(session, viewer_id=c, owner_id=ask.member_id, lang=lang)
    candidate = visible_name(session, viewer_id=c, owner_id=nudge.candidate_id, lang=lang)
    what = _what(session, viewer_id=c, match=match, lang=lang)
    key = "nudge_ask" if what else "nudge_ask_plain"
    yes, no = _nudge_commands(lang, nudge.id)
    return ChoicesReply(
        text=texts.text(lang, key, requester=requester, ask=ask.text, candidate=candidate, what=what),
        choices=(Choice(texts.text(lang, "choice_introduce"), yes), Choice(texts.text(lang, "choice_not_now"), no)),
        footer=texts.text(lang, "nudge_footer", yes=yes, no=no, requester=requester),
    )


def _rank(m: tuple[int, int | None, int | None]) -> tuple[int, int, int]:
    to_r, to_m = m[1] or 1, m[2] or 1  # an unrated tie counts as "met once"
    return (-min(to_r, to_m), -(to_r + to_m), m[0])


def process_ask(session: Session, *, ask_id: int, now: datetime) -> int:
    """Nudge connectors for one ask's new 2nd-degree matches (one transaction); how many were sent.

    A pair whose connectors are all paused or have had 3 nudges this week is left for a later
    run: only a pair that was actually nudged is recorded, and then never nudged again.
    """
    ask = store.get(session, ask_id=ask_id)
    if ask is None or not store.is_open(ask, now) or not _active(session, ask.member_id):
        return 0
    if privacy.get(session, member_id=ask.member_id).paused(now):
        return 0  # Introduce would ask the asker to decide, and they take no requests right now
    sent = 0
    cooldown = now - Settings().intro_cooldown
    for match in store.second_degree_matches(session, ask=ask, now=now):
        if store.nudged(session, ask_id=ask.id, candidate_id=match.member_id):
            continue
        if intro_store.pair_failed_since(session, a=ask.member_id, b=match.member_id, since=cooldown):
            continue  # they declined (or let lapse) an introduction lately: not proposed again
        mutual = [m for m in intro_store.mutual_contacts(session, a=ask.member_id, b=match.member_id)
                  if not privacy.get(session, member_id=m[0]).paused(now)]
        load = store.nudge_load(session, member_ids=[m[0] for m in mutual], since=now - store.NUDGE_WINDOW)
        free = [m for m in mutual if load[m[0]] < store.NUDGE_WEEKLY]
        if not free:
            continue
        connector = min(free, key=_rank)[0]
        nudge = store.record_nudge(session, ask_id=ask.id, candidate_id=match.member_id,
                                   connector_id=connector, now=now)
        if nudge is None:
            continue  # another worker nudged this pair a moment ago
        lang = _lang(session, connector)
        tell(session, member_id=connector, now=now, priority=outbox.PRIORITY_NUDGE,
                       key=f"nudge:{ask.id}:{match.member_id}",
                       reply=nudge_message(session, nudge=nudge, ask=ask, match=match, lang=lang))
        sent += 1
    return sent


_YES = {"yes", "y", "introduce", "ok", "是", "好", "介绍", "引荐"}
_NO = {"no", "n", "not now", "notnow", "later", "否", "不", "暂不", "不用", "以后"}


@router.command("nudge", en=["nudge"], zh=["牵线"], summary="summary_nudge",
                usage_en="nudge ID yes|no", usage_zh="牵线 编号 是|否", hidden=True)
def nudge_command(ctx: Context, args: str) -> Reply:
    """Answer a referral nudge: Introduce starts a broker introduction, Not now closes it."""
    nudge_id, rest = _id_and_rest(args)
    word = normalize(rest)
    if nudge_id is None or word not in _YES | _NO:
        return TextReply(ctx.t("nudge_usage"))
    s, me, now = ctx.session, ctx.member.id or 0, ctx.now
    nudge = store.get_nudge(s, nudge_id=nudge_id)
    if nudge is None or nudge.connector_id != me:
        return TextReply(ctx.t("nudge_unknown", id=nudge_id))
    if nudge.status != store.SENT:
        return TextReply(ctx.t("nudge_answered", id=nudge_id))
    ask = store.get(s, ask_id=nudge.ask_id)
    if ask is None:
        return TextReply(ctx.t("nudge_unknown", id=nudge_id))
    requester = visible_name(s, viewer_id=me, owner_id=ask.member_id, lang=ctx.lang)
    candidate = visible_name(s, viewer_id=me, owner_id=nudge.candidate_id, lang=ctx.lang)
    if word in _NO:
        store.decide_nudge(s, nudge_id=nudge_id, connector_id=me, status=store.NOT_NOW, now=now)
        return TextReply(ctx.t("nudge_not_now", requester=requester), status=ctx.t("status_not_now"))
    if not store.is_open(ask, now):
        store.decide_nudge(s, nudge_id=nudge_id, connector_id=me, status=store.NOT_NOW, now=now)
        return TextReply(ctx.t("nudge_ask_closed", requester=requester))
    if not (_active(s, ask.member_id) and _active(s, nudge.candidate_id)):
        store.decide_nudge(s, nudge_id=nudge_id, connector_id=me, status=store.NOT_NOW, now=now)
        return TextReply(ctx.t("nudge_gone"))
    started = start_broker(s, broker_id=me, a=ask.member_id, b=nudge.candidate_id, note="", now=now,
                           settings=ctx.settings, ask_text=ask.text)
    if isinstance(started, tuple):
        key, who = started
        return TextReply(ctx.t(key, a=requester, b=candidate,
                               name=requester if who == ask.member_id else candidate))
    store.decide_nudge(s, nudge_id=nudge_id, connector_id=me, status=store.INTRODUCED, now=now)
    return TextReply(ctx.t("introduce_sent", a=requester, b=candidate,
                           days=max(1, round(ctx.settings.intro_step_ttl.total_seconds() / 86400))),
                     status=ctx.t("status_introduced"))


# --- follow-ups ---

_ANSWERS = {
    followups.YES: {"yes", "y", "met", "是", "见了", "见过"},
    followups.NOT_YET: {"notyet", "not yet", "later", "还没", "还没有", "没见"},
    followups.NOT_USEFUL: {"no", "n", "not useful", "notuseful", "useless", "没用", "无用"},
}


def follow_up_message(session: Session, *, fu: followups.FollowUpView, intro: intro_store.IntroView,
                      lang: str) -> ChoicesReply:
    """"Did you meet?" with Yes / Not yet / Not useful and the exact text to type."""
    me = fu.member_id
    other = intro.target_id if me == intro.requester_id else intro.requester_id or 0
    oname = visible_name(session, viewer_id=me, owner_id=other, lang=lang)
    cons = followups.connectors_of(intro.kind, intro.broker_id, intro.path)
    by = visible_name(session, viewer_id=me, owner_id=cons[0], lang=lang) if len(cons) == 1 else ""
    key = "followup_ask" if fu.round == 1 else "followup_ask_again"
    commands = [texts.text(lang, f"met_{a}_command", id=intro.id) for a in ("yes", "notyet", "no")]
    labels = [texts.text(lang, k) for k in ("choice_met_yes", "choice_met_notyet", "choice_met_no")]
    lead = texts.text(lang, key, other=oname, by=texts.text(lang, "followup_by", name=by) if by else "")
    return ChoicesReply(text=lead, choices=tuple(Choice(label, cmd) for label, cmd in zip(labels, commands)),
                        footer=texts.text(lang, "followup_footer", yes=commands[0], notyet=commands[1],
                                          no=commands[2]))


def process_due_follow_up(session: Session, *, now: datetime) -> str | None:
    """Ask the next due follow-up (one transaction): 'asked', 'cancelled', 'skipped', or None if none is due."""
    fu = followups.next_due(session, now=now)
    if fu is None:
        return None
    intro = intro_store.get_intro(session, intro_id=fu.intro_id)
    if intro is None or intro.status != intro_store.COMPLETED or not _active(session, fu.member_id):
        followups.mark(session, follow_up_id=fu.id, status=followups.CANCELLED)
        return "cancelled"
    if not followups.mark(session, follow_up_id=fu.id, status=followups.ASKED):
        return "skipped"  # another worker asked it a moment ago
    lang = _lang(session, fu.member_id)
    tell(session, member_id=fu.member_id, now=now, priority=outbox.PRIORITY_FOLLOW_UP,
                   key=f"followup:{intro.id}:{fu.member_id}:{fu.round}",
                   reply=follow_up_message(session, fu=fu, intro=intro, lang=lang))
    return "asked"


@router.command("met", en=["met"], zh=["见面"], summary="summary_met",
                usage_en="met ID yes|notyet|no", usage_zh="见面 编号 是|还没|没用", hidden=True)
def met_command(ctx: Context, args: str) -> Reply:
    """Answer "Did you meet?" after an introduction."""
    intro_id, rest = _id_and_rest(args)
    word = normalize(rest)
    value = next((a for a, words in _ANSWERS.items() if word in words), None)
    if intro_id is None or value is None:
        return TextReply(ctx.t("met_usage"))
    s, me, now = ctx.session, ctx.member.id or 0, ctx.now
    fu = followups.latest(s, intro_id=intro_id, member_id=me)
    intro = intro_store.get_intro(s, intro_id=intro_id)
    if fu is None or intro is None or fu.status in (followups.PENDING, followups.CANCELLED):
        return TextReply(ctx.t("met_unknown", id=intro_id))
    if fu.status == followups.ANSWERED or not followups.answer(s, follow_up_id=fu.id, value=value, now=now):
        return TextReply(ctx.t("met_answered", id=intro_id))
    other = intro.target_id if me == intro.requester_id else intro.requester_id or 0
    oname = visible_name(s, viewer_id=me, owner_id=other, lang=ctx.lang)
    if value == followups.NOT_YET and fu.round < followups.LAST_ROUND:
        followups.schedule(s, intro_id=intro_id, member_ids=[me], due_at=now + followups.FOLLOW_UP_AFTER,
                           round_=fu.round + 1)
        return TextReply(ctx.t("met_later", name=oname), status=ctx.t("status_noted"))
    for c in followups.connectors_of(intro.kind, intro.broker_id, intro.path):
        if not _active(s, c):
            continue
        lang = _lang(s, c)
        tell(s, member_id=c, now=now, priority=outbox.PRIORITY_FOLLOW_UP,
                       key=f"followup:{intro_id}:{me}:outcome:{c}",
                       reply=TextReply(texts.text(
                           lang, f"met_told_{value}", member=visible_name(s, viewer_id=c, owner_id=me, lang=lang),
                           other=visible_name(s, viewer_id=c, owner_id=other, lang=lang))))
    return TextReply(ctx.t(f"met_thanks_{value}", name=oname), status=ctx.t("status_noted"))


def expire_asks(session: Session, *, now: datetime) -> int:
    """Mark asks past their 30 days as expired (the job's first unit of work)."""
    return store.expire_due(session, now=now)


def open_ask_ids(session: Session, *, now: datetime) -> list[int]:
    """Every open ask to consider for nudges."""
    return store.all_open_ids(session, now=now)

