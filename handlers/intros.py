"""Double-opt-in introductions: `intro N`, `introduce A B`, `requests`, `accept ID`, `decline ID`.

The state machine is drawn in docs/intros.md. Messages to anyone but the member being answered
go through the outbox; every card shown to another member goes through handlers.visibility.
A decline and an expiry read the same to everyone who did not decide, so nobody learns who
said no.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from handlers import texts
from handlers.connections import ask_strength, contact_number
from handlers.context import Context, Settings
from handlers.dates import local_date
from handlers.outgoing import tell
from handlers.replies import Choice, ChoicesReply, NoReply, Reply, TextReply, with_status
from handlers.fields import clean
from handlers.router import Router, parse_number, split_first
from handlers.visibility import visible_name, what_may_see
from storage import followups, graph, members, outbox, privacy, search
from storage import intros as store
from storage.cards import FIELD_NAMES
from storage.intros import IntroView, StepView
from storage.models import MemberStatus

router = Router(name="intros")

NOTE_MAX = 200
VOUCH_MAX = 200
CONNECTOR_WINDOW = timedelta(days=7)  # "5 requests a week" is a rolling window
MAX_CHOICE_STEPS = 5  # `requests` offers taps for the oldest few; the text lists them all


# --- text helpers that work without a Context (the expiry job has none) ---

def _lang(session: Session, member_id: int) -> str:
    member = members.by_id(session, member_id=member_id)
    return (member.lang if member and member.lang else texts.DEFAULT_LANG)


def _card(session: Session, *, viewer_id: int, owner_id: int, lang: str) -> str:
    """The owner's card as the viewer may see it right now, one field a line."""
    values = what_may_see(session, viewer_id=viewer_id, owner_id=owner_id)
    lines = []
    for field in FIELD_NAMES:
        value = values.get(field)
        if value in (None, "", []):
            continue
        shown = texts.text(lang, "tag_joiner").join(value) if isinstance(value, list) else str(value)
        lines.append(texts.text(lang, "intro_card_line", field=texts.text(lang, f"field_{field}"),
                                value=shown))
    return "\n".join(lines) or texts.text(lang, "intro_card_empty")


def _send(session: Session, *, member_id: int, reply: Reply, now: datetime, key: str) -> None:
    # Every key starts with "intro:{id}:", so that erasing an introduction takes its messages too.
    tell(session, member_id=member_id, reply=reply, now=now,
                   priority=outbox.PRIORITY_DECISION, key=key)


def _commands(lang: str, step_id: int) -> tuple[str, str]:
    return texts.text(lang, "accept_command", id=step_id), texts.text(lang, "decline_command", id=step_id)


def _days(delta: timedelta) -> int:
    return max(1, round(delta.total_seconds() / 86400))


# --- what each step's actor is asked ---

def _vouches(session: Session, intro: IntroView, *, before_seq: int, viewer_id: int, lang: str) -> list[str]:
    lines = []
    for step in store.steps_of(session, intro_id=intro.id):
        if step.role == store.ROLE_CONNECTOR and step.status == store.ACCEPTED and step.vouch \
                and step.seq < before_seq:
            who = visible_name(session, viewer_id=viewer_id, owner_id=step.actor_id, lang=lang)
            lines.append(texts.text(lang, "intro_vouch_line", name=who, vouch=step.vouch))
    return lines


