"""The outbox sender: the only way a proactive message leaves, at most once after it is sent.

Rows are leased in one short transaction, sent with no transaction open, and finished in
another; a sender that dies mid-send only delays its rows until their lease runs out. Every
transaction runs on the database's own threads (`Database.run`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bot.clock import Clock, SystemClock
from bot.wechat_api import QR_MAX_EXPIRE_SECONDS, ErrorKind, WeChatAPI, WeChatAPIError
from handlers.replies import Reply, as_plain_text, reply_from_json
from storage import outbox
from storage.db import Database
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


@dataclass(frozen=True)
class _Template:
    template_id: str
    data: dict[str, Any]
    url: str | None


@dataclass(frozen=True)
class _QRInvite:
    scene: str
    expire_seconds: int
    text: str


_Message = Reply | _Template | _QRInvite


def _decode(row: outbox.ClaimedMessage) -> _Message:
    """The message a row carries; ValueError/KeyError/TypeError when the payload is unreadable."""
    if row.kind == outbox.KIND_TEMPLATE:
        data = json.loads(row.payload)
        return _Template(template_id=data["template_id"], data=dict(data["data"]), url=data.get("url"))
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


class OutboxSender:
    """Sends due outbox rows through the WeChat API (or, without one, to the log)."""

    def __init__(
        self,
        *,
        db: Database,
        api: WeChatAPI | None,
        clock: Clock | None = None,
        batch_size: int = 20,
        lease: timedelta = timedelta(minutes=5),
        max_attempts: int = 8,
        backoff_base: timedelta = timedelta(seconds=30),
        backoff_cap: timedelta = timedelta(hours=1),
        poll_interval: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self._db = db
        self._api = api
        self._clock: Clock = clock or SystemClock()
        self._batch_size = batch_size
        self._lease = lease
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._poll_interval = poll_interval
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look for due rows now rather than at the next poll (a message was just queued)."""
        self._wake.set()

    def backoff(self, transient_failures: int) -> timedelta:
        """How long to wait after the n-th transient failure: exponential, capped, with jitter."""
        ceiling = min(self._backoff_base * (1 << (transient_failures - 1)), self._backoff_cap)
        # Jitter spreads the retries of many rows that failed together (e.g. on 45009).
        return ceiling * self._rng.uniform(0.5, 1.0)

    async def send_due(self) -> int:
        """One pass: claim due rows and send them; the number of rows processed."""
        now = self._clock.now()
        claimed = await self._db.run(
            outbox.claim_due, now=now, lease_until=now + self._lease, limit=self._batch_size,
            exclude_platforms=(TERMINAL_PLATFORM,),
        )
        by_member: dict[int, list[outbox.ClaimedMessage]] = defaultdict(list)
        for row in claimed:
            by_member[row.member_id].append(row)
        # Members in parallel; each member's rows in priority order, so they arrive in that order.
        results = await asyncio.gather(*(self._send_member(rows) for rows in by_member.values()),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                # The rows stay leased and are retried when the lease runs out.
                log.error("outbox: sending failed unexpectedly", exc_info=result)
        return len(claimed)

    async def run(self, stop: asyncio.Event) -> None:
        """Send due rows until `stop` is set, polling and waking on `wake()`."""
        log.info("outbox sender started (%s)",
                 "WeChat API" if self._api else "log only, no API configured")
        while not stop.is_set():
            self._wake.clear()
            processed = 0
            try:
                processed = await self.send_due()
            except SQLAlchemyError as exc:
                log.error("outbox: database unavailable (%s); trying again shortly", type(exc).__name__)
            except Exception:  # a bug must not stop every later message; the traceback is logged
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

    async def _send_member(self, rows: list[outbox.ClaimedMessage]) -> None:
        """Send one member's rows in order; once their window is known closed, hold the rest."""
        closed_errcode: int | None = None
        held: list[int] = []
        for row in rows:
            # The same answer awaits the member's other customer-service messages, and asking
            # again only spends the API quota; template messages do not depend on the window.
            if closed_errcode is not None and row.kind != outbox.KIND_TEMPLATE:
                held.append(row.id)
                continue
            hold_errcode = await self._send_row(row)
            if hold_errcode is not None:
                closed_errcode = hold_errcode
        if held:
            await self._db.run(outbox.hold_claimed, outbox_ids=held, errcode=closed_errcode)

    async def _send_row(self, row: outbox.ClaimedMessage) -> int | None:
        """Try one row and record the attempt; the errcode when the row was held, else None."""
        if row.member_status == MemberStatus.DEACTIVATED:
            # An unsubscribed member receives nothing, at once (PRODUCT.md).
            await self._finish(row, Outcome.UNDELIVERABLE, OutboxStatus.UNDELIVERABLE,
                               errmsg="member deactivated")
            return None
        try:
            message = _decode(row)
        except (ValueError, KeyError, TypeError):
            await self._finish(row, Outcome.FAILED, OutboxStatus.FAILED, errmsg="unreadable payload")
            return None
        if self._api is None:
            log.info("outbox %s for member %s: no WeChat API configured, logged instead of sent",
                     row.id, row.member_id)
            # Member text is private: only at DEBUG.
            log.debug("outbox %s text: %s", row.id, _describe(message))
            await self._finish(row, Outcome.LOGGED, OutboxStatus.SENT)
            return None
        try:
            await self._deliver(self._api, row, message)
        except WeChatAPIError as exc:
            return await self._failed(row, exc)
        log.info("outbox %s sent to member %s", row.id, row.member_id)
        await self._finish(row, Outcome.SENT, OutboxStatus.SENT, errcode=0)
        return None

    async def _deliver(self, api: WeChatAPI, row: outbox.ClaimedMessage, message: _Message) -> None:
        """The API calls for one message."""
        if isinstance(message, _Template):
            # The row id as client_msg_id: if we die after sending but before recording it,
            # WeChat drops the repeat (within its 10-minute idempotency window).
            await api.send_template(row.openid, template_id=message.template_id, data=message.data,
                                    url=message.url, client_msg_id=f"yinjian-outbox-{row.id}")
        elif isinstance(message, _QRInvite):
            qr = await api.create_qrcode(
                message.scene, expire_seconds=min(message.expire_seconds, QR_MAX_EXPIRE_SECONDS)
            )
            await api.send_text(row.openid, _with_link(message.text, qr.image_url))
        else:
            await api.send_reply(row.openid, message)

    async def _failed(self, row: outbox.ClaimedMessage, exc: WeChatAPIError) -> int | None:
        """Record a failed attempt and decide what becomes of the row."""
        kind = exc.kind
        log.warning("outbox %s to member %s: %s (%s)", row.id, row.member_id, exc, kind.value)
        if kind in (ErrorKind.RETRY, ErrorKind.TOKEN):
            # TOKEN here means a refused token even after the client's one refresh and retry:
            # not the member's fault, so the message waits like any transient failure.
            await self._retry_later(row, exc)
            return None
        outcome, status = {
            ErrorKind.HOLD: (Outcome.HELD, OutboxStatus.HELD),
            ErrorKind.UNDELIVERABLE: (Outcome.UNDELIVERABLE, OutboxStatus.UNDELIVERABLE),
        }.get(kind, (Outcome.FAILED, OutboxStatus.FAILED))
        await self._finish(row, outcome, status, errcode=exc.errcode, errmsg=exc.errmsg)
        return exc.errcode if kind is ErrorKind.HOLD else None

    async def _retry_later(self, row: outbox.ClaimedMessage, exc: WeChatAPIError) -> None:
        """Back off, or give up once the row has failed transiently max_attempts times."""
        await self._db.run(self._record_retry, row=row, exc=exc, now=self._clock.now())

    def _record_retry(
        self, session: Session, *, row: outbox.ClaimedMessage, exc: WeChatAPIError, now: datetime
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
                              errcode=exc.errcode, errmsg=exc.errmsg, next_attempt_at=due)

    async def _finish(
        self, row: outbox.ClaimedMessage, outcome: str, status: str, *,
        errcode: int | None = None, errmsg: str = "",
    ) -> None:
        """Record the attempt and the row's new status in one transaction."""
        await self._db.run(outbox.finish_attempt, outbox_id=row.id, now=self._clock.now(),
                           outcome=outcome, status=status, errcode=errcode, errmsg=errmsg)
