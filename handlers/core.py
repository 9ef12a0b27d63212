"""Turns one inbound event into one reply: routing, language rules and lifecycle events."""

from __future__ import annotations

import functools

from handlers import basics
from handlers.context import Context
from handlers.events import EventKind
from handlers.replies import NoReply, Reply, TextReply
from handlers.router import Router
from storage import members


@functools.cache
def root_router() -> Router:
    """The router tree of every feature; first match wins."""
    root = Router(name="root")
    root.include(basics.router)
    return root


async def handle(ctx: Context) -> Reply:
    """Answer one event. Runs inside the dispatcher's transaction."""
    event = ctx.event
    if event.kind is EventKind.SUBSCRIBE:
        returning = await members.reactivate(ctx.session, member=ctx.member, now=ctx.now)
        return await basics.welcome(ctx, returning=returning)
    if event.kind is EventKind.UNSUBSCRIBE:
        await members.deactivate(ctx.session, member=ctx.member, now=ctx.now)
        return NoReply()  # WeChat delivers nothing to someone who just left
    if event.kind is EventKind.SCAN:
        return await basics.welcome(ctx, returning=False)
    if event.kind is EventKind.CLICK:
        return await route_text(ctx, event.key)
    if event.kind is EventKind.TEXT:
        return await route_text(ctx, event.text)
    return TextReply(ctx.t("not_text"))


async def route_text(ctx: Context, text: str) -> Reply:
    """Route a typed or tapped text to its command, applying the first-command language rule."""
    match = root_router().match(text)
    if match is None:
        return await basics.unknown(ctx)
    if ctx.member.lang is None:
        # The member's first command decides their language until they say `lang`.
        await members.set_lang(ctx.session, member=ctx.member, lang=match.lang, explicit=False)
    return await match.command.handler(ctx, match.args)
