"""The privacy invariant, as a property (issue 4 and issue 8, PRODUCT.md "Invariant").

No member's contact field, and no field above its visibility level, ever reaches another
member except through a completed double opt-in; contact never goes beyond the 1st degree;
a stealth member is never named beyond their 1st degree outside an introduction they are part
of. Hypothesis draws random graphs, random visibility and stealth settings (old `network`
contact settings included) and random sequences of commands (find, intro, accept, decline,
introduce, requests, ask, nudge answers, privacy and stealth changes, export) and of the
scheduled jobs (referral nudges, digests, introduction expiry, follow-ups) run as the
scheduler runs them. After every step, every message the bot produced on every channel (the
passive reply, every new outbox row, the export) is checked against what its recipient may
see at that moment, before or after the step.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

from scheduler.clock import FixedClock
from bot.app import handler_settings
from bot.config import load_config
from bot.dispatcher import Dispatcher
from handlers import rights
from handlers.events import EventKind, InboundEvent
from handlers.replies import as_plain_text, reply_from_json
from handlers.visibility import may_see
from scheduler.jobs import JOBS, JobDeps
from storage import cards, exports, graph, intros, members
from storage.cards import FIELD_NAMES
from storage.db import Database
from storage.models import Connection, Intro, MemberSettings, Nudge, OutboxMessage
from storage.privacy import CONNECTIONS, HIDDEN, LEVELS, NETWORK

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=timezone.utc)  # Monday 09:00 in Shanghai
PLATFORM = "oa"
MAX_MEMBERS = 7
# Enough examples to matter, few enough for CI on two cores; the seed is fixed by settings.
EXAMPLES = int(os.environ.get("YINJIAN_PROPERTY_EXAMPLES", "100"))
JOB_VERBS = {"digest": "digests", "expiry": "intro-expiry", "follow-ups": "follow-ups"}
_run = itertools.count()


def marker(field_name: str, member: int, run: int) -> str:
    """A unique word standing for one field of one member: seeing it means seeing the field."""
    return f"{field_name[:3]}{member}r{run}q"


def keyword(member: int, run: int) -> str:
    """A word on every field of a member's card, which searches use (never checked as a leak)."""
    return f"kw{member}r{run}z"


def allowed(field_name: str, level: str, degree: Optional[int]) -> bool:
    """The rule the bot must keep, written out again here: contact never beyond the 1st degree."""
    if field_name == "contact" and degree not in (0, 1):
        return False
    return may_see(level, degree)


@dataclass
class World:
    """One example's members (index -> member id), their settings as stored, and the clock."""

    run: int
    ids: dict[int, int] = field(default_factory=dict)
    levels: dict[tuple[int, str], str] = field(default_factory=dict)
    stealth: dict[int, bool] = field(default_factory=dict)

    def openid(self, member: int) -> str:
        return f"p{self.run}m{member}"


Action = tuple[int, str, int, int]  # actor, verb, a, b

actions = st.lists(
    st.tuples(
        st.integers(0, MAX_MEMBERS - 1),
        # Weighted towards what moves introductions along; every channel is in the mix.
        st.sampled_from(["intro"] * 7 + ["accept"] * 10 + ["introduce"] * 2 + ["ask"] * 2 + ["nudge"] * 2
                        + ["find", "decline", "requests", "digest", "expiry", "follow-ups", "privacy",
                           "stealth", "export", "contacts"]),
        st.integers(0, MAX_MEMBERS - 1),
        st.integers(1, 12),
    ),
    min_size=8,
    max_size=36,
)
graphs = st.sets(st.tuples(st.integers(0, MAX_MEMBERS - 1), st.integers(0, MAX_MEMBERS - 1)),
                 min_size=5, max_size=14)
level_choices = st.lists(st.sampled_from(LEVELS), min_size=MAX_MEMBERS * len(FIELD_NAMES),
                         max_size=MAX_MEMBERS * len(FIELD_NAMES))
# About one member in five starts in stealth: enough to test it, few enough for searches to find people.
stealth_choices = st.lists(st.integers(0, 4).map(lambda x: x == 0), min_size=MAX_MEMBERS, max_size=MAX_MEMBERS)


