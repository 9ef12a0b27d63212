"""The aiohttp application factory: webhook, health check, outbox sender and scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Optional

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.orm import Session

from scheduler.clock import Clock, SystemClock
from bot.config import Config
from bot.dispatcher import ANSWER_DEADLINE, PASSIVE_CUTOFF, Dispatcher, PushNotStored
from bot.outbox import OutboxSender
from bot.platforms.official_account.api import WeChatAPI
from bot.platforms.inbound import PushRejected
from bot.platforms.official_account.webhook import OfficialAccountPushes, VerifiedPush
from handlers import core, rights
from handlers.context import Context, Settings
from handlers.replies import Reply
from scheduler.jobs import JobDeps
from scheduler.runner import JobScheduler
from storage import exports, push_nonces, pushes
from storage.db import Database, describe_error

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # WeChat pushes are a few KiB; anything larger is refused with 413
# How long plain-mode nonces are remembered when wechat.max_clock_skew_seconds is 0 (off).
NONCE_WINDOW_UNCHECKED = timedelta(minutes=5)
NONCE_PRUNE_EVERY = timedelta(minutes=1)  # between opportunistic prunes of old nonces, per process
# How often `serve` nulls stored replies older than pushes.REPLY_TTL: none outlives ~75 s.
REPLY_SWEEP_EVERY = 15.0
# A push body is a few KiB: one still arriving after this is a slow or stalled client (408).
READ_TIMEOUT = 10.0
# /healthz answers within this even when the database hangs (a load balancer's probe is short).
HEALTH_TIMEOUT = 2.0


@dataclass
class Services:
    """Everything one running Yinjian process shares."""

    config: Config
    clock: Clock
    db: Database
    dispatcher: Dispatcher
    pushes: OfficialAccountPushes
    api: Optional[WeChatAPI]
    sender: OutboxSender
    scheduler: JobScheduler
    background: list["asyncio.Task[None]"] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    next_nonce_prune: datetime | None = None  # when to forget old push nonces next


SERVICES = web.AppKey("services", Services)
READ_TIMEOUT_KEY = web.AppKey("read_timeout", float)


def build_services(
    config: Config,
    *,
    clock: Optional[Clock] = None,
    handler: Optional[Callable[[Context], Reply]] = None,
    answer_deadline: float = ANSWER_DEADLINE,
) -> Services:
    """Wire the parts together without starting anything."""
    clock = clock or SystemClock()
    db = Database(config.storage.url)
    api = WeChatAPI.from_config(config.wechat, db=db, clock=clock) if config.wechat.api_configured else None
    sender = OutboxSender(db=db, api=api, clock=clock,
                          notice_template_id=config.wechat_templates.notice)
    dispatcher = Dispatcher(db=db, clock=clock, on_outbox=sender.wake, handler=handler or core.handle,
                            settings=handler_settings(config),
                            answer_deadline=answer_deadline,
                            passive_cutoff=answer_deadline * PASSIVE_CUTOFF / ANSWER_DEADLINE)
    scheduler = JobScheduler(deps=JobDeps(db=db, settings=handler_settings(config)), clock=clock)
    return Services(config=config, clock=clock, db=db, dispatcher=dispatcher,
                    pushes=OfficialAccountPushes(config.wechat), api=api, sender=sender,
                    scheduler=scheduler)


def handler_settings(config: Config) -> Settings:
    """What the handlers need to know of the configuration."""
    return Settings(
        invite_ttl=timedelta(days=config.invites.ttl_days),
        invite_max_uses=config.invites.max_uses,
        public_url=config.server.base_url,
        qr_invites=config.wechat.api_configured,
        deletion_grace=timedelta(days=config.privacy.deletion_grace_days),
        default_timezone=config.scheduler.timezone,
        linking=config.wecom.enabled,
    )


def create_app(
    config: Config,
    *,
    clock: Optional[Clock] = None,
    run_sender: bool = True,
    run_scheduler: Optional[bool] = None,
    handler: Optional[Callable[[Context], Reply]] = None,
    answer_deadline: float = ANSWER_DEADLINE,
    reply_sweep_every: float = REPLY_SWEEP_EVERY,
    read_timeout: float = READ_TIMEOUT,
) -> web.Application:
    """The webhook application; starting it migrates the database and starts background work.

    `handler`, `answer_deadline`, `reply_sweep_every` and `read_timeout` exist for tests and
    benchmarks; `serve` uses the defaults.
    """
    services = build_services(config, clock=clock, handler=handler, answer_deadline=answer_deadline)
    app = web.Application(client_max_size=MAX_BODY)
    app[SERVICES] = services
    app[READ_TIMEOUT_KEY] = read_timeout
    app.router.add_get(config.wechat.path, _verify_url)
    app.router.add_post(config.wechat.path, _receive_push)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/export/{token}", _export)
    scheduler_on = config.scheduler.enabled if run_scheduler is None else run_scheduler

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await services.db.upgrade()
        if run_sender:
            services.background.append(asyncio.create_task(services.sender.run(services.stopping)))
        services.background.append(asyncio.create_task(
            sweep_replies(services.db, services.clock, every=reply_sweep_every, stopping=services.stopping)))
        if scheduler_on:
            services.scheduler.start()
        yield
        services.stopping.set()
        if scheduler_on:
            services.scheduler.shutdown()
        await services.dispatcher.drain()
        for task in services.background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if services.api is not None:
            await services.api.close()
        await services.db.dispose()

    app.cleanup_ctx.append(lifecycle)
    return app


async def sweep_replies(db: Database, clock: Clock, *, every: float, stopping: asyncio.Event) -> None:
    """Null stored replies once WeChat can no longer retry their push, until `stopping` is set."""
    swept_to: datetime | None = None
    while not stopping.is_set():
        cutoff = clock.now() - pushes.REPLY_TTL
        # After the first sweep only the newest rows can hold a reply: scan those, with margin.
        since = swept_to - pushes.REPLY_TTL if swept_to is not None else None
        try:
            await db.run(pushes.forget_replies, older_than=cutoff, newer_than=since)
            swept_to = cutoff
        except Exception as exc:  # noqa: BLE001 - a failed sweep is retried at the next one
            log.warning("could not forget old stored replies: %s", type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), every)


def _remote(request: web.Request) -> str:
    return request.remote or "?"


async def _verify_url(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    try:
        echostr = services.pushes.verify_url(request.query, now=services.clock.now().timestamp())
    except PushRejected as exc:
        log.warning("refused URL verification from %s: %s", _remote(request), exc.reason)
        return web.Response(status=exc.status, text=exc.reason)
    return web.Response(text=echostr)


async def _receive_push(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    if request.content_length is not None and request.content_length > MAX_BODY:
        log.warning("refused push from %s: body of %d bytes", _remote(request), request.content_length)
        return web.Response(status=413, text="body too large")
    read_timeout = request.app[READ_TIMEOUT_KEY]
    try:
        # aiohttp would wait for a stalled body as long as the client keeps the socket open.
        body = await asyncio.wait_for(request.read(), read_timeout)
    except web.HTTPRequestEntityTooLarge:
        log.warning("refused push from %s: body over %d bytes", _remote(request), MAX_BODY)
        return web.Response(status=413, text="body too large")
    except TimeoutError:
        log.warning("refused push from %s: body not received within %g s", _remote(request), read_timeout)
        slow = web.Response(status=408, text="request body too slow")
        slow.force_close()
        return slow
    try:
        push = services.pushes.read(request.query, body, now=services.clock.now().timestamp())
    except PushRejected as exc:
        log.warning("refused push from %s: %s", _remote(request), exc.reason)
        return web.Response(status=exc.status, text=exc.reason)
    if not push.encrypted and not await _nonce_fits(services, push, body):
        log.warning("refused push from %s: its timestamp and nonce came before with another body "
                    "(a replayed signature)", _remote(request))
        return web.Response(status=403, text="signature already used")
    try:
        reply = await services.dispatcher.answer(push.event)
    except PushNotStored:
        # Nothing of the push is stored, so it must not be answered `success`, which tells
        # WeChat it was handled and is never retried. A non-200 answer is a failed delivery:
        # WeCom retries it (WECHAT.md §8.1) and the Official Account retries what it could not
        # deliver (§2). We answer at once rather than hang to WeChat's 5 s timeout, so that a
        # worker without its database does not hold connections; our deduplication has no
        # claim for the push, so the retry, here or at another worker, is handled as new.
        return web.Response(status=503, text="database unavailable, retry later",
                            headers={"Retry-After": "5"})
    answer = services.pushes.render(push, reply)
    return web.Response(text=answer, content_type="text/plain" if answer == "success" else "application/xml")


async def _nonce_fits(services: Services, push: VerifiedPush, body: bytes) -> bool:
    """A plain push's signature does not cover its body: one (timestamp, nonce), one body."""
    now = services.clock.now()
    skew = services.config.wechat.max_clock_skew_seconds
    window = timedelta(seconds=skew) if skew else NONCE_WINDOW_UNCHECKED
    prune_before = None
    if services.next_nonce_prune is None or now >= services.next_nonce_prune:
        services.next_nonce_prune = now + NONCE_PRUNE_EVERY
        # A timestamp up to one window ahead is fresh until one window after it: keep two.
        prune_before = now - 2 * window
    return await services.db.run(push_nonces.remember, timestamp=push.timestamp, nonce=push.nonce,
                                 body=body, now=now, prune_before=prune_before)


