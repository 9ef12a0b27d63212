"""Runs each push exactly once, one at a time per member, and answers within the deadline.

A push is claimed, its member recorded, its handler run and its reply stored in ONE
transaction: a crash anywhere before the commit leaves nothing behind, and WeChat's retry is
handled as if it were the first delivery. A retry that arrives while the first delivery is still
running waits for that result instead of running the handler again.

When the database is in trouble (gone, refusing, timing out), nothing of the push is stored and
`answer` raises PushNotStored: the webhook answers HTTP 503, and WeChat delivers the push again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Optional

from sqlalchemy.orm import Session

from scheduler.clock import Clock
from bot.outbox import with_away
from handlers import core
from handlers.context import Context, Settings
from handlers.events import EventKind, InboundEvent
from handlers.outgoing import tell
from handlers.replies import NoReply, Reply, TextReply, reply_from_json, reply_to_json
from handlers.texts import DEFAULT_LANG, text
from handlers.visibility import shown_to
from storage import members, outbox, pushes
from storage.db import Database, conflict, describe_error, transient
from storage.models import MemberStatus

log = logging.getLogger(__name__)

# WeChat gives up after 5 s; answer by 4.5 s, and stop choosing a passive reply at 4 s so the
# commit that stores it still fits.
ANSWER_DEADLINE = 4.5
PASSIVE_CUTOFF = 4.0
# How many held messages a passive reply carries at most ("while you were away…").
AWAY_ITEMS = 3
# A push's transaction that hits a deadlock or a serialization failure (PostgreSQL, two
# workers changing the same rows) is run again from the start, up to this many runs in all;
# only then does it count as database trouble.
CONFLICT_RUNS = 4


class PushNotStored(Exception):
    """Nothing of this push is stored (the database is in trouble): answer so WeChat retries it."""


class _Abandoned(Exception):
    """The webhook already answered 503 for this push: its transaction must not claim it."""


@dataclass
class _Delivery:
    """One push being handled in this process."""

    event: InboundEvent
    started: float  # time.monotonic()
    result: asyncio.Future[Reply | PushNotStored]
    answered_elsewhere: bool = False  # the webhook gave up waiting and answered `success`
    task: Optional["asyncio.Task[None]"] = None
    # Whether a live transaction holds the push's key, and whether the webhook answered 503
    # (after which no transaction may claim it): the event loop and the database thread both
    # look, so under a lock.
    claimed: bool = False
    abandoned: bool = False
    _claim_lock: threading.Lock = field(default_factory=threading.Lock)

    def elapsed(self) -> float:
        """Seconds since the push arrived (safe to call from the database thread)."""
        return time.monotonic() - self.started

    def check_not_abandoned(self) -> None:
        """Raise _Abandoned when the webhook answered 503 (database thread)."""
        with self._claim_lock:
            if self.abandoned:
                raise _Abandoned()

    def mark_claimed(self) -> None:
        """Our transaction holds the key now, unless the push was abandoned (database thread)."""
        with self._claim_lock:
            if self.abandoned:
                raise _Abandoned()
            self.claimed = True

    def unclaim(self) -> None:
        """The transaction rolled back, and its claim with it."""
        with self._claim_lock:
            self.claimed = False

    def abandon_unless_claimed(self) -> bool:
        """At the deadline: True (and abandoned from now on) when no transaction holds the key."""
        with self._claim_lock:
            if not self.claimed:
                self.abandoned = True
            return self.abandoned


@dataclass
class _Outcome:
    """What the database thread learned about a push, for the event loop."""

    member_lang: str = DEFAULT_LANG
    late: bool = False
    duplicate: bool = False
    # Whose card data the reply shows, should it have to go through the outbox after all.
    shown: frozenset[int] = frozenset()


@dataclass
class Dispatcher:
    """Deduplicates, serialises per member, runs handlers and enforces the answer deadline."""

    db: Database
    clock: Clock
    answer_deadline: float = ANSWER_DEADLINE
    passive_cutoff: float = PASSIVE_CUTOFF
    on_outbox: Callable[[], None] = lambda: None
    handler: Callable[[Context], Reply] = core.handle
    settings: Settings = field(default_factory=Settings)
    _inflight: dict[str, _Delivery] = field(default_factory=dict)
    # Every delivery still running, including abandoned ones no longer in _inflight.
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _member_locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    _lock_users: dict[tuple[str, str], int] = field(default_factory=dict)

    async def answer(self, event: InboundEvent) -> Reply:
        """The reply to put into the HTTP answer; NoReply when the deadline came first.

        Raises PushNotStored when nothing of the push is stored: the database failed with
        transient trouble, or by the deadline no transaction had even claimed the push (stuck
        connecting, or queued for a database thread). A claimed push that is merely slow
        answers NoReply, and its reply goes through the outbox.
        """
        loop = asyncio.get_running_loop()
        delivery = self._inflight.get(event.dedupe_key)
        if delivery is None:
            delivery = _Delivery(event=event, started=time.monotonic(), result=loop.create_future())
            self._inflight[event.dedupe_key] = delivery
            delivery.task = asyncio.create_task(self._run(delivery))
            self._tasks.add(delivery.task)
            delivery.task.add_done_callback(self._tasks.discard)
        else:
            log.info("retry of %s joins the delivery in progress", event.dedupe_key)
        try:
            # Each delivery, a retry included, waits at most the deadline from its own arrival.
            result = await asyncio.wait_for(asyncio.shield(delivery.result), self.answer_deadline)
        except TimeoutError:
            if delivery.abandon_unless_claimed():
                # `success` would tell WeChat the push was handled, and nothing of it is stored.
                if self._inflight.get(event.dedupe_key) is delivery:
                    del self._inflight[event.dedupe_key]  # WeChat's retry starts afresh
                log.warning("push %s not claimed by the deadline (database unavailable); "
                            "answered 503 so WeChat delivers it again", event.dedupe_key)
                raise PushNotStored("no database transaction claimed the push in time") from None
            delivery.answered_elsewhere = True
            log.warning("push %s is slow; answered success, its reply will go through the outbox",
                        event.dedupe_key)
            return NoReply()
        if isinstance(result, PushNotStored):
            raise PushNotStored(*result.args)
        return result

    async def process(self, event: InboundEvent) -> Reply:
        """Handle one event with no deadline (the terminal chat and jobs use this).

        When the database is in trouble the member gets the apology, which is not stored:
        the same line typed again is handled afresh.
        """
        loop = asyncio.get_running_loop()
        delivery = _Delivery(event=event, started=time.monotonic(), result=loop.create_future())
        self._inflight[event.dedupe_key] = delivery
        await self._run(delivery, deadline=False)
        result = delivery.result.result()
        if isinstance(result, PushNotStored):
            return TextReply(text(DEFAULT_LANG, "error"))
        return result

    async def drain(self) -> None:
        """Wait for every delivery still running (on shutdown)."""
        tasks = list(self._tasks)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, delivery: _Delivery, *, deadline: bool = True) -> None:
        event = delivery.event
        result: Reply | PushNotStored = NoReply()
        try:
            async with self._member_lock(event):
                result = await self._handle_once(delivery, deadline=deadline)
        except Exception as exc:
            if transient(exc):
                log.error("push %s: database unavailable after it was handled (%s)",
                          event.dedupe_key, describe_error(exc))
            else:
                log.exception("push %s failed outside its handler", event.dedupe_key)
        finally:
            if self._inflight.get(event.dedupe_key) is delivery:
                del self._inflight[event.dedupe_key]
            if not delivery.result.done():
                delivery.result.set_result(result)

    async def _handle_once(self, delivery: _Delivery, *, deadline: bool) -> Reply | PushNotStored:
        event = delivery.event
        for run in range(1, CONFLICT_RUNS + 1):
            now, outcome = self.clock.now(), _Outcome()
            try:
                reply = await self.db.run_interactive(self._in_transaction, delivery=delivery,
                                                      now=now, deadline=deadline, outcome=outcome)
                break
            except _Abandoned:
                log.info("push %s was answered 503 before its transaction could claim it; "
                         "left to WeChat's retry", event.dedupe_key)
                return PushNotStored("abandoned")
            except Exception as exc:
                delivery.unclaim()  # rolled back, and the claim with it
                if conflict(exc) and run < CONFLICT_RUNS:
                    log.info("push %s: %s with another transaction; running it again (%d)",
                             event.dedupe_key, describe_error(exc), run)
                    # Spread the reruns, so that the transactions that collided do not again.
                    await asyncio.sleep(random.uniform(0.005, 0.03) * run)
                    continue
                if transient(exc):
                    return self._not_stored(delivery, exc)
                log.exception("handler failed for push %s (%s)", event.dedupe_key,
                              event.raw_type or event.kind)
                reply = TextReply(text(outcome.member_lang, "error"))
                await self._store_failure(event, reply)
                return reply
        if outcome.late:
            self.on_outbox()
            return NoReply()
        if delivery.answered_elsewhere and not isinstance(reply, NoReply) and not outcome.duplicate:
            # The commit itself outlived the deadline: the member never saw the passive reply.
            await self.db.run(self._move_to_outbox, event=event, reply=reply, shown=outcome.shown)
            self.on_outbox()
        return reply

    def _not_stored(self, delivery: _Delivery, exc: Exception) -> PushNotStored:
        """Transient trouble: nothing is stored, so WeChat's retry will run the push again."""
        event = delivery.event
        if delivery.answered_elsewhere:
            # The webhook already said `success`, so WeChat will not retry: the push is lost.
            log.error("push %s lost: answered success at the deadline, then the database "
                      "failed (%s)", event.dedupe_key, describe_error(exc))
        elif delivery.abandoned:
            log.info("push %s: the database failed (%s) after the webhook answered 503",
                     event.dedupe_key, describe_error(exc))
        else:
            log.warning("push %s not handled: database unavailable (%s); answering 503 so "
                        "WeChat delivers it again", event.dedupe_key, describe_error(exc))
        return PushNotStored(describe_error(exc))

    def _in_transaction(self, session: Session, *, delivery: _Delivery, now: datetime, deadline: bool,
                        outcome: "_Outcome") -> Reply:
        """Claim, record the member, run the handler and store the reply: one transaction."""
        event = delivery.event
        delivery.check_not_abandoned()  # before touching the database at all
        claimed = pushes.claim(session, key=event.dedupe_key, openid=event.member_id, now=now)
        delivery.mark_claimed()
        if not claimed:
            log.info("duplicate push %s answered from its stored result", event.dedupe_key)
            outcome.duplicate = True
            return reply_from_json(pushes.stored_reply(session, key=event.dedupe_key, now=now))
        identity = members.touch(
            session, platform=event.platform, openid=event.member_id, now=now,
            user_message=event.is_user_message,
            event=event.kind in {EventKind.SUBSCRIBE, EventKind.SCAN, EventKind.CLICK},
        )
        # A linked identity acts as the member it was linked into (storage.linking).
        member = members.acting(session, identity=identity)
        outcome.member_lang = member.lang or DEFAULT_LANG
        away: list[outbox.HeldMessage] = []
        released = 0
        if event.is_user_message:
            # "While you were away…": the most important held messages ride on the passive reply
            # (which costs no budget); all are released, and the rest follow within the new one.
            away = outbox.held_for_away(session, member_id=member.id or 0, limit=AWAY_ITEMS)
            released = outbox.release_held(session, member_id=member.id or 0, now=now)
        ctx = Context(event=event, member=member, session=session, now=now,
                      settings=self.settings, push_key=event.dedupe_key,
                      writer=identity if identity.id != member.id else None)
        reply = self.handler(ctx)
        late = deadline and (delivery.answered_elsewhere or delivery.elapsed() > self.passive_cutoff)
        if late and member.status == MemberStatus.ERASED:
            late = False  # the member erased themselves; a late reply has nobody to reach
        if away and not late and member.status == MemberStatus.ACTIVE:
            away = [h for h in away if _readable(h.payload)]  # the sender fails unreadable rows
            reply, taken = with_away(reply, [(h.priority, reply_from_json(h.payload)) for h in away],
                                     member.lang or DEFAULT_LANG, more=released - len(away))
            # Delivered with this answer, in this transaction: never sent again by the outbox.
            outbox.mark_passive(session, outbox_ids=[h.id for h in away[:taken]], now=now)
        outcome.shown = shown_to(session, member.id or 0)
        if late:
            tell(session, member_id=member.id or 0, reply=reply, now=now, priority=outbox.PRIORITY_REPLY)
            pushes.finish(session, key=event.dedupe_key, reply=reply_to_json(NoReply()))
        else:
            pushes.finish(session, key=event.dedupe_key, reply=reply_to_json(reply))
        outcome.late = late
        return reply

    async def _store_failure(self, event: InboundEvent, reply: Reply) -> None:
        """A failed handler's push still counts as handled, so a retry gets the same apology."""

        def store(session: Session) -> None:
            if pushes.claim(session, key=event.dedupe_key, openid=event.member_id, now=self.clock.now()):
                pushes.finish(session, key=event.dedupe_key, reply=reply_to_json(reply))

        try:
            await self.db.run(store)
        except Exception as exc:
            if transient(exc):
                log.error("could not record failed push %s: database unavailable (%s)",
                          event.dedupe_key, describe_error(exc))
            else:
                log.exception("could not record failed push %s", event.dedupe_key)

    def _move_to_outbox(self, session: Session, *, event: InboundEvent, reply: Reply,
                        shown: frozenset[int]) -> None:
        identity = members.get(session, platform=event.platform, openid=event.member_id)
        member = members.acting(session, identity=identity) if identity is not None else None
        if member is not None and member.id is not None:
            tell(session, member_id=member.id, reply=reply, now=self.clock.now(),
                 priority=outbox.PRIORITY_REPLY, mentions=shown)
            pushes.finish(session, key=event.dedupe_key, reply=reply_to_json(NoReply()))

    def _member_lock(self, event: InboundEvent) -> "_MemberLock":
        return _MemberLock(self, (event.platform, event.member_id))


class _MemberLock:
    """An in-process lock per member that is forgotten when nobody holds or waits for it."""

    def __init__(self, dispatcher: Dispatcher, key: tuple[str, str]) -> None:
        self.d, self.key = dispatcher, key

    async def __aenter__(self) -> None:
        lock = self.d._member_locks.setdefault(self.key, asyncio.Lock())
        self.d._lock_users[self.key] = self.d._lock_users.get(self.key, 0) + 1
        await lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.d._member_locks[self.key].release()
        self.d._lock_users[self.key] -= 1
        if self.d._lock_users[self.key] == 0:
            del self.d._lock_users[self.key]
            del self.d._member_locks[self.key]


def _readable(payload: str) -> bool:
    """Whether an outbox payload is one of our replies (a broken row is the sender's to record)."""
    try:
        reply_from_json(payload)
    except (ValueError, KeyError, TypeError):
        return False
    return True
