"""Digests: `digest weekly|daily|off` / `摘要 每周|每日|关闭`, and building each member's digest.

The job (scheduler.jobs.digests) hands batches of members to `process_batch`; each batch is one
transaction that reads what every due member's digest needs with a few set-based queries,
renders the digests in each member's language, and queues them under the unique key
`digest:{member}:{period}`. Other members' names appear only through the visibility rule.
"""

from __future__ import annotations

import functools
import unicodedata
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from handlers import texts
from handlers.context import Context
from handlers.replies import Choice, ChoicesReply, NoReply, Reply, TextReply, reply_to_json
from handlers.router import Router, normalize
from handlers.visibility import may_see
from storage import asks as ask_store
from storage import digests as store
from storage import followups as follow_store
from storage import graph, outbox, privacy
from storage import intros as intro_store
from storage.digests import Candidate, DoneIntro, NewEdge, PendingStep, Period
from storage.models import OutboxStatus
from storage.privacy import Privacy

router = Router(name="digests")

WORDS = {
    store.WEEKLY: {"weekly", "week", "每周", "周", "每週"},
    store.DAILY: {"daily", "day", "每日", "每天", "日"},
    store.OFF: {"off", "关闭", "关", "關閉"},
}
MAX_LINES = 5  # per section; the rest is counted, so the digest stays one message
MAX_CHOICES = 3  # pending decisions offered as taps (two choices each)


@router.command("digest", en=["digest"], zh=["摘要"], summary="summary_digest",
                usage_en="digest weekly|daily|off", usage_zh="摘要 每周|每日|关闭")
def digest_command(ctx: Context, args: str) -> Reply:
    """Show or set how often my digest comes."""
    mid = ctx.member.id or 0
    word = normalize(args)
    if not word:
        cadence_now, _ = privacy.digest_settings(ctx.session, member_id=mid)
        return TextReply(ctx.t("digest_state", cadence=ctx.t(f"digest_cadence_{cadence_now}")))
    chosen = next((c for c, words in WORDS.items() if word in words), None)
    if chosen is None:
        return TextReply(ctx.t("digest_usage"))
    privacy.set_digest(ctx.session, member_id=mid, cadence=chosen)
    return TextReply(ctx.t(f"digest_set_{chosen}"))


@functools.cache
def _zones() -> dict[str, str]:
    """Every IANA time zone name this machine knows, by its case-folded form."""
    return {name.casefold(): name for name in zoneinfo.available_timezones()}


@router.command("timezone", en=["timezone", "time zone", "tz"], zh=["时区"], summary="summary_timezone",
                usage_en="timezone ZONE", usage_zh="时区 时区名")
def timezone_command(ctx: Context, args: str) -> Reply:
    """Show or set the time zone my digest follows (an IANA name such as Europe/Berlin)."""
    mid = ctx.member.id or 0
    typed = args.strip()
    if not typed:
        _, current = privacy.digest_settings(ctx.session, member_id=mid)
        return TextReply(_zone_state(ctx, current or ctx.settings.default_timezone, "timezone_state"))
    name = _zones().get(unicodedata.normalize("NFKC", typed).casefold().replace(" ", "_"))
    if name is None:
        return TextReply(ctx.t("timezone_unknown", zone=typed[:40]))
    privacy.set_timezone(ctx.session, member_id=mid, timezone=name)
    return TextReply(_zone_state(ctx, name, "timezone_set"))


def _zone_state(ctx: Context, name: str, key: str) -> str:
    local = ctx.now.astimezone(store.zone(name, ctx.settings.default_timezone))
    return ctx.t(key, zone=name, time=local.strftime("%H:%M"),
                 offset=local.strftime("%z")[:3] + ":" + local.strftime("%z")[3:])


# --- building digests ---

@dataclass
class _Digest:
    """One member's digest before names are filled in."""

    member_id: int
    lang: str
    period: Period
    cadence: str
    pending: list[PendingStep] = field(default_factory=list)
    done: list[DoneIntro] = field(default_factory=list)
    network: list[tuple[int, int | None]] = field(default_factory=list)  # (my contact, their new one)
    help: list[ask_store.AskMatch] = field(default_factory=list)
    follow_ups: list[tuple[follow_store.FollowUpView, int]] = field(default_factory=list)  # (row, other)
    matches: list[ask_store.AskMatch] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.pending or self.done or self.network or self.help or self.follow_ups or self.matches)