@pytest.fixture(scope="module")
def property_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """One SQLite database for every example (examples use fresh members, so they never meet)."""
    path: Path = tmp_path_factory.mktemp("property") / "p.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade_sync()
    yield db
    db.dispose_sync()


SPECS_TAGS = {spec.name: spec.tags for spec in cards.FIELDS}


def build_world(db: Database, edges: set[tuple[int, int]], levels: list[str], stealth: list[bool]) -> World:
    world = World(run=next(_run))
    with db.session() as s:
        for m in range(MAX_MEMBERS):
            rec = members.touch(s, platform=PLATFORM, openid=world.openid(m), now=T0,
                                user_message=True, event=False)
            world.ids[m] = rec.id
            members.set_lang(s, member=rec, lang="en", explicit=True)
            values: dict[str, object] = {}
            stored: dict[str, str] = {}
            for f in FIELD_NAMES:
                word = marker(f, m, world.run)
                values[f] = [word, keyword(m, world.run)] if SPECS_TAGS[f] else f"{word} {keyword(m, world.run)}"
                stored[f] = levels[m * len(FIELD_NAMES) + FIELD_NAMES.index(f)]
            cards.save(s, member_id=rec.id, changes=values, now=T0)  # type: ignore[arg-type]
            # Written as a row from before migration 0005 could be: contact may say `network`.
            s.add(MemberSettings(member_id=rec.id, visibility=json.dumps(stored), stealth=stealth[m],
                                 digest="daily"))
        for a, b in edges:
            if a != b:
                graph.connect(s, a=world.ids[a], b=world.ids[b], source="invite", now=T0)
    refresh(db, world)
    return world


def refresh(db: Database, world: World) -> None:
    """The settings as stored right now (the levels members chose, not as the bot reads them)."""
    defaults = {"contact": CONNECTIONS, "bio": CONNECTIONS}
    with db.session() as s:
        rows = {r.member_id: r for r in s.execute(
            sa.select(MemberSettings).where(MemberSettings.member_id.in_(world.ids.values()))).scalars()}
    for m, mid in world.ids.items():
        row = rows.get(mid)
        stored = json.loads(row.visibility) if row else {}
        world.stealth[m] = bool(row and row.stealth)
        for f in FIELD_NAMES:
            world.levels[(m, f)] = stored.get(f) or defaults.get(f, NETWORK)


def commands(db: Database, world: World, action: Action) -> list[tuple[int, str]]:
    """What the drawn action makes members type: (member, text) pairs, in order."""
    actor, verb, a, b = action
    if verb in ("accept", "decline"):
        # Mostly someone whose decision is awaited acts; sometimes anyone tries any id.
        with db.session() as s:
            waiting = [(m, step.id) for m, mid in world.ids.items()
                       for step in intros.pending_for(s, actor_id=mid)]
        if waiting and b % 4:
            who, step = waiting[(a + b) % len(waiting)]
            return [(who, f"{verb} {step} vouch" if verb == "accept" else f"{verb} {step}")]
        return [(actor, f"{verb} {b}")]
    if verb == "find":
        return [(actor, f"find {keyword(a, world.run)}")]
    if verb == "intro":
        return [(actor, f"find {keyword(a, world.run)}"), (actor, f"intro {1 if b % 5 else b} hello")]
    if verb == "introduce":
        return [(actor, f"introduce {a % 4 + 1} {b % 4 + 1} meet")]
    if verb == "ask":
        return [(actor, f"ask {keyword(a, world.run)}")]
    if verb == "nudge":
        # Mostly a connector answers a nudge they were sent; sometimes anyone tries any id.
        with db.session() as s:
            sent = [(m, n.id) for m, mid in world.ids.items()
                    for n in s.execute(sa.select(Nudge).where(Nudge.connector_id == mid,
                                                              Nudge.status == "sent")).scalars()]
        answer = "yes" if a % 4 else "no"
        if sent and b % 4:
            who, nudge_id = sent[(a + b) % len(sent)]
            return [(who, f"nudge {nudge_id} {answer}")]
        return [(actor, f"nudge {b} {answer}")]
    if verb == "privacy":
        return [(actor, f"privacy {FIELD_NAMES[b % len(FIELD_NAMES)]} {LEVELS[a % len(LEVELS)]}")]
    if verb == "stealth":
        return [(actor, f"stealth {'on' if a % 2 else 'off'}")]
    if verb == "contacts":
        return [(actor, "contacts")]
    return [(actor, "requests")]