async def _export(request: web.Request) -> web.Response:
    """A member's one-time data export link; used, expired or unknown links are 404."""
    services = request.app[SERVICES]
    token = request.match_info["token"]
    if not exports.is_token(token):  # NUL bytes, path tricks, megabytes: never a database error
        raise web.HTTPNotFound(text="not found")
    data = await services.db.run(rights.export_for_link, token=token, now=services.clock.now())
    if not data:
        raise web.HTTPNotFound(text="not found")
    log.info("served a one-time data export")
    return web.Response(
        text=json.dumps(data, ensure_ascii=False, indent=2), content_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="yinjian-export.json"',
                 "Cache-Control": "no-store"},
    )


def _ping(session: Session, *, give_up_at: float) -> None:
    """SELECT 1, unless the check that asked for it has already answered (it waited in line)."""
    if time.monotonic() < give_up_at:
        session.execute(sa.text("SELECT 1"))


async def _healthz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            await services.db.run_interactive(_ping, give_up_at=time.monotonic() + HEALTH_TIMEOUT)
    except TimeoutError:
        log.warning("health check failed: no answer from the database within %.1f s", HEALTH_TIMEOUT)
        return web.json_response({"status": "unavailable", "database": "down"}, status=503)
    except Exception as exc:  # noqa: BLE001 - any database failure means "not healthy"
        log.warning("health check failed: %s", describe_error(exc))
        return web.json_response({"status": "unavailable", "database": "down"}, status=503)
    return web.json_response({"status": "ok", "database": "up"})