def ask(session: Session, *, step: StepView, intro: IntroView, lang: str, settings: Settings,
        reminder: bool = False) -> ChoicesReply:
    """The message that asks a step's actor to decide, with taps and the exact text to type."""
    actor = step.actor_id
    accept, decline = _commands(lang, step.id)
    requester = intro.requester_id or 0
    footer_key = "decide_footer"
    if intro.kind == store.KIND_REQUEST:
        rname = visible_name(session, viewer_id=actor, owner_id=requester, lang=lang)
        tname = visible_name(session, viewer_id=actor, owner_id=intro.target_id, lang=lang)
        card = _card(session, viewer_id=actor, owner_id=requester, lang=lang)
        if step.role == store.ROLE_CONNECTOR:
            nxt = intro.path[step.seq + 1]
            if nxt == intro.target_id:
                lead = texts.text(lang, "intro_ask_connector", requester=rname, target=tname)
            else:
                lead = texts.text(lang, "intro_ask_hop", requester=rname, target=tname,
                                  next=visible_name(session, viewer_id=actor, owner_id=nxt, lang=lang))
            if step.seq > 1:
                prev = visible_name(session, viewer_id=actor, owner_id=intro.path[step.seq - 1], lang=lang)
                lead += texts.text(lang, "intro_passed_on_by", name=prev)
            labels = ("choice_forward", "choice_decline")
            footer_key = "decide_footer_vouch"
        else:
            connector = visible_name(session, viewer_id=actor, owner_id=intro.path[step.seq - 1], lang=lang)
            lead = texts.text(lang, "intro_ask_target", requester=rname, connector=connector)
            labels = ("choice_accept", "choice_decline")
        parts = [lead, card]
        if intro.note:
            parts.append(texts.text(lang, "intro_note", name=rname, note=intro.note))
        vouches = _vouches(session, intro, before_seq=step.seq, viewer_id=actor, lang=lang)
        if vouches:
            parts.append("\n".join(vouches))
        subject = rname
    else:
        other = intro.target_id if actor == intro.requester_id else requester
        oname = visible_name(session, viewer_id=actor, owner_id=other, lang=lang)
        bname = visible_name(session, viewer_id=actor, owner_id=intro.broker_id or 0, lang=lang)
        parts = [texts.text(lang, "introduce_ask", broker=bname, other=oname),
                 _card(session, viewer_id=actor, owner_id=other, lang=lang)]
        if intro.ask_text:
            # A nudge-started introduction: the words are the requester's ask, not the broker's.
            if actor == requester:
                parts.append(texts.text(lang, "introduce_your_ask", ask=intro.ask_text))
            else:
                parts.append(texts.text(lang, "introduce_their_ask", name=oname, ask=intro.ask_text))
        if intro.note:
            parts.append(texts.text(lang, "intro_note", name=bname, note=intro.note))
        labels = ("choice_accept", "choice_decline")
        subject = oname
    if reminder:
        parts.insert(0, texts.text(lang, "intro_reminder", id=step.id))
    if step.expires_at is not None:
        parts.append(texts.text(lang, "intro_expires", date=local_date(step.expires_at)))
    return ChoicesReply(
        text="\n\n".join(parts),
        choices=(Choice(texts.text(lang, labels[0]), accept), Choice(texts.text(lang, labels[1]), decline)),
        footer=texts.text(lang, footer_key, accept=accept, decline=decline, name=subject),
    )


def _ask_actor(session: Session, *, step: StepView, intro: IntroView, now: datetime, settings: Settings) -> None:
    lang = _lang(session, step.actor_id)
    _send(session, member_id=step.actor_id, now=now, key=f"intro:{intro.id}:step:{step.id}:ask",
          reply=ask(session, step=step, intro=intro, lang=lang, settings=settings))


# --- outcomes ---

def _connectors(intro: IntroView) -> list[int]:
    if intro.kind == store.KIND_BROKER:
        return [intro.broker_id] if intro.broker_id else []
    return intro.path[1:-1]