class _Names:
    """Names as each viewer may see them, resolved for a whole batch at once."""

    def __init__(self) -> None:
        self.wanted: dict[tuple[int, int], int | None] = {}  # (viewer, owner) -> degree when known
        self.resolved: dict[tuple[int, int], str | None] = {}
        # Whose card data each viewer's digest shows (names, asks): its outbox mentions.
        self.shown: dict[int, set[int]] = {}

    def want(self, viewer: int, owner: int | None, degree: int | None = None) -> None:
        if owner is None:
            return
        key = (viewer, owner)
        if degree is not None or key not in self.wanted:
            self.wanted[key] = degree

    def resolve(self, session: Session) -> None:
        info = store.names_and_levels(session, member_ids={o for _, o in self.wanted})
        unknown: set[tuple[int, int]] = set()
        for (viewer, owner), degree in self.wanted.items():
            name, levels = info.get(owner, (None, {}))
            level = Privacy(levels=levels).level("name")
            if not name or not may_see(level, 1):  # hidden, or no name: no degree can show it
                self.resolved[(viewer, owner)] = None
            elif degree is None:
                unknown.add((viewer, owner))
            else:
                self.resolved[(viewer, owner)] = name if may_see(level, degree) else None
        # 1st degree, then 2nd, each one query for the batch; only what is left needs the search.
        direct = store.direct_pairs(session, pairs=unknown)
        second = store.second_degree_pairs(session, pairs=unknown - direct)
        for viewer, owner in unknown:
            name, levels = info[owner]
            level = Privacy(levels=levels).level("name")
            if (viewer, owner) in direct:
                found: int | None = 1
            elif (viewer, owner) in second:
                found = 2
            elif level == privacy.CONNECTIONS:
                found = None  # not a contact: a connections-only name stays unseen
            else:
                found = graph.degree(session, viewer_id=viewer, owner_id=owner)
            self.resolved[(viewer, owner)] = name if may_see(level, found) else None

    def get(self, viewer: int, owner: int | None, lang: str) -> str:
        if owner is not None:
            self.shown.setdefault(viewer, set()).add(owner)
        name = self.resolved.get((viewer, owner or 0)) if owner is not None else None
        return name or texts.text(lang, "unnamed")

    def known(self, viewer: int, owner: int | None) -> bool:
        return owner is not None and bool(self.resolved.get((viewer, owner)))


def _lines(lang: str, items: list[str]) -> list[str]:
    shown = items[:MAX_LINES]
    if len(items) > MAX_LINES:
        shown.append(texts.text(lang, "digest_more", n=len(items) - MAX_LINES))
    return shown


def _pending_line(d: _Digest, step: PendingStep, names: _Names) -> str:
    me, lang = d.member_id, d.lang
    accept = texts.text(lang, "accept_command", id=step.step_id)
    decline = texts.text(lang, "decline_command", id=step.step_id)
    if step.intro_kind == intro_store.KIND_BROKER:
        other = step.target_id if me == step.requester_id else step.requester_id
        return texts.text(lang, "requests_line_party", id=step.step_id, accept=accept, decline=decline,
                          broker=names.get(me, step.broker_id, lang), other=names.get(me, other, lang))
    requester = names.get(me, step.requester_id, lang)
    if step.role == intro_store.ROLE_TARGET:
        return texts.text(lang, "requests_line_target", id=step.step_id, accept=accept, decline=decline,
                          requester=requester, connector=names.get(me, step.path[step.seq - 1], lang))
    return texts.text(lang, "requests_line_connector", id=step.step_id, accept=accept, decline=decline,
                      requester=requester, target=names.get(me, step.target_id, lang))


def _pending_names(d: _Digest, step: PendingStep, names: _Names) -> None:
    me = d.member_id
    if step.intro_kind == intro_store.KIND_BROKER:
        names.want(me, step.broker_id)
        names.want(me, step.target_id if me == step.requester_id else step.requester_id)
        return
    names.want(me, step.requester_id)
    names.want(me, step.path[step.seq - 1] if step.role == intro_store.ROLE_TARGET else step.target_id)


