"""Scheduled jobs: plain async functions of (dependencies, now), registered by name."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from handlers.context import Settings
from storage import erasure, pushes
from storage.db import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobDeps:
    """What a job may use. `now` is passed separately so a job can run "as of" any time.

    The operator's settings arrive as the handlers' Settings, built by bot/ from the
    configuration: the scheduler knows nothing of how it is read.
    """

    db: Database
    settings: Settings = Settings()


JobFunc = Callable[[JobDeps, datetime], Awaitable[str]]


@dataclass(frozen=True)
class JobSpec:
    """A named job and when `serve` runs it (cron fields, in the scheduler's time zone)."""

    name: str
    func: JobFunc
    cron: dict[str, str]
    summary: str


# WeChat retries a push for well under a minute; three days of keys is a generous margin.
PUSH_KEY_RETENTION = timedelta(days=3)
# Stored replies can quote cards and serve only WeChat's retries, within seconds. `serve`
# sweeps them every few seconds; this catches what a stopped server left.
REPLY_RETENTION = pushes.REPLY_TTL
# A weekly digest's window is the 7 days before its Monday 09:00, in any time zone.
DIGEST_LOOKBACK = timedelta(days=9)


async def prune_pushes(deps: JobDeps, now: datetime) -> str:
    """Forget deduplication keys of pushes that WeChat can no longer retry."""
    def prune(session: Session) -> int:
        pushes.forget_replies(session, older_than=now - REPLY_RETENTION)
        return pushes.prune(session, older_than=now - PUSH_KEY_RETENTION)

    removed = await deps.db.run(prune)
    return f"removed {removed} push keys older than {PUSH_KEY_RETENTION.days} days"


# What we sent can quote other members' cards; a week is long enough to look into a complaint.
SENT_TEXT_RETENTION = timedelta(days=7)


async def prune_outbox(deps: JobDeps, now: datetime) -> str:
    """Drop the texts of messages sent (or given up) more than a week ago; their rows stay counted."""
    from storage import outbox

    redacted = await deps.db.run(outbox.redact_sent, before=now - SENT_TEXT_RETENTION)
    return f"dropped the texts of {redacted} messages sent more than {SENT_TEXT_RETENTION.days} days ago"


async def purge_deactivated(deps: JobDeps, now: datetime) -> str:
    """Delete the personal data of members who unsubscribed longer ago than the grace period."""
    cutoff = now - deps.settings.deletion_grace
    erased = 0
    # One member per transaction: a crash mid-run leaves whole members, and the next run
    # finishes what is left.
    while await deps.db.run(erasure.erase_one_deactivated, cutoff=cutoff):
        erased += 1
    return f"erased the data of {erased} members who left before {cutoff.date().isoformat()}"


async def intro_expiry(deps: JobDeps, now: datetime) -> str:
    """Remind each pending introduction step once after 3 days, and expire it after 7."""
    from handlers import intros

    settings = deps.settings
    counts = {"reminded": 0, "expired": 0, "skipped": 0}
    # One step per transaction: a crash mid-run loses nothing, and the next run goes on.
    while (outcome := await deps.db.run(intros.process_due_step, now=now, settings=settings)) is not None:
        counts[outcome] += 1
        if counts["skipped"] > 1000:  # a bug, not a state: never spin forever
            log.error("intro-expiry: too many steps skipped; stopping this run")
            break
    return f"sent {counts['reminded']} introduction reminders, expired {counts['expired']} steps"


async def referral_nudges(deps: JobDeps, now: datetime) -> str:
    """Nudge the mutual connector of each open ask and a 2nd-degree member who offers it."""
    from handlers import asks

    expired = await deps.db.run(asks.expire_asks, now=now)
    sent = 0
    # One ask per transaction, each (ask, candidate) pair recorded once ever with its message:
    # a second run or worker finds the pairs taken, and a crash loses only the ask in flight.
    for ask_id in await deps.db.run(asks.open_ask_ids, now=now):
        sent += await deps.db.run(asks.process_ask, ask_id=ask_id, now=now)
    return f"sent {sent} referral nudges, expired {expired} asks"


async def follow_ups(deps: JobDeps, now: datetime) -> str:
    """Ask both sides of each introduction completed a week ago whether they met."""
    from handlers import asks

    counts = {"asked": 0, "cancelled": 0, "skipped": 0}
    # One follow-up per transaction; a follow-up leaves 'pending' as its message is queued.
    while (outcome := await deps.db.run(asks.process_due_follow_up, now=now)) is not None:
        counts[outcome] += 1
        if counts["skipped"] > 1000:  # a bug, not a state: never spin forever
            log.error("follow-ups: too many follow-ups skipped; stopping this run")
            break
    return f"sent {counts['asked']} follow-ups, cancelled {counts['cancelled']}"


async def digests(deps: JobDeps, now: datetime, *, batch_size: int = 1000,
                  crash_after: Callable[[int], bool] | None = None) -> str:
    """Queue the digest of every member whose weekly or daily digest is due as of `now`.

    Members go in batches, one transaction each, under the unique key digest:{member}:{period}:
    a second run or worker finds the keys taken, and after a crash the next run does the rest.
    `crash_after` is a test hook that simulates a crash inside a batch.
    """
    from handlers import digests as digest_handlers
    from storage import digests as digest_store

    # The connections made during any due member's window, read once for the whole run.
    edges = await deps.db.run(digest_store.new_edges, since=now - DIGEST_LOOKBACK, until=now)
    totals = {"queued": 0, "empty": 0, "done_before": 0}
    after = 0
    while True:
        result = await deps.db.run(digest_handlers.process_batch, after_id=after, now=now,
                                   default_tz=deps.settings.default_timezone, limit=batch_size,
                                   edges=edges, crash_after=crash_after)
        if result.last_id is None:
            break
        after = result.last_id
        totals["queued"] += result.queued
        totals["empty"] += result.empty
        totals["done_before"] += result.done_before
    return (f"queued {totals['queued']} digests, {totals['empty']} empty (not sent), "
            f"{totals['done_before']} queued before")


# Off the :00 and :30 marks, when everyone else's jobs run (WECHAT.md §8.3).
JOBS: dict[str, JobSpec] = {
    spec.name: spec
    for spec in [
        JobSpec("prune-pushes", prune_pushes, {"hour": "4", "minute": "17"},
                "forget old push deduplication keys"),
        JobSpec("purge-deactivated", purge_deactivated, {"hour": "3", "minute": "47"},
                "delete the data of members who unsubscribed before the grace period"),
        JobSpec("intro-expiry", intro_expiry, {"minute": "23"},
                "remind introduction steps after 3 days and expire them after 7"),
        JobSpec("referral-nudges", referral_nudges, {"hour": "10", "minute": "41"},
                "nudge connectors when a contact's contact offers what an ask needs"),
        JobSpec("follow-ups", follow_ups, {"hour": "11", "minute": "13"},
                "ask whether people met a week after their introduction"),
        JobSpec("digests", digests, {"minute": "7,22,37,52"},
                "queue each member's weekly or daily digest once it is 09:00 their time"),
        JobSpec("prune-outbox", prune_outbox, {"hour": "4", "minute": "29"},
                "drop the texts of messages sent more than 7 days ago"),
    ]
}