def _fail(session: Session, *, intro: IntroView, status: str, now: datetime, decider: int | None) -> bool:
    """End an introduction that could not be made; the same neutral words for decline and expiry."""
    if not store.finish(session, intro_id=intro.id, status=status, now=now):
        return False
    store.close_pending(session, intro_id=intro.id, now=now)
    a, b = intro.requester_id or 0, intro.target_id
    key = f"intro:{intro.id}:end:{{}}"
    if intro.kind == store.KIND_REQUEST:
        told = [a]
        # Only those who passed it on hear of it; a connector asked but never answering learns nothing.
        passed_on = [s.actor_id for s in store.steps_of(session, intro_id=intro.id)
                     if s.role == store.ROLE_CONNECTOR and s.status == store.ACCEPTED]
        lang = _lang(session, a)
        _send(session, member_id=a, now=now, key=key.format(a),
              reply=TextReply(texts.text(lang, "intro_failed",
                                         name=visible_name(session, viewer_id=a, owner_id=b, lang=lang))))
        for c in passed_on:
            if c in told:
                continue
            told.append(c)
            lang = _lang(session, c)
            _send(session, member_id=c, now=now, key=key.format(c), reply=TextReply(texts.text(
                lang, "intro_failed_connector",
                requester=visible_name(session, viewer_id=c, owner_id=a, lang=lang),
                target=visible_name(session, viewer_id=c, owner_id=b, lang=lang))))
        return True
    for me, other in ((a, b), (b, a)):
        if me == decider:
            continue
        lang = _lang(session, me)
        _send(session, member_id=me, now=now, key=key.format(me), reply=TextReply(texts.text(
            lang, "intro_failed", name=visible_name(session, viewer_id=me, owner_id=other, lang=lang))))
    for c in _connectors(intro):
        lang = _lang(session, c)
        _send(session, member_id=c, now=now, key=key.format(c), reply=TextReply(texts.text(
            lang, "intro_failed_broker", a=visible_name(session, viewer_id=c, owner_id=a, lang=lang),
            b=visible_name(session, viewer_id=c, owner_id=b, lang=lang))))
    return True


def _complete(session: Session, *, intro: IntroView, now: datetime, decider: int) -> Reply:
    """Both said yes: connect them, send each the other's full card, thank the connectors.

    Returns the decider's own answer (they are not sent a message: they get it as the reply).
    Like every new connection, each side is asked how well they know the other.
    """
    store.finish(session, intro_id=intro.id, status=store.COMPLETED, now=now)
    a, b = intro.requester_id or 0, intro.target_id
    # "Did you meet?" a week later, to both sides (handlers.asks sends it, job follow-ups).
    followups.schedule(session, intro_id=intro.id, member_ids=[a, b], due_at=now + followups.FOLLOW_UP_AFTER)
    source = "introduction" if intro.kind == store.KIND_REQUEST else "broker"
    graph.connect(session, a=a, b=b, source=source, now=now)
    # Now 1st degree: the visibility rule itself lets each see the other's contact.
    answer: Reply = NoReply()
    for me, other in ((a, b), (b, a)):
        lang = _lang(session, me)
        name = visible_name(session, viewer_id=me, owner_id=other, lang=lang)
        card = _card(session, viewer_id=me, owner_id=other, lang=lang)
        number = contact_number(session, member_id=me, contact_id=other)
        if me == decider:
            answer = ask_strength(lang, texts.text(lang, "intro_connected_reply", name=name, card=card),
                                  number=number, name=name)
        else:
            _send(session, member_id=me, now=now, key=f"intro:{intro.id}:made:{me}",
                  reply=ask_strength(lang, texts.text(lang, "intro_made", name=name, card=card),
                                     number=number, name=name))
    for c in _connectors(intro):
        lang = _lang(session, c)
        _send(session, member_id=c, now=now, key=f"intro:{intro.id}:made:{c}", reply=TextReply(texts.text(
            lang, "intro_went_through", a=visible_name(session, viewer_id=c, owner_id=a, lang=lang),
            b=visible_name(session, viewer_id=c, owner_id=b, lang=lang))))
    return answer


# --- commands ---

@router.command("intro", en=["intro"], zh=["引荐"], summary="summary_intro",
                usage_en="intro N [NOTE]", usage_zh="引荐 编号 [留言]")