def render(d: _Digest, names: _Names) -> Reply:
    """One member's digest as one message; NoReply when there is nothing in it."""
    if d.empty():
        return NoReply()
    me, lang = d.member_id, d.lang

    def t(key: str, **kw: Any) -> str:
        return texts.text(lang, key, **kw)

    parts: list[str] = [t(f"digest_header_{d.cadence}")]
    choices: list[Choice] = []
    if d.pending:
        parts += ["", t("digest_pending_header", n=len(d.pending))]
        parts += _lines(lang, [_pending_line(d, s, names) for s in d.pending])
        for step in d.pending[:MAX_CHOICES]:
            choices += [Choice(t("choice_accept_id", id=step.step_id), t("accept_command", id=step.step_id)),
                        Choice(t("choice_decline_id", id=step.step_id), t("decline_command", id=step.step_id))]
    if d.done:
        lines = []
        for intro in d.done:
            if me in (intro.requester_id, intro.target_id):
                other = intro.target_id if me == intro.requester_id else intro.requester_id
                lines.append(t("digest_done_party", name=names.get(me, other, lang)))
            else:
                lines.append(t("digest_done_connector", a=names.get(me, intro.requester_id, lang),
                               b=names.get(me, intro.target_id, lang)))
        parts += ["", t("digest_done_header", n=len(d.done))] + _lines(lang, lines)
    network = [(c, n) for c, n in d.network if names.known(me, c) or names.known(me, n)]
    if network:
        lines = [t("digest_network_line", a=names.get(me, c, lang), b=names.get(me, n, lang))
                 if names.known(me, n) else t("digest_network_someone", a=names.get(me, c, lang))
                 for c, n in network]
        parts += ["", t("digest_network_header", n=len(network))] + _lines(lang, lines)
    if d.help:
        lines = [t("digest_help_line", name=names.get(me, m.ask.member_id, lang), text=m.ask.text) for m in d.help]
        parts += ["", t("digest_help_header", n=len(d.help))] + _lines(lang, lines)
    if d.follow_ups:
        lines = [t("digest_follow_line", name=names.get(me, other, lang), yes=t("met_yes_command", id=fu.intro_id),
                   notyet=t("met_notyet_command", id=fu.intro_id), no=t("met_no_command", id=fu.intro_id))
                 if fu.status == follow_store.ASKED else t("digest_follow_soon", name=names.get(me, other, lang))
                 for fu, other in d.follow_ups]
        parts += ["", t("digest_follow_header", n=len(d.follow_ups))] + _lines(lang, lines)
    if d.matches:
        lines = [t("digest_match_line", ask=m.ask.text, name=names.get(me, m.member_id, lang)) for m in d.matches]
        parts += ["", t("digest_match_header", n=len(d.matches))] + _lines(lang, lines)
    if len(parts) == 1:  # only network news, and none of it with a name the member may see
        return NoReply()
    footer = t("digest_footer")
    if choices:
        return ChoicesReply(text="\n".join(parts), choices=tuple(choices), footer=footer)
    return TextReply("\n".join(parts + ["", footer]))


@dataclass(frozen=True)
class BatchResult:
    """What one batch did; `last_id` is None when no members were left."""

    last_id: int | None
    queued: int = 0
    empty: int = 0
    done_before: int = 0


class CrashForTest(RuntimeError):
    """Raised by the test-only hook, to simulate a worker dying mid-run."""


