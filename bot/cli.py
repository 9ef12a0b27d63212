"""The `yinjian` command: serve, db upgrade, run-job, chat."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import socket
import sys
from datetime import datetime
from typing import Optional, Sequence
from zoneinfo import ZoneInfo

from aiohttp import web

from bot.config import Config, ConfigError, load_config

log = logging.getLogger("yinjian")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yinjian", description="Yinjian (引荐), the WeChat introductions bot.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", metavar="PATH", help="TOML config file (default: $YINJIAN_CONFIG, "
                       "else the embedded default)")
        p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
        return p

    add("serve", "run the webhook, the outbox sender and the scheduler")
    db = add("db", "database maintenance")
    db.add_argument("action", choices=["upgrade"], help="upgrade: apply every migration, nothing else")
    job = add("run-job", "run one scheduled job now, or as of a given time")
    job.add_argument("name", help="the job's name; without one, the jobs are listed", nargs="?")
    job.add_argument("--at", metavar="ISO-8601-TIME", help="run as of this time (naive times are in "
                     "scheduler.timezone)")
    job.add_argument("--list", action="store_true", help="list the jobs")
    chat = add("chat", "chat with the bot in the terminal as a member")
    chat.add_argument("--user", required=True, metavar="NAME", help="the member to chat as")
    menu = add("menu", "the account menus")
    menu.add_argument("action", choices=["push"], help="push: set the Official Account's and the "
                      "WeCom app's menus from the declared buttons")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiohttp's access log would print every push's query string, signatures included.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Library chatter that says nothing an operator needs (our own lines say what started, and
    # storage.db says when migrations ran); -v shows Alembic's lines again.
    for noisy in ("apscheduler",) if args.verbose else ("alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = load_config(args.config)
        if args.command == "serve":
            return _serve(config)
        if args.command == "db":
            _describe_storage(config)
            return _db_upgrade(config)
        if args.command == "run-job":
            return asyncio.run(_run_job(config, args.name, args.at, args.list))
        if args.command == "menu":
            return asyncio.run(_menu_push(config))
        if args.command == "chat":
            from bot.chat import run_chat

            _describe_storage(config)
            return asyncio.run(run_chat(config, user=args.user))
    except ConfigError as exc:
        print(f"yinjian: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"yinjian: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _describe_storage(config: Config) -> None:
    """Say which database this command uses: a SQLite file by its absolute path."""
    from storage.db import sqlite_path

    path = sqlite_path(config.storage.url)
    log.info("storage: %s", "PostgreSQL" if path is None else f"SQLite {path}")


def _describe(config: Config) -> None:
    log.info("configuration: %s", config.source)
    _describe_storage(config)
    if config.dev_token:
        log.info("development token (set wechat.token for a real account): %s", config.wechat.token)
    if not config.wechat.api_configured:
        log.info("no WeChat API credentials: outbound messages are recorded in the database and the "
                 "log instead of being sent")


def _listen(host: str, port: int) -> socket.socket:
    """The webhook's listening socket, bound before anything else starts."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        # As aiohttp would: a restart must not wait for the old connections' TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _serve(config: Config) -> int:
    from bot.app import create_app

    host, port = config.server.host, config.server.port
    # Bound first, so a taken port fails at once: before migrations, the scheduler or the sender.
    try:
        sock = _listen(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"yinjian: {host}:{port} is already in use; stop what listens there or choose "
                  "another server.port", file=sys.stderr)
        else:
            print(f"yinjian: cannot listen on {host}:{port} ({exc.strerror or exc}); check server.host "
                  "and server.port", file=sys.stderr)
        return 2
    _describe(config)
    mode = "safe/compatible and plain" if config.wechat.encoding_aes_key else "plain"
    log.info("webhook at http://%s:%d%s (%s mode); try it with `yinjian chat --user NAME`",
             host, port, config.wechat.path, mode)
    app = create_app(config)
    # The event loop and the database thread share the GIL. With Python's default 5 ms switch
    # interval the database thread waits that long to get it back after every SQLite call;
    # 0.2 ms gave about 20 % more pushes per second in bench/webhook_load.py.
    sys.setswitchinterval(0.0002)
    try:
        web.run_app(app, sock=sock, print=None, access_log=None)
    except Exception as exc:
        if _is_database_error(exc):
            print(f"yinjian: cannot use the database at storage.url: {_short(exc)}", file=sys.stderr)
            return 1
        raise
    return 0


