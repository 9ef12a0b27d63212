"""Starting the real bot on 127.0.0.1 for tests, with a FakeWeChatServer pointed at it."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator, Awaitable, Callable, Optional

from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.app import SERVICES, Services, create_app
from bot.clock import Clock
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
    handler: Optional[Callable[[Context], Awaitable[Reply]]] = None,
    answer_deadline: Optional[float] = None,
    run_sender: bool = False,
) -> AsyncIterator[RunningBot]:
    """Start the app on a free loopback port; stop it cleanly afterwards."""
    kwargs: dict[str, Any] = {"clock": clock, "handler": handler, "run_sender": run_sender,
                              "run_scheduler": False}
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