def intro_command(ctx: Context, args: str) -> Reply:
    """Ask for an introduction to result N of my last search."""
    raw, rest = split_first(args)
    number = parse_number(raw)
    if number is None:
        return TextReply(ctx.t("intro_usage"))
    note = clean(rest)
    if len(note) > NOTE_MAX:
        return TextReply(ctx.t("note_too_long", max=NOTE_MAX, got=len(note)))
    me, s, st = ctx.member.id or 0, ctx.session, ctx.settings
    hit = search.last_result(s, member_id=me, n=number)
    if hit is None:
        return TextReply(ctx.t("intro_no_result", n=number))
    target_id = hit.target_id
    name = visible_name(s, viewer_id=me, owner_id=target_id, lang=ctx.lang)
    target = members.by_id(s, member_id=target_id)
    if target is None or target.status != MemberStatus.ACTIVE or target_id == me:
        return TextReply(ctx.t("intro_path_gone", name=name))
    # A search result does not outlive a change of mind: what find checked is checked again now.
    degree = graph.degree(s, viewer_id=me, owner_id=target_id)
    if degree == 1:
        return TextReply(ctx.t("intro_first_degree", name=name))
    prefs = privacy.get(s, member_id=target_id)
    if degree is None or degree != hit.degree or prefs.stealth:
        # A stealth member is reached only through their own contacts' choice; say no more.
        return TextReply(ctx.t("intro_path_gone", name=name))
    mine = store.open_requests(s, requester_id=me)
    if any(i.target_id == target_id for i in mine):
        return TextReply(ctx.t("intro_open_same", name=name))
    if len(mine) >= st.intro_max_open:
        return TextReply(ctx.t("intro_too_many", max=st.intro_max_open))
    failed = store.last_failure(s, requester_id=me, target_id=target_id, since=ctx.now - st.intro_cooldown)
    if failed is not None:
        return TextReply(ctx.t("intro_cooldown", name=name, days=_days(st.intro_cooldown),
                               date=local_date(failed + st.intro_cooldown)))
    if prefs.paused(ctx.now):
        return TextReply(ctx.t("intro_target_paused", name=name))
    found = _path(ctx, me, target_id, hit.degree, hit.path)
    if isinstance(found, str):
        return TextReply(ctx.t(found, name=name, max=st.intro_connector_weekly))
    path, shown = found
    intro = store.create_intro(s, kind=store.KIND_REQUEST, requester_id=me, target_id=target_id,
                               broker_id=None, note=note, path=path, now=ctx.now)
    step = store.add_step(s, intro_id=intro.id, seq=1, actor_id=path[1], role=store.ROLE_CONNECTOR,
                          now=ctx.now, ttl=st.intro_step_ttl)
    _ask_actor(s, step=step, intro=intro, now=ctx.now, settings=st)
    days = _days(st.intro_step_ttl)
    if shown is not None and shown != path[1]:
        via = visible_name(s, viewer_id=me, owner_id=path[1], lang=ctx.lang)
        was = visible_name(s, viewer_id=me, owner_id=shown, lang=ctx.lang)
        return TextReply(ctx.t("intro_sent_instead", name=name, via=via, shown=was, days=days))
    # "via X" was in the search already; a decline later must not point at anyone, so the
    # answer does not repeat it.
    return TextReply(ctx.t("intro_sent", name=name, days=days))


def _path(ctx: Context, me: int, target_id: int, degree: int,
          stored: list[int]) -> tuple[list[int], int | None] | str:
    """The path the request takes and the first hop find showed, or the key of why there is none.

    The connector find showed ("via X") is the one asked, unless X can no longer help; then
    the best other mutual contact is, and the requester is told.
    """
    s, st, now = ctx.session, ctx.settings, ctx.now
    since = now - CONNECTOR_WINDOW
    shown = stored[1] if len(stored) == degree + 1 and stored[0] == me and stored[-1] == target_id else None
    if degree == 2:
        mutual = store.mutual_contacts(s, a=me, b=target_id)
        if not mutual:
            return "intro_path_gone"
        awake = [m for m in mutual if not privacy.get(s, member_id=m[0]).paused(now)]
        if not awake:
            return "intro_connectors_paused"
        load = store.connector_load(s, member_ids=[m[0] for m in awake], since=since)
        free = [m for m in awake if load[m[0]] < st.intro_connector_weekly]
        if not free:
            return "intro_connectors_busy"
        if shown in {m[0] for m in free}:
            return [me, shown, target_id], shown
        resp = store.responsiveness(s, member_ids=[m[0] for m in free])

        def rank(m: tuple[int, int | None, int | None]) -> tuple[int, int, int, int, int]:
            to_r, to_t = m[1] or 1, m[2] or 1  # an unrated tie counts as "met once"
            pending, expired = resp[m[0]]
            return (-min(to_r, to_t), -(to_r + to_t), pending, expired, m[0])

        return [me, min(free, key=rank)[0], target_id], shown
    if degree == 3 and shown is not None:
        hops = stored[1:3]
        for x, y in itertools.pairwise(stored):
            if not graph.are_connected(s, a=x, b=y):
                return "intro_path_gone"
        for hop in hops:
            member = members.by_id(s, member_id=hop)
            if member is None or member.status != MemberStatus.ACTIVE:
                return "intro_path_gone"
        if any(privacy.get(s, member_id=h).paused(now) for h in hops):
            return "intro_connectors_paused"
        load = store.connector_load(s, member_ids=hops, since=since)
        if any(load[h] >= st.intro_connector_weekly for h in hops):
            return "intro_connectors_busy"
        return list(stored), shown
    return "intro_path_gone"