def _db_upgrade(config: Config) -> int:
    from storage.db import Database

    db = Database(config.storage.url)
    try:
        db.upgrade_sync()
    except Exception as exc:
        if _is_database_error(exc):
            print(f"yinjian: cannot use the database at storage.url: {_short(exc)}", file=sys.stderr)
            return 1
        raise
    log.info("database is at the newest schema")
    return 0


async def _run_job(config: Config, name: Optional[str], at: Optional[str], list_only: bool) -> int:
    from scheduler.clock import SystemClock
    from scheduler.jobs import JOBS
    from bot.app import handler_settings
    from scheduler.jobs import JobDeps
    from scheduler.runner import JobScheduler
    from storage.db import Database

    if list_only or not name:
        # Without a name, the question is "which jobs are there?": answering it is no error.
        for spec in JOBS.values():
            print(f"{spec.name}\t{spec.summary}")
        return 0
    if name not in JOBS:
        print(f"yinjian: unknown job {name!r}; jobs: {', '.join(JOBS)}", file=sys.stderr)
        return 2
    when: Optional[datetime] = None
    if at:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            print(f"yinjian: --at must be an ISO-8601 time such as 2026-01-05T09:00+08:00, got {at!r}",
                  file=sys.stderr)
            return 2
        if when.tzinfo is None:
            when = when.replace(tzinfo=ZoneInfo(config.scheduler.timezone))
    _describe_storage(config)
    db = Database(config.storage.url)
    try:
        await db.upgrade()
        deps = JobDeps(db=db, settings=handler_settings(config))
        result = await JobScheduler(deps=deps, clock=SystemClock()).run(name, when)
    finally:
        await db.dispose()
    print(f"{name}: {result}")
    return 0


async def _menu_push(config: Config) -> int:
    """Set each configured platform's menu from handlers.menu; one line per platform."""
    from bot.platforms.errors import PlatformAPIError
    from bot.platforms.official_account.api import WeChatAPI
    from bot.platforms.wecom.api import WeComAPI
    from handlers.menu import layout
    from storage.db import Database

    buttons = layout()
    db = Database(config.storage.url)
    clients: list[tuple[str, WeChatAPI | WeComAPI]] = []
    if config.wechat.api_configured:
        clients.append(("Official Account", WeChatAPI.from_config(config.wechat, db=db)))
    if config.wecom.enabled:
        w = config.wecom
        clients.append((f"WeCom app {w.agent_id}", WeComAPI(
            db=db, corp_id=w.corp_id, agent_id=w.agent_id, secret=w.secret, base_url=w.api_base_url)))
    if not clients:
        print("yinjian: no platform to set a menu on: configure wechat.app_id and wechat.app_secret, "
              "or the [wecom] section", file=sys.stderr)
        return 2
    failed = 0
    try:
        await db.upgrade()  # the access_token is kept in the database
        for name, client in clients:
            try:
                await client.set_menu(buttons)
            except PlatformAPIError as exc:
                failed += 1
                print(f"yinjian: the {name} menu was not set: {exc}", file=sys.stderr)
            else:
                print(f"{name}: menu set ({', '.join(b['name'] for b in buttons)})")
            finally:
                await client.close()
    finally:
        await db.dispose()
    return 1 if failed else 0


def _is_database_error(exc: BaseException) -> bool:
    import sqlalchemy.exc

    return isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)) or \
        type(exc).__module__.startswith(("psycopg", "sqlite3"))


def _short(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


if __name__ == "__main__":
    sys.exit(main())
