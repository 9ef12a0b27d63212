"""Turns one inbound event into one reply: dialogs, routing, language rules and lifecycle events."""

from __future__ import annotations

import functools

from handlers import asks, basics, cards, connections, digests, intros, privacy, rights, search
from handlers import linking as link_commands
from handlers.context import Context
from handlers.events import EventKind
from handlers.replies import ChoicesReply, NoReply, Reply, TextReply
from handlers.router import Router
from storage import dialogs, linking, members

DIALOGS = {**cards.DIALOGS}


@functools.cache
def root_router() -> Router:
    """The router tree of every feature; the longest matching alias wins."""
    root = Router(name="root")
    for feature in (basics, cards, connections, privacy, rights, search, intros, asks, digests, link_commands):
        root.include(feature.router)
    return root


def handle(ctx: Context) -> Reply:
    """Answer one event. Runs inside the dispatcher's transaction."""
    event = ctx.event
    if event.kind is EventKind.SUBSCRIBE:
        returning = members.reactivate(ctx.session, member=ctx.identity, now=ctx.now)
        welcome = basics.welcome(ctx, returning=returning)
        if event.scene:
            # Followed by scanning someone's invite QR code: welcome, then connect.
            return _prepend(ctx.t("welcome_short") if not returning else ctx.t("welcome_back"),
                            connections.join_with_code(ctx, event.scene, source="qr"))
        return welcome
    if event.kind is EventKind.UNSUBSCRIBE:
        # Leaving one platform: that identity stops. A member who lives on it but is still
        # linked on another platform moves there first; otherwise the member leaves.
        if ctx.writer is None:
            linking.rehome(ctx.session, member=ctx.member, now=ctx.now)
        members.deactivate(ctx.session, member=ctx.identity, now=ctx.now)
        return NoReply()  # WeChat delivers nothing to someone who just left
    if event.kind is EventKind.SCAN:
        if event.scene:
            return connections.join_with_code(ctx, event.scene, source="qr")
        return basics.welcome(ctx, returning=False)
    if event.kind is EventKind.CLICK:
        return route_text(ctx, event.key)
    if event.kind is EventKind.TEXT:
        return route_text(ctx, event.text)
    return TextReply(ctx.t("not_text"))


def route_text(ctx: Context, text: str) -> Reply:
    """An open dialog takes the text first; otherwise route it to its command."""
    state = dialogs.get(ctx.session, member_id=ctx.member.id or 0)
    notice = ""
    if state is not None:
        if ctx.now - state.updated_at <= cards.DIALOG_TIMEOUT and state.name in DIALOGS:
            return DIALOGS[state.name](ctx, state, text)
        dialogs.clear(ctx.session, member_id=ctx.member.id or 0)
        notice = ctx.t("dialog_expired")
    match = root_router().match(text)
    if match is None:
        reply = basics.unknown(ctx)
    else:
        if ctx.member.lang is None and match.command.sets_language:
            # The member's first command decides their language until they say `lang`.
            members.set_lang(ctx.session, member=ctx.member, lang=match.lang, explicit=False)
        reply = match.command.handler(ctx, match.args)
    return _prepend(notice, reply) if notice else reply


def _prepend(lead: str, reply: Reply) -> Reply:
    if isinstance(reply, TextReply):
        return TextReply(f"{lead}\n\n{reply.text}")
    if isinstance(reply, ChoicesReply):
        return ChoicesReply(text=f"{lead}\n\n{reply.text}", choices=reply.choices, footer=reply.footer)
    return TextReply(lead)