@router.command("introduce", en=["introduce"], zh=["介绍"], summary="summary_introduce",
                usage_en="introduce A B [NOTE]", usage_zh="介绍 编号A 编号B [留言]")
def introduce_command(ctx: Context, args: str) -> Reply:
    """As a connector, introduce two of my contacts to each other."""
    first, rest = split_first(args)
    second, rest = split_first(rest)
    na, nb = parse_number(first), parse_number(second)
    if na is None or nb is None:
        return TextReply(ctx.t("introduce_usage"))
    note = clean(rest)
    if len(note) > NOTE_MAX:
        return TextReply(ctx.t("note_too_long", max=NOTE_MAX, got=len(note)))
    me, s, st = ctx.member.id or 0, ctx.session, ctx.settings
    rows = {r.number: r for r in graph.contacts(s, member_id=me)}
    for n in (na, nb):
        if n not in rows:
            return TextReply(ctx.t("contact_number_unknown", n=n, count=len(rows)))
    if na == nb:
        return TextReply(ctx.t("introduce_same"))
    a, b = rows[na].contact_id, rows[nb].contact_id
    aname = visible_name(s, viewer_id=me, owner_id=a, lang=ctx.lang)
    bname = visible_name(s, viewer_id=me, owner_id=b, lang=ctx.lang)
    started = start_broker(s, broker_id=me, a=a, b=b, note=note, now=ctx.now, settings=st)
    if isinstance(started, tuple):
        key, who = started
        return TextReply(ctx.t(key, a=aname, b=bname, name=aname if who == a else bname))
    return TextReply(ctx.t("introduce_sent", a=aname, b=bname, days=_days(st.intro_step_ttl)))


def start_broker(session: Session, *, broker_id: int, a: int, b: int, note: str, now: datetime,
                 settings: Settings, ask_text: str | None = None) -> IntroView | tuple[str, int | None]:
    """Start a broker introduction of a and b by broker_id (`introduce`, or Introduce on a nudge).

    `ask_text` is a's ask when a referral nudge started it. Returns the new introduction, or
    the catalogue key of why not and whom it concerns.
    """
    if graph.are_connected(session, a=a, b=b):
        return "introduce_connected", None
    if store.open_broker_between(session, a=a, b=b):
        return "introduce_open", None
    if store.pair_failed_since(session, a=a, b=b, since=now - settings.intro_cooldown):
        # A decline is respected: nobody proposes the pair again for the cool-down, and the
        # broker is not told who declined what.
        return "introduce_not_now", None
    for who in (a, b):
        if privacy.get(session, member_id=who).paused(now):
            return "introduce_paused", who
    intro = store.create_intro(session, kind=store.KIND_BROKER, requester_id=a, target_id=b,
                               broker_id=broker_id, note=note, path=[a, broker_id, b], now=now,
                               ask_text=ask_text)
    for who in (a, b):
        step = store.add_step(session, intro_id=intro.id, seq=1, actor_id=who, role=store.ROLE_PARTY,
                              now=now, ttl=settings.intro_step_ttl)
        _ask_actor(session, step=step, intro=intro, now=now, settings=settings)
    return intro


