"""A tiny aiohttp app around the WeCom callback adapter, for tests: verify, read, echo, render.

The lead wires the adapter into bot/app.py; until then this app mounts it the way a webhook
would (body size bound, 200 with an empty body for no reply), around a trivial echo handler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from bot.platforms.wecom.webhook import MAX_BODY, VerifiedCallback, WeComCallbacks
from bot.platforms.inbound import PushRejected
from handlers.events import EventKind
from handlers.replies import NoReply, Reply, TextReply

PATH = "/wecom"
REPLACE_NAME = "已选择"


def echo(callback: VerifiedCallback) -> Reply:
    """Texts come back prefixed; clicks name their command; other events get no reply."""
    event = callback.event
    if event.kind is EventKind.TEXT:
        return TextReply(f"echo: {event.text}")
    if event.kind is EventKind.CLICK:
        return TextReply(f"command: {event.key}")
    return NoReply()


@dataclass
class WeComTestApp:
    """The running app: its callback URL and every callback it accepted."""

    url: str
    accepted: list[VerifiedCallback] = field(default_factory=list)
    refused: list[PushRejected] = field(default_factory=list)


@asynccontextmanager
async def running_wecom_app(
    callbacks: WeComCallbacks, *, now: Callable[[], float],
    answer: Callable[[VerifiedCallback], Reply] = echo,
) -> AsyncIterator[WeComTestApp]:
    """Serve the adapter on 127.0.0.1; card clicks are answered with an update_button reply."""
    app = web.Application(client_max_size=MAX_BODY)
    state = WeComTestApp(url="")

    async def verify(request: web.Request) -> web.Response:
        try:
            plain = callbacks.verify_url(request.query, now=now())
        except PushRejected as exc:
            state.refused.append(exc)
            return web.Response(status=exc.status, text=exc.reason)
        return web.Response(text=plain)

    async def receive(request: web.Request) -> web.Response:
        try:
            body = await request.read()
            callback = callbacks.read(request.query, body, now=now())
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text="body too large")
        except PushRejected as exc:
            state.refused.append(exc)
            return web.Response(status=exc.status, text=exc.reason)
        state.accepted.append(callback)
        if callback.card is not None:
            text = callbacks.render_update_button(callback, REPLACE_NAME, now=now())
        else:
            text = callbacks.render(callback, answer(callback), now=now())
        return web.Response(text=text, content_type="application/xml" if text else "text/plain")

    app.router.add_get(PATH, verify)
    app.router.add_post(PATH, receive)
    runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.url = f"http://{host}:{port}{PATH}"
    try:
        yield state
    finally:
        await runner.cleanup()
