"""The outbox sender: the only way a proactive message leaves, at most once after it is sent.

Rows are leased in one short transaction, sent with no transaction open, and finished in
another; a sender that dies mid-send only delays its rows until their lease runs out, which is
short because a live sender renews it. Every transaction runs on the database's own threads
(`Database.run`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from scheduler.clock import Clock, SystemClock
from bot.platforms.errors import ErrorKind, PlatformAPIError
from bot.platforms.official_account.api import QR_MAX_EXPIRE_SECONDS, WeChatAPI
from handlers.replies import ChoicesReply, Reply, TextReply, as_plain_text, reply_from_json
from handlers.texts import DEFAULT_LANG, text
from storage import budget, outbox
from storage.db import Database, describe_error, transient
from storage.models import MemberStatus, OutboxStatus

log = logging.getLogger(__name__)

# Members of `yinjian chat` read their messages in the terminal; the API never sees them.
TERMINAL_PLATFORM = "chat"


class Outcome:
    """Values of OutboxAttempt.outcome."""

    SENT = "sent"
    RETRY = "retry"
    HELD = "held"
    UNDELIVERABLE = "undeliverable"
    FAILED = "failed"
    LOGGED = "logged"  # no WeChat API configured: written to the log instead
    MERGED = "merged"  # went out inside another row's message (one send, counted once)
    PASSIVE = "passive"  # went out inside a passive reply ("while you were away")


# Merged customer-service text stays under WeChat's text limit (2048 bytes) with room to spare.
MAX_MERGED_BYTES = 1800
# How often the sender looks for members outside their window who should get a template notice.
NOTICE_CHECK_INTERVAL = timedelta(minutes=5)
# Claimed rows are leased for LEASE, renewed every RENEW_EVERY while their sender still works
# on them. A sender killed mid-send keeps its rows from the others for at most LEASE (then a
# restarted or another worker sends them); a live sender that is slow (the API's timeouts and
# retries of one member's rows can take longer than a lease) renews and keeps them, so no
# other sender sends them too. Three renewals can fail before a lease lapses.
LEASE = timedelta(seconds=20)
RENEW_EVERY = timedelta(seconds=5)


@dataclass(frozen=True)
class _Template:
    template_id: str
    data: dict[str, Any]
    url: str | None
    client_msg_id: str | None = None  # a notice's own key (one per member and day)


@dataclass(frozen=True)
class _QRInvite:
    scene: str
    expire_seconds: int
    text: str


_Message = Reply | _Template | _QRInvite


class _Leases:
    """The rows one sending pass holds, and how far its lease on them reaches."""

    def __init__(self, ids: Iterable[int], until: datetime) -> None:
        self.held = set(ids)
        self.until = until  # every held row's lease lasts at least this long
        self.highest = until  # and none carries a later one: the fence of every write
        self.lost: set[int] = set()

    def usable(self, row_id: int, now: datetime) -> bool:
        """True while the row is surely still this pass's to send."""
        return row_id not in self.lost and now < self.until

    def done(self, ids: Iterable[int]) -> None:
        """These rows are finished (sent, held, retried later): nothing to renew."""
        self.held.difference_update(ids)


def _decode(row: outbox.ClaimedMessage) -> _Message:
    """The message a row carries; ValueError/KeyError/TypeError when the payload is unreadable."""
    if row.kind == outbox.KIND_TEMPLATE:
        data = json.loads(row.payload)
        return _Template(template_id=data["template_id"], data=dict(data["data"]), url=data.get("url"),
                         client_msg_id=data.get("client_msg_id"))
    if row.kind == outbox.KIND_QR_INVITE:
        data = json.loads(row.payload)
        return _QRInvite(scene=str(data["scene"]), expire_seconds=int(data["expire_seconds"]),
                         text=str(data["text"]))
    return reply_from_json(row.payload)


def _describe(message: _Message) -> str:
    """The message as text for the DEBUG log."""
    if isinstance(message, (_Template, _QRInvite)):
        return repr(message)
    return as_plain_text(message)


def _with_link(text: str, url: str) -> str:
    """Put the QR image link where the text asks for it, or after it."""
    return text.replace("{url}", url) if "{url}" in text else f"{text}\n{url}"