def process_batch(
    session: Session,
    *,
    after_id: int,
    now: datetime,
    default_tz: str,
    limit: int,
    edges: dict[int, list[NewEdge]],
    crash_after: Callable[[int], bool] | None = None,
) -> BatchResult:
    """Queue the digests of the next `limit` members after `after_id` that are due, in one transaction."""
    found = store.candidates(session, after_id=after_id, limit=limit)
    if not found:
        return BatchResult(last_id=None)
    due: list[tuple[Candidate, Period]] = []
    for c in found:
        period = store.current_period(c.cadence, store.zone(c.timezone, default_tz), now)
        if period is not None:
            due.append((c, period))
    keys = {c.member_id: store.dedupe_key(c.member_id, p) for c, p in due}
    seen = store.existing_keys(session, keys=list(keys.values()))
    todo = [(c, p) for c, p in due if keys[c.member_id] not in seen]
    last_id = found[-1].member_id
    if not todo:
        return BatchResult(last_id=last_id, done_before=len(due))
    ids = [c.member_id for c, _ in todo]
    since = min(p.since for _, p in todo)
    until = max(p.start for _, p in todo)
    pending = store.pending_steps(session, member_ids=ids)
    done = store.completed_intros(session, member_ids=ids, since=since, until=until)
    contacts = store.active_contacts(session, member_ids=ids)
    contact_asks = store.contacts_open_asks(session, contacts=contacts, now=now)
    own_asks = store.own_open_asks(session, member_ids=ids, now=now)
    # Asks are matched as storage.asks matches them (its words, its fields), for the whole batch.
    candidates = {a for m in own_asks for a in contacts.get(m, set())}
    cards = store.match_cards(session, member_ids=set(contact_asks) | candidates)
    resting = store.paused(session, member_ids=candidates, now=now)
    followed = store.with_follow_ups(session, member_ids=ids, now=now)

    # A stealth member is named to nobody beyond their own connections: in network news they
    # are "someone". (Their introductions name them to the people on the path, as asked.)
    hidden = store.stealthy(session, member_ids={m for es in edges.values() for e in es for m in (e.a, e.b)})
    names = _Names()
    digests: list[_Digest] = []
    for c, p in todo:
        me = c.member_id
        d = _Digest(member_id=me, lang=c.lang or texts.DEFAULT_LANG, period=p, cadence=c.cadence)
        d.pending = pending.get(me, [])
        for step in d.pending:
            _pending_names(d, step, names)
        d.done = [i for i in done.get(me, []) if p.since <= i.finished_at < p.start]
        for intro in d.done:
            names.want(me, intro.requester_id)
            names.want(me, intro.target_id)
        mine = contacts.get(me, set())
        pairs: set[tuple[int, int]] = set()
        for contact in sorted(mine):
            for edge in edges.get(contact, ()):
                if not p.since <= edge.created_at < p.start or me in (edge.a, edge.b):
                    continue
                pairs.add((min(edge.a, edge.b), max(edge.a, edge.b)))
        for a, b in sorted(pairs):
            # Say it from the side of my contact; when both are my contacts, once.
            contact, new = (a, b) if a in mine else (b, a)
            if new not in mine and new in hidden:
                d.network.append((contact, None))
                names.want(me, contact, 1)
                continue
            d.network.append((contact, new))
            names.want(me, contact, 1)  # an active contact: 1st degree
            names.want(me, new, 1 if new in mine else 2)  # an active contact's contact
        for row in contact_asks.get(me, []):
            fields, words = ask_store.card_match(cards.get(me, {}), ask_store.ask_words(row.text))
            if fields:
                d.help.append(ask_store.AskMatch(ask=_ask_view(row), member_id=me, fields=fields, words=words))
                names.want(me, row.member_id, 1)
        for row in own_asks.get(me, []):
            words_wanted = ask_store.ask_words(row.text)
            for contact in sorted(mine - resting):
                fields, words = ask_store.card_match(cards.get(contact, {}), words_wanted)
                if fields:
                    d.matches.append(ask_store.AskMatch(ask=_ask_view(row), member_id=contact, fields=fields,
                                                        words=words))
                    names.want(me, contact, 1)
        if me in followed:
            for fu in follow_store.due_follow_ups(session, member_id=me, now=now):
                made = intro_store.get_intro(session, intro_id=fu.intro_id)
                if made is None:
                    continue
                other = made.target_id if me == made.requester_id else made.requester_id or 0
                d.follow_ups.append((fu, other))
                names.want(me, other)
        digests.append(d)
    names.resolve(session)

    sent_rows: list[dict[str, Any]] = []
    empty_rows: list[dict[str, Any]] = []
    for n, d in enumerate(digests, start=1):
        key = store.dedupe_key(d.member_id, d.period)
        reply = render(d, names)
        if isinstance(reply, NoReply):
            empty_rows.append(_row(d.member_id, store.KIND_EMPTY, "{}", store.EMPTY, 100, key, now))
        else:
            sent_rows.append(_row(d.member_id, "choices" if isinstance(reply, ChoicesReply) else "text",
                                  reply_to_json(reply), OutboxStatus.PENDING, outbox.PRIORITY_DIGEST, key, now))
        if crash_after is not None and crash_after(n):
            raise CrashForTest(f"simulated crash after {n} digests of this batch")
    queued = store.queue_many(session, rows=sent_rows,
                              mentions={store.dedupe_key(d.member_id, d.period): names.shown.get(d.member_id, set())
                                        for d in digests})
    empty = store.queue_many(session, rows=empty_rows)
    return BatchResult(last_id=last_id, queued=queued, empty=empty, done_before=len(due) - len(todo))


def _row(member_id: int, kind: str, payload: str, status: str, priority: int, key: str,
         now: datetime) -> dict[str, Any]:
    """An outbox row as storage.outbox.enqueue writes it."""
    return {"member_id": member_id, "kind": kind, "payload": payload, "priority": priority, "status": status,
            "attempts": 0, "created_at": now, "next_attempt_at": now, "dedupe_key": key}


def _ask_view(row: store.AskRow) -> ask_store.AskView:
    return ask_store.AskView(id=row.id, member_id=row.member_id, text=row.text, status=row.status,
                             created_at=row.created_at, expires_at=row.expires_at, closed_at=None)