def degrees(db: Database, world: World) -> dict[tuple[int, int], Optional[int]]:
    with db.session() as s:
        return {(x, y): graph.degree(s, viewer_id=world.ids[x], owner_id=world.ids[y])
                for x in world.ids for y in world.ids}


def opted_in_pairs(db: Database, world: World) -> set[tuple[int, int]]:
    """Pairs connected by a completed introduction: everything may pass between them."""
    back = {v: k for k, v in world.ids.items()}
    with db.session() as s:
        rows = s.execute(sa.select(Connection.member_id, Connection.contact_id)
                         .where(Connection.source != "invite")).all()
    return {(back[x], back[y]) for x, y in rows if x in back and y in back}


def introduced_together(db: Database, world: World) -> set[tuple[int, int]]:
    """Pairs who are both part of one introduction (as requester, target, broker or on its path)."""
    back = {v: k for k, v in world.ids.items()}
    pairs: set[tuple[int, int]] = set()
    with db.session() as s:
        for intro in s.execute(sa.select(Intro).where(Intro.target_id.in_(world.ids.values()))).scalars():
            people = {back[m] for m in [*json.loads(intro.path), intro.requester_id, intro.target_id,
                                        intro.broker_id] if m in back}
            pairs |= {(x, y) for x in people for y in people}
    return pairs


def outbox_since(db: Database, world: World, after: int) -> list[tuple[int, int, str]]:
    back = {v: k for k, v in world.ids.items()}
    with db.session() as s:
        rows = s.execute(sa.select(OutboxMessage.id, OutboxMessage.member_id, OutboxMessage.payload)
                         .where(OutboxMessage.id > after)).all()
    return [(i, back[m], as_plain_text(reply_from_json(p))) for i, m, p in rows if m in back]


@dataclass
class Seen:
    """What the checker knows around one step."""

    degrees_before: dict[tuple[int, int], Optional[int]]
    degrees_after: dict[tuple[int, int], Optional[int]]
    levels_before: dict[tuple[int, str], str]
    levels_after: dict[tuple[int, str], str]
    stealth: dict[int, bool]
    opted_in: set[tuple[int, int]]
    together: set[tuple[int, int]]