def priority_class(priority: int) -> str:
    """The name of a priority band: reply, decision, follow_up, digest or nudge."""
    if priority < outbox.PRIORITY_DECISION:
        return "reply"
    if priority < outbox.PRIORITY_FOLLOW_UP:
        return "decision"
    if priority < outbox.PRIORITY_DIGEST:
        return "follow_up"
    if priority < outbox.PRIORITY_NUDGE:
        return "digest"
    return "nudge"


def merge_replies(items: list[tuple[int, Reply]], lang: str) -> Reply:
    """Several queued replies (in priority order) as one, under short headings.

    The first item with choices keeps them as taps; every other item's commands stay visible
    in the text, so any of them can still be typed.
    """
    lead = next((i for i, (_, r) in enumerate(items)
                 if isinstance(r, ChoicesReply) and r.choices), None)
    blocks: list[str] = []
    band = None
    for i, (priority, reply) in enumerate(items):
        heading = ""
        if priority_class(priority) != band:
            band = priority_class(priority)
            heading = text(lang, "budget_heading", title=text(lang, f"budget_title_{band}")) + "\n"
        body = reply.text if i == lead and isinstance(reply, ChoicesReply) else as_plain_text(reply)
        blocks.append(heading + body)
    if lead is None:
        return TextReply("\n\n".join(blocks))
    top = items[lead][1]
    assert isinstance(top, ChoicesReply)
    after = ([top.footer] if top.footer else []) + blocks[lead + 1:]
    return ChoicesReply(text="\n\n".join(blocks[:lead + 1]), choices=top.choices,
                        footer="\n\n".join(after))


def _size(reply: Reply) -> int:
    return len(as_plain_text(reply).encode("utf-8"))


def with_away(reply: Reply, away: list[tuple[int, Reply]], lang: str, *, more: int = 0,
              max_bytes: int = 2000) -> tuple[Reply, int]:
    """The passive reply plus "while you were away…" with as many items as fit; (reply, count).

    The answer keeps its own choices; the away items are text with their commands visible.
    """
    taken: list[tuple[int, Reply]] = []
    section = ""
    for item in away:
        merged = merge_replies([(p, TextReply(as_plain_text(r))) for p, r in taken + [item]], lang)
        left = len(away) - len(taken) - 1 + more
        candidate = text(lang, "away_header") + "\n" + as_plain_text(merged)
        if left:
            candidate += "\n\n" + text(lang, "budget_away_more", n=left)
        if _size(reply) + len(candidate.encode("utf-8")) + 2 > max_bytes:
            break
        taken.append(item)
        section = candidate
    if not taken:
        return reply, 0
    if isinstance(reply, ChoicesReply):
        footer = "\n\n".join(part for part in (reply.footer, section) if part)
        return ChoicesReply(text=reply.text, choices=reply.choices, footer=footer), len(taken)
    if isinstance(reply, TextReply):
        return TextReply(f"{reply.text}\n\n{section}"), len(taken)
    return TextReply(section), len(taken)


def notice_text(lang: str, held_by_priority: dict[int, int], *, max_chars: int = 20) -> str:
    """The template notice: what is waiting, by kind, short enough for a template field."""
    counts: dict[str, int] = {}
    for priority in sorted(held_by_priority):
        band = priority_class(priority)
        counts[band] = counts.get(band, 0) + held_by_priority[priority]
    items = [text(lang, f"budget_count_{band}_1" if n == 1 else f"budget_count_{band}", n=n)
             for band, n in counts.items()]
    sep = "、" if lang == "zh" else ", "
    full = text(lang, "budget_notice", items=sep.join(items))
    if len(full) <= max_chars:
        return full
    return text(lang, "budget_notice_short", n=sum(counts.values()))