def _summary(ctx: Context, step: StepView, intro: IntroView) -> str:
    me, s, lang = ctx.member.id or 0, ctx.session, ctx.lang
    accept, decline = _commands(lang, step.id)
    if intro.kind == store.KIND_BROKER:
        other = intro.target_id if me == intro.requester_id else intro.requester_id or 0
        return ctx.t("requests_line_party", id=step.id, accept=accept, decline=decline,
                     broker=visible_name(s, viewer_id=me, owner_id=intro.broker_id or 0, lang=lang),
                     other=visible_name(s, viewer_id=me, owner_id=other, lang=lang))
    rname = visible_name(s, viewer_id=me, owner_id=intro.requester_id or 0, lang=lang)
    if step.role == store.ROLE_TARGET:
        return ctx.t("requests_line_target", id=step.id, accept=accept, decline=decline, requester=rname,
                     connector=visible_name(s, viewer_id=me, owner_id=intro.path[step.seq - 1], lang=lang))
    return ctx.t("requests_line_connector", id=step.id, accept=accept, decline=decline, requester=rname,
                 target=visible_name(s, viewer_id=me, owner_id=intro.target_id, lang=lang))


@router.command("requests", en=["requests", "pending"], zh=["待处理"], summary="summary_requests")
def requests_command(ctx: Context, args: str) -> Reply:
    """What waits for my decision, with the exact commands."""
    steps = store.pending_for(ctx.session, actor_id=ctx.member.id or 0)
    pairs = [(step, store.get_intro(ctx.session, intro_id=step.intro_id)) for step in steps]
    live = [(step, intro) for step, intro in pairs if intro is not None]
    if not live:
        return TextReply(ctx.t("requests_none"))
    lines = [ctx.t("requests_header", n=len(live))] + [_summary(ctx, st, i) for st, i in live]
    choices: list[Choice] = []
    for step, _ in live[:MAX_CHOICE_STEPS]:
        accept, decline = _commands(ctx.lang, step.id)
        choices += [Choice(ctx.t("choice_accept_id", id=step.id), accept),
                    Choice(ctx.t("choice_decline_id", id=step.id), decline)]
    return ChoicesReply(text="\n".join(lines), choices=tuple(choices), footer=ctx.t("requests_footer"))


@router.command("accept", en=["accept", "forward"], zh=["接受", "转介"], summary="summary_accept",
                usage_en="accept ID [VOUCH]", usage_zh="接受 编号 [推荐语]")
def accept_command(ctx: Context, args: str) -> Reply:
    """Accept (or, as a connector, forward) an introduction step; a connector may add one vouch line."""
    return _decide(ctx, args, accept=True)


@router.command("decline", en=["decline"], zh=["婉拒", "拒绝"], summary="summary_decline",
                usage_en="decline ID", usage_zh="婉拒 编号")
def decline_command(ctx: Context, args: str) -> Reply:
    """Decline an introduction step; nobody is told who declined."""
    return _decide(ctx, args, accept=False)


_FINISHED = {store.ACCEPTED: "decide_already_accepted", store.DECLINED: "decide_already_declined",
             store.EXPIRED: "decide_expired", store.CLOSED: "decide_closed"}


def _decide(ctx: Context, args: str, *, accept: bool) -> Reply:
    """accept/decline: the answer, saying in a few words what it did (for a tapped card)."""
    reply, status = _decided(ctx, args, accept=accept)
    return with_status(reply, ctx.t(f"status_{status}"))


