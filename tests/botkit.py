"""Starting the real bot on 127.0.0.1 for tests, with a FakeWeChatServer pointed at it."""

from __future__ import annotations

import itertools
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator, Callable, Optional

from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.app import SERVICES, Services, create_app
from scheduler.clock import Clock
from bot.config import Config, load_config
from handlers.context import Context
from handlers.replies import Reply
from tests.fakes.wechat_server import FakeWeChatServer

TOKEN = "yinjiantesttoken"
APP_ID = "wx0123456789abcdef"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def make_config(db_url: str, **wechat: Any) -> Config:
    """A config as an operator would write it, for the given database."""
    env = {"YINJIAN_STORAGE__URL": db_url, "YINJIAN_WECHAT__TOKEN": TOKEN,
           "YINJIAN_WECHAT__APP_ID": APP_ID, "YINJIAN_WECHAT__ENCODING_AES_KEY": AES_KEY,
           "YINJIAN_SCHEDULER__ENABLED": "false"}
    cfg = load_config(None, env=env)
    return replace(cfg, wechat=replace(cfg.wechat, **wechat)) if wechat else cfg


@dataclass
class RunningBot:
    """A started bot and a fake WeChat that pushes to it."""

    server: TestServer
    services: Services
    wechat: FakeWeChatServer

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        return str(self.server.make_url(""))


@asynccontextmanager
async def running_bot(
    config: Config,
    *,
    mode: str = "safe",
    clock: Optional[Clock] = None,
    handler: Optional[Callable[[Context], Reply]] = None,
    answer_deadline: Optional[float] = None,
    run_sender: bool = False,
    **app_options: Any,
) -> AsyncIterator[RunningBot]:
    """Start the app on a free loopback port; stop it cleanly afterwards.

    `mode="plain"` runs the bot as a plain-mode account is configured: without an
    EncodingAESKey (make_config always sets one, and a bot with a key refuses plain pushes).
    """
    if mode == "plain":
        config = replace(config, wechat=replace(config.wechat, encoding_aes_key=""))
    # app_options: create_app's knobs for tests (reply_sweep_every, read_timeout …).
    kwargs: dict[str, Any] = {"clock": clock, "handler": handler, "run_sender": run_sender,
                              "run_scheduler": False, **app_options}
    if answer_deadline is not None:
        kwargs["answer_deadline"] = answer_deadline
    app: web.Application = create_app(config, **kwargs)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        services = app[SERVICES]
        fake = FakeWeChatServer(
            url=str(server.make_url(config.wechat.path)), token=config.wechat.token,
            app_id=config.wechat.app_id, aes_key=config.wechat.encoding_aes_key, mode=mode,
            clock=(lambda: services.clock.now().timestamp()),
        )
        yield RunningBot(server=server, services=services, wechat=fake)
    finally:
        await server.close()


async def say(bot: RunningBot, openid: str, content: str) -> str:
    """Send a text as a member through the webhook; the bot's text answer."""
    from tests.fakes.wechat_server import text_xml

    answer = await bot.wechat.push(text_xml(openid, content, bot.wechat.next_msg_id()))
    assert answer.status == 200, answer.body
    assert answer.content is not None, f"no text reply to {content!r}: {answer.body!r}"
    return answer.content


async def event(bot: RunningBot, openid: str, name: str, *, key: str | None = None) -> str:
    """Push an event (subscribe, unsubscribe, SCAN …); the bot's answer text, or the raw body."""
    from tests.fakes.wechat_server import event_xml

    ts = int(bot.services.clock.now().timestamp()) + next(_event_seconds)
    answer = await bot.wechat.push(event_xml(openid, name, key=key, create_time=ts,
                                             ticket="TICKET" if key else None))
    assert answer.status == 200, answer.body
    return answer.content if answer.content is not None else answer.body


_event_seconds = itertools.count()


async def queued(bot: RunningBot, openid: str) -> list[str]:
    """The texts waiting in the outbox for a member, oldest first."""
    import sqlalchemy as sa

    from handlers.replies import as_plain_text, reply_from_json
    from storage.models import Member, OutboxMessage

    with bot.services.db.session() as s:
        rows = (s.execute(
            sa.select(OutboxMessage.payload).join(Member, Member.id == OutboxMessage.member_id)
            .where(Member.openid == openid).order_by(OutboxMessage.id)
        )).scalars().all()
    return [as_plain_text(reply_from_json(p)) for p in rows]