def check(world: World, recipient: int, text: str, seen: Seen, channel: str) -> None:
    for owner in world.ids:
        if owner == recipient or (recipient, owner) in seen.opted_in:
            continue
        before, after = seen.degrees_before[(recipient, owner)], seen.degrees_after[(recipient, owner)]
        for f in FIELD_NAMES:
            if marker(f, owner, world.run) not in text:
                continue
            ok = (allowed(f, seen.levels_before[(owner, f)], before)
                  or allowed(f, seen.levels_after[(owner, f)], after))
            assert ok, (
                f"{channel}: member {recipient} received member {owner}'s {f} "
                f"({seen.levels_before[(owner, f)]}/{seen.levels_after[(owner, f)]}) at degree "
                f"{before}/{after}:\n{text}"
            )
        if seen.stealth[owner] and marker("name", owner, world.run) in text \
                and 1 not in (before, after) and (recipient, owner) not in seen.together:
            raise AssertionError(f"{channel}: stealth member {owner} named to member {recipient} at "
                                 f"degree {before}/{after}:\n{text}")


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(edges=graphs, levels=level_choices, stealth=stealth_choices, script=actions)
def test_nothing_leaks_without_a_double_opt_in(property_db: Database, edges: set[tuple[int, int]],
                                               levels: list[str], stealth: list[bool],
                                               script: list[Action]) -> None:
    world = build_world(property_db, edges, levels, stealth)
    clock = FixedClock(T0)
    dispatcher = Dispatcher(db=property_db, clock=clock)
    deps = JobDeps(db=property_db, settings=handler_settings(load_config(None, env={})))
    kinds: set[str] = set()

    async def play() -> None:
        with property_db.session() as s:
            last_outbox = s.execute(sa.select(sa.func.coalesce(sa.func.max(OutboxMessage.id), 0))).scalar_one()
        for action in script:
            actor, verb = action[0], action[1]
            levels_before, degrees_before = dict(world.levels), degrees(property_db, world)
            produced: list[tuple[int, str, str]] = []
            if verb in JOB_VERBS:
                if verb == "digest":
                    clock.advance(days=1)  # every member's daily digest is due again
                elif verb in ("expiry", "follow-ups"):
                    clock.advance(days=4)
                await JOBS[JOB_VERBS[verb]].func(deps, clock.now())
            elif verb == "export":
                link = property_db.transaction(exports.create_link, member_id=world.ids[actor], now=clock.now())
                token = link.token
                data = property_db.transaction(rights.export_for_link, token=token, now=clock.now())
                produced.append((actor, json.dumps(data), "export"))
            else:
                for who, typed in commands(property_db, world, action):
                    event = InboundEvent(kind=EventKind.TEXT, platform=PLATFORM, member_id=world.openid(who),
                                         dedupe_key=f"prop:{uuid.uuid4().hex}", created_at=clock.now(),
                                         text=typed, raw_type="text")
                    produced.append((who, as_plain_text(await dispatcher.process(event)), "reply"))
                if verb == "ask":  # the job that turns asks into referral nudges, right away
                    await JOBS["referral-nudges"].func(deps, clock.now())
            refresh(property_db, world)
            seen = Seen(degrees_before=degrees_before, degrees_after=degrees(property_db, world),
                        levels_before=levels_before, levels_after=dict(world.levels),
                        stealth=dict(world.stealth), opted_in=opted_in_pairs(property_db, world),
                        together=introduced_together(property_db, world))
            for recipient, text, channel in produced:
                check(world, recipient, text, seen, channel)
            for row_id, recipient, text in outbox_since(property_db, world, last_outbox):
                check(world, recipient, text, seen, f"outbox after {verb}")
                kinds.add("digest" if "digest" in text else "nudge" if "is looking for" in text else "other")
                last_outbox = max(last_outbox, row_id)
            clock.advance(minutes=1)
        with property_db.session() as s:
            made = s.execute(sa.select(Intro.status)
                             .where(Intro.target_id.in_(world.ids.values()))).scalars().all()  # type: ignore[attr-defined]
        note_event(f"introductions started: {'some' if made else 'none'}")
        note_event(f"introductions completed: {'some' if 'completed' in made else 'none'}")
        for kind in ("digest", "nudge"):
            note_event(f"{kind} messages: {'some' if kind in kinds else 'none'}")

    asyncio.run(play())


def _seen(world: World, degree: int, *, stealth: bool = False, together: bool = False) -> Seen:
    degrees_ = {(x, y): (0 if x == y else degree) for x in world.ids for y in world.ids}
    return Seen(degrees_before=degrees_, degrees_after=degrees_, levels_before=dict(world.levels),
                levels_after=dict(world.levels), stealth={m: stealth for m in world.ids}, opted_in=set(),
                together={(0, 1), (1, 0)} if together else set())


def test_the_checker_catches_a_leak() -> None:
    """The property can fail: hidden fields, contact beyond the 1st degree, stealth names."""
    world = World(run=999, ids={0: 1, 1: 2}, levels={(1, f): CONNECTIONS for f in FIELD_NAMES})
    with pytest.raises(AssertionError, match="contact"):
        check(world, 0, f"look: {marker('contact', 1, 999)}", _seen(world, 2), "test")
    world.levels[(1, "contact")] = NETWORK  # an old setting: still never beyond the 1st degree
    with pytest.raises(AssertionError, match="contact"):
        check(world, 0, f"look: {marker('contact', 1, 999)}", _seen(world, 3), "test")
    check(world, 0, f"fine: {marker('contact', 1, 999)}", _seen(world, 1), "test")
    world.levels[(1, "name")] = NETWORK
    check(world, 0, f"fine: {marker('name', 1, 999)}", _seen(world, 2), "test")
    with pytest.raises(AssertionError, match="stealth"):
        check(world, 0, f"look: {marker('name', 1, 999)}", _seen(world, 2, stealth=True), "test")
    check(world, 0, f"fine: {marker('name', 1, 999)}", _seen(world, 2, stealth=True, together=True), "test")
    world.levels[(1, "bio")] = HIDDEN
    with pytest.raises(AssertionError, match="bio"):
        check(world, 0, f"look: {marker('bio', 1, 999)}", _seen(world, 1), "test")
