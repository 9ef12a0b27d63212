"""`yinjian chat --user NAME`: the same database and handlers as `serve`, in a terminal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import uuid
from dataclasses import replace
from typing import Optional, TextIO

from scheduler.clock import SystemClock
from bot.config import Config
from bot.dispatcher import Dispatcher
from handlers.events import EventKind, InboundEvent
from handlers.replies import as_plain_text, reply_from_json
from handlers.texts import DEFAULT_LANG, text
from storage import members, outbox_terminal
from storage.db import Database

PLATFORM = "chat"
QUIT = {":q", ":quit", ":exit"}
# How often an idle terminal looks for messages sent to its member (by other members' actions).
POLL_EVERY = 1.0

log = logging.getLogger(__name__)


async def run_chat(config: Config, *, user: str, stdin: Optional[TextIO] = None,
                   stdout: Optional[TextIO] = None, poll_every: float = POLL_EVERY) -> int:
    """Read lines as the member's messages; print the answers, and messages as they arrive."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    user = user.strip()
    if not user:
        print("yinjian: --user must not be empty", file=sys.stderr)
        return 2
    clock = SystemClock()
    db = Database(config.storage.url)
    await db.upgrade()
    from bot.app import REPLY_SWEEP_EVERY, handler_settings, sweep_replies

    # A terminal cannot show a QR code image, so invites there are codes only.
    settings = replace(handler_settings(config), qr_invites=False)
    dispatcher = Dispatcher(db=db, clock=clock, settings=settings)
    interactive = stdin.isatty()

    def say(line: str) -> None:
        stdout.write(line + "\n")
        stdout.flush()

    async def send(kind: EventKind, body: str = "") -> None:
        event = InboundEvent(kind=kind, platform=PLATFORM, member_id=user,
                             dedupe_key=f"chat:{user}:{uuid.uuid4().hex}", created_at=clock.now(),
                             text=body, raw_type="text" if kind is EventKind.TEXT else "event")
        reply = as_plain_text(await dispatcher.process(event))
        if reply:
            say(_indent("bot", reply))
        await show_queued()

    # The poller and the answer to a typed line both take queued messages: one at a time, so
    # that on PostgreSQL two transactions never show the same message twice.
    taking = asyncio.Lock()

    async def show_queued(*, idle: bool = False) -> None:
        async with taking:
            payloads = await db.run(outbox_terminal.take_for, platform=PLATFORM, openid=user,
                                    now=clock.now())
        if payloads and idle and interactive:
            stdout.write("\r\x1b[K")  # over the prompt, which is written again below
        for payload in payloads:
            say(_indent("bot (message)", as_plain_text(reply_from_json(payload))))
        if payloads and idle and interactive:
            stdout.write(f"{user}> ")
            stdout.flush()

    async def poll() -> None:
        while True:
            await asyncio.sleep(poll_every)
            try:
                await show_queued(idle=True)
            except Exception as exc:  # noqa: BLE001 - the next poll tries again
                log.warning("could not read messages for %s: %s", user, type(exc).__name__)

    stopping = asyncio.Event()
    background: list[asyncio.Task[None]] = []
    try:
        known = await db.run(members.get, platform=PLATFORM, openid=user)
        lang = known.lang if known and known.lang else DEFAULT_LANG
        say(text(lang, "chat_banner", user=user))
        if known is None:
            await send(EventKind.SUBSCRIBE)  # a new member follows first, as on WeChat
        else:
            await show_queued()
        background = [asyncio.create_task(poll()),
                      # Stored replies quote cards; a terminal forgets them as `serve` does.
                      asyncio.create_task(sweep_replies(db, clock, every=REPLY_SWEEP_EVERY,
                                                        stopping=stopping))]
        while True:
            if interactive:
                stdout.write(f"{user}> ")
                stdout.flush()
            line = await asyncio.to_thread(stdin.readline)
            if not line:
                break
            line = line.rstrip("\n")
            if line.strip() in QUIT:
                break
            if line.strip():
                await send(EventKind.TEXT, line)
    finally:
        stopping.set()
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await db.dispose()
    return 0


def _indent(who: str, body: str) -> str:
    lines = body.splitlines() or [""]
    return "\n".join([f"{who}: {lines[0]}"] + [" " * (len(who) + 2) + line for line in lines[1:]])