def _decided(ctx: Context, args: str, *, accept: bool) -> tuple[Reply, str]:
    raw_id, rest = split_first(args)
    parsed = parse_number(raw_id)
    if parsed is None:
        return TextReply(ctx.t("decide_usage")), "unchanged"
    step_id, me, s, now = parsed, ctx.member.id or 0, ctx.session, ctx.now
    found = store.get_step(s, step_id=step_id)
    if found is None or found.actor_id != me:
        return TextReply(ctx.t("decide_unknown", id=step_id)), "unchanged"  # also someone else's step
    intro = store.get_intro(s, intro_id=found.intro_id, lock=True)
    step = store.get_step(s, step_id=step_id)  # read again now that the introduction is ours
    if intro is None or step is None:
        return TextReply(ctx.t("decide_unknown", id=step_id)), "unchanged"
    if step.status != store.PENDING:
        return TextReply(ctx.t(_FINISHED.get(step.status, "decide_closed"), id=step_id)), "unchanged"
    if step.expires_at is not None and step.expires_at <= now:
        # The job has not got to it yet; the answer is the same as after it has.
        return TextReply(ctx.t("decide_expired", id=step_id)), "unchanged"
    vouch = clean(rest) if accept and step.role == store.ROLE_CONNECTOR else ""
    if len(vouch) > VOUCH_MAX:
        return TextReply(ctx.t("vouch_too_long", max=VOUCH_MAX, got=len(vouch))), "unchanged"
    if not store.decide(s, step_id=step_id, actor_id=me, status=store.ACCEPTED if accept else store.DECLINED,
                        vouch=vouch, now=now):
        return TextReply(ctx.t("decide_closed", id=step_id)), "unchanged"
    if not accept:
        _fail(s, intro=intro, status=store.DECLINED, now=now, decider=me)
        return TextReply(ctx.t("declined_reply")), "declined"
    if intro.kind == store.KIND_BROKER:
        if all(x.status == store.ACCEPTED for x in store.steps_of(s, intro_id=intro.id)):
            return _complete(s, intro=intro, now=now, decider=me), "accepted"
        other = intro.target_id if me == intro.requester_id else intro.requester_id or 0
        return TextReply(ctx.t("introduce_waiting",
                               name=visible_name(s, viewer_id=me, owner_id=other, lang=ctx.lang))), "accepted"
    if step.role == store.ROLE_TARGET:
        return _complete(s, intro=intro, now=now, decider=me), "accepted"
    return _forward(ctx, intro, step, vouch), "forwarded"


def _forward(ctx: Context, intro: IntroView, step: StepView, vouch: str) -> Reply:
    """A connector said yes: the next hop is asked, unless they stopped taking requests."""
    s, now, me = ctx.session, ctx.now, ctx.member.id or 0
    nxt = intro.path[step.seq + 1]
    name = visible_name(s, viewer_id=me, owner_id=nxt, lang=ctx.lang)
    member = members.by_id(s, member_id=nxt)
    if member is None or member.status != MemberStatus.ACTIVE or privacy.get(s, member_id=nxt).paused(now):
        _fail(s, intro=intro, status=store.DECLINED, now=now, decider=me)
        return TextReply(ctx.t("forward_unavailable", name=name))
    role = store.ROLE_TARGET if nxt == intro.target_id else store.ROLE_CONNECTOR
    new = store.add_step(s, intro_id=intro.id, seq=step.seq + 1, actor_id=nxt, role=role, now=now,
                         ttl=ctx.settings.intro_step_ttl)
    _ask_actor(s, step=new, intro=intro, now=now, settings=ctx.settings)
    return TextReply(ctx.t("forwarded_vouch" if vouch else "forwarded", name=name))


# --- the scheduled reminder and expiry (scheduler/jobs.py runs it one step per transaction) ---

def process_due_step(session: Session, *, now: datetime, settings: Settings) -> str | None:
    """Remind or expire the next due step: 'reminded', 'expired', 'skipped', or None when none is due."""
    due = store.next_due(session, now=now, remind_after=settings.intro_reminder_after)
    if due is None:
        return None
    intro = store.get_intro(session, intro_id=due.intro_id, lock=True)
    step = store.get_step(session, step_id=due.id)
    if step is None or step.status != store.PENDING:
        return "skipped"
    if step.expires_at is not None and step.expires_at <= now:
        if not store.expire_step(session, step_id=step.id, now=now):
            return "skipped"
        if intro is not None and intro.status == store.PENDING:
            _fail(session, intro=intro, status=store.EXPIRED, now=now, decider=None)
        return "expired"
    if intro is None or not store.mark_reminded(session, step_id=step.id, now=now):
        return "skipped"
    lang = _lang(session, step.actor_id)
    _send(session, member_id=step.actor_id, now=now, key=f"intro:{intro.id}:step:{step.id}:reminder",
          reply=ask(session, step=step, intro=intro, lang=lang, settings=settings, reminder=True))
    return "reminded"
