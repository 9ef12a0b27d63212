"""The aiohttp application factory: webhook, health check, outbox sender and scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Optional

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.orm import Session

from bot.clock import Clock, SystemClock
from bot.config import Config
from bot.dispatcher import ANSWER_DEADLINE, PASSIVE_CUTOFF, Dispatcher, PushNotStored
from bot.outbox import OutboxSender
from bot.wechat_api import WeChatAPI
from bot.wechat_push import OfficialAccountPushes, PushRejected
from handlers import core
from handlers.context import Context, Settings
from handlers.replies import Reply
from scheduler.runner import JobScheduler
from storage import exports
from storage.db import Database, describe_error

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # WeChat pushes are a few KiB; anything larger is refused with 413
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


SERVICES = web.AppKey("services", Services)


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
    scheduler = JobScheduler(db=db, clock=clock, config=config)
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
    )


def create_app(
    config: Config,
    *,
    clock: Optional[Clock] = None,
    run_sender: bool = True,
    run_scheduler: Optional[bool] = None,
    handler: Optional[Callable[[Context], Reply]] = None,
    answer_deadline: float = ANSWER_DEADLINE,
) -> web.Application:
    """The webhook application; starting it migrates the database and starts background work.

    `handler` and `answer_deadline` exist for tests and benchmarks; `serve` uses the defaults.
    """
    services = build_services(config, clock=clock, handler=handler, answer_deadline=answer_deadline)
    app = web.Application(client_max_size=MAX_BODY)
    app[SERVICES] = services
    app.router.add_get(config.wechat.path, _verify_url)
    app.router.add_post(config.wechat.path, _receive_push)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/export/{token}", _export)
    scheduler_on = config.scheduler.enabled if run_scheduler is None else run_scheduler

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await services.db.upgrade()
        if run_sender:
            services.background.append(asyncio.create_task(services.sender.run(services.stopping)))
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
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        log.warning("refused push from %s: body over %d bytes", _remote(request), MAX_BODY)
        return web.Response(status=413, text="body too large")
    try:
        push = services.pushes.read(request.query, body, now=services.clock.now().timestamp())
    except PushRejected as exc:
        log.warning("refused push from %s: %s", _remote(request), exc.reason)
        return web.Response(status=exc.status, text=exc.reason)
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


async def _export(request: web.Request) -> web.Response:
    """A member's one-time data export link; used, expired or unknown links are 404."""
    services = request.app[SERVICES]
    token = request.match_info["token"]
    if not 16 <= len(token) <= 64:
        raise web.HTTPNotFound(text="not found")
    data = await services.db.run(exports.use_link, token=token, now=services.clock.now())
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