class OutboxSender:
    """Sends due outbox rows through the WeChat API (or, without one, to the log)."""

    def __init__(
        self,
        *,
        db: Database,
        api: WeChatAPI | None,
        clock: Clock | None = None,
        batch_size: int = 20,
        lease: timedelta = LEASE,
        renew_every: timedelta = RENEW_EVERY,
        max_attempts: int = 8,
        backoff_base: timedelta = timedelta(seconds=30),
        backoff_cap: timedelta = timedelta(hours=1),
        poll_interval: float = 1.0,
        rng: random.Random | None = None,
        notice_template_id: str = "",
    ) -> None:
        self._db = db
        self._api = api
        self._clock: Clock = clock or SystemClock()
        self._batch_size = batch_size
        self._lease = lease
        self._renew_every = renew_every
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._poll_interval = poll_interval
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        # [wechat.templates] notice: tells a member outside their window that messages wait.
        self._notice_template_id = notice_template_id
        self._next_notice_check: datetime | None = None

    def wake(self) -> None:
        """Look for due rows now rather than at the next poll (a message was just queued)."""
        self._wake.set()

    def backoff(self, transient_failures: int) -> timedelta:
        """How long to wait after the n-th transient failure: exponential, capped, with jitter."""
        ceiling = min(self._backoff_base * (1 << (transient_failures - 1)), self._backoff_cap)
        # Jitter spreads the retries of many rows that failed together (e.g. on 45009).
        return ceiling * self._rng.uniform(0.5, 1.0)

    async def send_due(self) -> int:
        """One pass: claim due rows and send them within each member's budget; rows processed."""
        now = self._clock.now()
        claimed = await self._db.run(
            outbox.claim_due, now=now, lease_until=now + self._lease, limit=self._batch_size,
            exclude_platforms=(TERMINAL_PLATFORM,),
        )
        if not claimed:
            await self._queue_notices(now, [])
            return 0
        leases = _Leases((row.id for row in claimed), now + self._lease)
        keeper = asyncio.create_task(self._keep(leases))
        try:
            closed = await self._send_claimed(claimed, leases, now)
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        await self._queue_notices(now, closed)
        return len(claimed)

    async def _send_claimed(
        self, claimed: list[outbox.ClaimedMessage], leases: _Leases, now: datetime
    ) -> list[int]:
        """Send what one pass claimed; the members whose window turned out closed."""
        by_member: dict[int, list[outbox.ClaimedMessage]] = defaultdict(list)
        for row in claimed:
            by_member[row.member_id].append(row)
        budgets: dict[int, budget.Budget] = {}
        if self._api is not None and by_member:
            budgets = await self._db.run(budget.budgets, member_ids=list(by_member))
        # Members in parallel; each member's rows in priority order, so they arrive in that order.
        results = await asyncio.gather(
            *(self._send_member(rows, budgets.get(member_id), now, leases)
              for member_id, rows in by_member.items()),
            return_exceptions=True)
        closed: list[int] = []
        for member_id, result in zip(by_member, results):
            if isinstance(result, BaseException):
                # The rows stay leased and are retried when the lease runs out.
                log.error("outbox: sending failed unexpectedly", exc_info=result)
            elif result:
                closed.append(member_id)
        return closed

    async def _keep(self, leases: _Leases) -> None:
        """Renew the pass's lease until it is over (the pass cancels this)."""
        while leases.held:
            await asyncio.sleep(self._renew_every.total_seconds())
            await self._renew(leases)

    async def _renew(self, leases: _Leases) -> None:
        """Extend the lease on the rows still held, or give up the ones another sender took."""
        now = self._clock.now()
        if not leases.held:
            return
        if now >= leases.until:
            # The lease ran out (renewals failed): another sender may have the rows by now,
            # so they are not sent from here, and the lease is not extended (see claim_due).
            log.warning("outbox: lease on %d row(s) ran out before it could be renewed; "
                        "leaving them to the next sender", len(leases.held))
            leases.lost |= leases.held
            leases.held.clear()
            return
        asking, fence, until = set(leases.held), leases.highest, now + self._lease
        leases.highest = max(leases.highest, until)  # rows may carry it as soon as we ask
        try:
            kept = set(await self._db.run(outbox.renew_leases, outbox_ids=sorted(asking),
                                          lease=fence, until=until))
        except Exception as exc:
            if not transient(exc):
                log.exception("outbox: renewing the lease failed")
            else:
                log.warning("outbox: could not renew the lease (%s); trying again shortly",
                            describe_error(exc))
            return
        gone = (asking - kept) & leases.held  # not finished by us meanwhile: taken over
        if gone:
            log.warning("outbox: %d row(s) were taken over by another sender", len(gone))
            leases.lost |= gone
            leases.held -= gone
        leases.until = until

    async def run(self, stop: asyncio.Event) -> None:
        """Send due rows until `stop` is set, polling and waking on `wake()`."""
        log.info("outbox sender started (%s)",
                 "WeChat API" if self._api else "log only, no API configured")
        while not stop.is_set():
            self._wake.clear()
            processed = 0
            try:
                processed = await self.send_due()
            except Exception as exc:  # a bug must not stop every later message
                if transient(exc):
                    log.error("outbox: database unavailable (%s); trying again shortly",
                              describe_error(exc))
                else:
                    log.exception("outbox: sending pass failed")
            if processed < self._batch_size:
                await self._idle(stop)

    async def _idle(self, stop: asyncio.Event) -> None:
        """Wait for the poll interval, a wake-up or the stop signal, whichever comes first."""
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=self._poll_interval,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _send_member(
        self, rows: list[outbox.ClaimedMessage], allowed: budget.Budget | None, now: datetime,
        leases: _Leases,
    ) -> bool:
        """Send one member's rows by priority within their budget; merge or hold what is over.

        True when rows were held because the member's window is closed (a notice may be due).
        """
        if self._api is None or allowed is None or rows[0].member_status == MemberStatus.DEACTIVATED:
            await self._send_each(rows, leases)
            return False
        # Template messages are not bound to the window or its budget.
        await self._send_each([r for r in rows if r.kind == outbox.KIND_TEMPLATE], leases)
        decoded: list[tuple[outbox.ClaimedMessage, _Message]] = []
        for row in rows:
            if row.kind == outbox.KIND_TEMPLATE:
                continue
            try:
                decoded.append((row, _decode(row)))
            except (ValueError, KeyError, TypeError):
                await self._finish(row, Outcome.FAILED, OutboxStatus.FAILED, leases,
                                   errmsg="unreadable payload")
        if not decoded:
            return False
        lang = allowed.lang or DEFAULT_LANG
        groups, over = self._plan(decoded, allowed.allowance(now), lang)
        closed_errcode: int | None = None
        held = [row.id for row, _ in over]
        for group in groups:
            # The same answer awaits the member's other customer-service messages, and asking
            # again only spends the API quota.
            if closed_errcode is not None:
                held += [row.id for row, _ in group]
                continue
            if len(group) == 1:
                hold_errcode = await self._send_decoded(*group[0], leases)
            else:
                hold_errcode = await self._send_merged(group, lang, leases)
            if hold_errcode is not None:
                closed_errcode = hold_errcode
        if held:
            log.info("outbox: %d message(s) for member %s held for the member's next message",
                     len(held), rows[0].member_id)
            await self._db.run(outbox.hold_unless_written, outbox_ids=held,
                               member_id=rows[0].member_id,
                               seen_message_at=allowed.last_message_at, errcode=closed_errcode,
                               lease=leases.highest)
            leases.done(held)
        window_closed = not allowed.window_open(now) or closed_errcode == budget.ERRCODE_WINDOW_CLOSED
        return bool(held) and window_closed

    def _plan(
        self, decoded: list[tuple[outbox.ClaimedMessage, _Message]], allowance: int, lang: str
    ) -> tuple[list[list[tuple[outbox.ClaimedMessage, _Message]]],
               list[tuple[outbox.ClaimedMessage, _Message]]]:
        """Which messages go (each a group sent as one message) and which are over budget.

        Within budget every row goes on its own. Over budget, the most important rows keep a
        message each and the rest are merged into the last one the budget allows (as many as
        fit under WeChat's text limit); whatever is left waits.
        """
        if len(decoded) <= allowance:
            return [[item] for item in decoded], []
        if allowance <= 0:
            return [], list(decoded)
        groups = [[item] for item in decoded[:allowance - 1]]
        rest = decoded[allowance - 1:]
        current: list[tuple[outbox.ClaimedMessage, _Message]] = []
        for item in rest:
            if isinstance(item[1], (_QRInvite, _Template)):
                groups.append([item])  # needs its own API calls: never merged
                continue
            trial = current + [item]
            if current and _size(merge_replies(
                    [(r.priority, m) for r, m in trial if isinstance(m, (TextReply, ChoicesReply))],
                    lang)) > MAX_MERGED_BYTES:
                groups.append(current)
                trial = [item]
            current = trial
        if current:
            groups.append(current)
        over = [item for group in groups[allowance:] for item in group]
        return groups[:allowance], over

    async def _send_merged(
        self, group: list[tuple[outbox.ClaimedMessage, _Message]], lang: str, leases: _Leases
    ) -> int | None:
        """Send several rows as one message; all are recorded together. Errcode when held."""
        assert self._api is not None
        carrier = group[0][0]
        if not all(leases.usable(row.id, self._clock.now()) for row, _ in group):
            log.info("outbox %s: lease lost before sending; left to the next sender", carrier.id)
            return None
        merged = merge_replies([(row.priority, message) for row, message in group
                                if isinstance(message, (TextReply, ChoicesReply))], lang)
        try:
            await self._api.send_reply(carrier.openid, merged)
        except PlatformAPIError as exc:
            hold_errcode = await self._failed(carrier, exc, leases)
            others = [row for row, _ in group[1:]]
            if hold_errcode is not None:
                await self._db.run(outbox.hold_claimed, outbox_ids=[r.id for r in others],
                                   errcode=hold_errcode, lease=leases.highest)
                leases.done(r.id for r in others)
            elif exc.kind in (ErrorKind.RETRY, ErrorKind.TOKEN):
                for row in others:
                    await self._retry_later(row, exc, leases)
            else:
                for row in others:
                    await self._failed(row, exc, leases)
            return hold_errcode
        log.info("outbox %s sent to member %s with %d merged into it",
                 carrier.id, carrier.member_id, len(group) - 1)
        await self._db.run(outbox.finish_merged, carrier_id=carrier.id,
                           merged_ids=[row.id for row, _ in group[1:]], now=self._clock.now(),
                           lease=leases.highest)
        leases.done(row.id for row, _ in group)
        return None

    async def _send_each(self, rows: list[outbox.ClaimedMessage], leases: _Leases) -> None:
        """Send rows one by one; once the member's window is known closed, hold the rest."""
        closed_errcode: int | None = None
        held: list[int] = []
        for row in rows:
            # The same answer awaits the member's other customer-service messages, and asking
            # again only spends the API quota; template messages do not depend on the window.
            if closed_errcode is not None and row.kind != outbox.KIND_TEMPLATE:
                held.append(row.id)
                continue
            hold_errcode = await self._send_row(row, leases)
            if hold_errcode is not None:
                closed_errcode = hold_errcode
        if held:
            await self._db.run(outbox.hold_claimed, outbox_ids=held, errcode=closed_errcode,
                               lease=leases.highest)
            leases.done(held)

    async def _queue_notices(self, now: datetime, closed: list[int]) -> None:
        """Queue today's template notice for members outside their window with held messages.

        Checked for the members just held, and for everyone every few minutes (windows close
        while rows wait).
        """
        if not self._notice_template_id or self._api is None:
            return
        member_ids: list[int] | None = closed
        if self._next_notice_check is None or now >= self._next_notice_check:
            member_ids = None
            self._next_notice_check = now + NOTICE_CHECK_INTERVAL
        elif not closed:
            return
        queued = await self._db.run(self._notices_in_transaction, now=now, member_ids=member_ids)
        if queued:
            log.info("outbox: queued %d template notice(s) for members outside their window", queued)
            self.wake()

    def _notices_in_transaction(
        self, session: Session, *, now: datetime, member_ids: list[int] | None
    ) -> int:
        queued = 0
        for due in budget.notices_due(session, now=now, member_ids=member_ids,
                                      exclude_platforms=(TERMINAL_PLATFORM,)):
            summary = notice_text(due.lang or DEFAULT_LANG, dict(due.held_by_priority))
            if outbox.enqueue_notice(session, member_id=due.member_id,
                                     template_id=self._notice_template_id,
                                     data={"thing1": {"value": summary}}, now=now):
                queued += 1
        return queued

    async def _send_row(self, row: outbox.ClaimedMessage, leases: _Leases) -> int | None:
        """Try one row and record the attempt; the errcode when the row was held, else None."""
        if row.member_status == MemberStatus.DEACTIVATED:
            # An unsubscribed member receives nothing, at once (PRODUCT.md).
            await self._finish(row, Outcome.UNDELIVERABLE, OutboxStatus.UNDELIVERABLE, leases,
                               errmsg="member deactivated")
            return None
        try:
            message = _decode(row)
        except (ValueError, KeyError, TypeError):
            await self._finish(row, Outcome.FAILED, OutboxStatus.FAILED, leases,
                               errmsg="unreadable payload")
            return None
        return await self._send_decoded(row, message, leases)

    async def _send_decoded(
        self, row: outbox.ClaimedMessage, message: _Message, leases: _Leases
    ) -> int | None:
        """Send one decoded row and record the attempt; the errcode when held, else None."""
        if not leases.usable(row.id, self._clock.now()):
            # Its lease ran out or another sender took it: sending now could send it twice.
            log.info("outbox %s: lease lost before sending; left to the next sender", row.id)
            return None
        if self._api is None:
            log.info("outbox %s for member %s: no WeChat API configured, logged instead of sent",
                     row.id, row.member_id)
            # Member text is private: only at DEBUG.
            log.debug("outbox %s text: %s", row.id, _describe(message))
            await self._finish(row, Outcome.LOGGED, OutboxStatus.SENT, leases)
            return None
        try:
            await self._deliver(self._api, row, message)
        except PlatformAPIError as exc:
            return await self._failed(row, exc, leases)
        log.info("outbox %s sent to member %s", row.id, row.member_id)
        await self._finish(row, Outcome.SENT, OutboxStatus.SENT, leases, errcode=0)
        return None

    async def _deliver(self, api: WeChatAPI, row: outbox.ClaimedMessage, message: _Message) -> None:
        """The API calls for one message."""
        if isinstance(message, _Template):
            # The row id as client_msg_id: if we die after sending but before recording it,
            # WeChat drops the repeat (within its 10-minute idempotency window).
            await api.send_template(row.openid, template_id=message.template_id, data=message.data,
                                    url=message.url,
                                    client_msg_id=message.client_msg_id or f"yinjian-outbox-{row.id}")
        elif isinstance(message, _QRInvite):
            qr = await api.create_qrcode(
                message.scene, expire_seconds=min(message.expire_seconds, QR_MAX_EXPIRE_SECONDS)
            )
            await api.send_text(row.openid, _with_link(message.text, qr.image_url))
        else:
            await api.send_reply(row.openid, message)

    async def _failed(
        self, row: outbox.ClaimedMessage, exc: PlatformAPIError, leases: _Leases
    ) -> int | None:
        """Record a failed attempt and decide what becomes of the row."""
        kind = exc.kind
        log.warning("outbox %s to member %s: %s (%s)", row.id, row.member_id, exc, kind.value)
        if kind in (ErrorKind.RETRY, ErrorKind.TOKEN):
            # TOKEN here means a refused token even after the client's one refresh and retry:
            # not the member's fault, so the message waits like any transient failure.
            await self._retry_later(row, exc, leases)
            return None
        outcome, status = {
            ErrorKind.HOLD: (Outcome.HELD, OutboxStatus.HELD),
            ErrorKind.UNDELIVERABLE: (Outcome.UNDELIVERABLE, OutboxStatus.UNDELIVERABLE),
        }.get(kind, (Outcome.FAILED, OutboxStatus.FAILED))
        await self._finish(row, outcome, status, leases, errcode=exc.errcode, errmsg=exc.errmsg)
        return exc.errcode if kind is ErrorKind.HOLD else None

    async def _retry_later(
        self, row: outbox.ClaimedMessage, exc: PlatformAPIError, leases: _Leases
    ) -> None:
        """Back off, or give up once the row has failed transiently max_attempts times."""
        await self._db.run(self._record_retry, row=row, exc=exc, now=self._clock.now(),
                           lease=leases.highest)
        leases.done([row.id])

    def _record_retry(
        self, session: Session, *, row: outbox.ClaimedMessage, exc: PlatformAPIError, now: datetime,
        lease: datetime,
    ) -> None:
        """Count the earlier transient failures and record this one, in one transaction."""
        failures = 1 + outbox.count_attempts(session, outbox_id=row.id, outcome=Outcome.RETRY)
        if failures >= self._max_attempts:
            log.error("outbox %s to member %s: giving up after %s attempts",
                      row.id, row.member_id, failures)
            outcome, status, due = Outcome.FAILED, OutboxStatus.FAILED, None
        else:
            outcome, status, due = Outcome.RETRY, OutboxStatus.PENDING, now + self.backoff(failures)
        outbox.finish_attempt(session, outbox_id=row.id, now=now, outcome=outcome, status=status,
                              errcode=exc.errcode, errmsg=exc.errmsg, next_attempt_at=due,
                              lease=lease)

    async def _finish(
        self, row: outbox.ClaimedMessage, outcome: str, status: str, leases: _Leases, *,
        errcode: int | None = None, errmsg: str = "",
    ) -> None:
        """Record the attempt and the row's new status in one transaction."""
        await self._db.run(outbox.finish_attempt, outbox_id=row.id, now=self._clock.now(),
                           outcome=outcome, status=status, errcode=errcode, errmsg=errmsg,
                           lease=leases.highest)
        leases.done([row.id])
