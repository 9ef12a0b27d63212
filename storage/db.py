"""Engines, sessions and migrations for SQLite (the embedded default) and PostgreSQL.

Storage code is synchronous SQLAlchemy. Async callers hand whole units of work to
`Database.run`, which executes them on the database's own threads: one thread for SQLite
(SQLite has one writer, so one thread means no lock contention and no busy-waiting), a small
pool for PostgreSQL. Measured on this project's hot path, one thread hop per push costs a
fraction of what an async driver costs per statement (see bench/README.md).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
P = ParamSpec("P")
T = TypeVar("T")


def sync_url(url: str) -> str:
    """Turn an operator's storage.url into the URL SQLAlchemy needs (psycopg 3 for PostgreSQL)."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return u.set(drivername="sqlite").render_as_string(hide_password=False)
    if backend in {"postgresql", "postgres"}:
        return u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database URL scheme {u.drivername!r}")


def is_sqlite(url: str) -> bool:
    """True for a SQLite storage.url."""
    return make_url(url).get_backend_name() == "sqlite"


def _tune_sqlite(engine: sa.Engine) -> None:
    """WAL, foreign keys, a busy timeout, and BEGIN IMMEDIATE so writers queue instead of failing."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy (not the driver) decide when a transaction starts.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """One database: a SQLAlchemy engine, its worker threads, and Alembic for the schema."""

    def __init__(self, url: str, *, echo: bool = False, workers: int | None = None) -> None:
        self.url = url
        self.sync_url = sync_url(url)
        self.sqlite = is_sqlite(url)
        # Members' words are bound parameters: an error message must never carry them.
        kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if self.sqlite:
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: sa.Engine = sa.create_engine(self.sync_url, **kwargs)
        if self.sqlite:
            _tune_sqlite(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._executor = ThreadPoolExecutor(
            max_workers=workers or (1 if self.sqlite else 8), thread_name_prefix="yinjian-db"
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error (blocking)."""
        with self._sessions() as session, session.begin():
            yield session

    def transaction(self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run fn(session, ...) in one transaction, here and now (blocking)."""
        with self.session() as session:
            return fn(session, *args, **kwargs)

    async def run(self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run fn(session, ...) in one transaction on the database's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(self.transaction, fn, *args, **kwargs)
        )

    def upgrade_sync(self) -> None:
        """Bring the schema to the newest migration (blocking; Alembic is synchronous)."""
        if self.sqlite:
            path = make_url(self.sync_url).database
            if path and path != ":memory:":
                Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["sync_url"] = self.sync_url
        command.upgrade(cfg, "head")

    async def upgrade(self) -> None:
        """Run the migrations without blocking the event loop."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self.upgrade_sync)

    def dispose_sync(self) -> None:
        """Close every pooled connection and stop the worker threads (blocking)."""
        self._executor.shutdown(wait=True)
        self.engine.dispose()

    async def dispose(self) -> None:
        """Close every pooled connection and stop the worker threads."""
        await asyncio.to_thread(self.dispose_sync)
