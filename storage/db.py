"""Engines, sessions and migrations for SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _urls(url: str) -> tuple[str, str]:
    """Turn an operator's storage.url into (async URL, sync URL for Alembic)."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return (u.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False),
                u.set(drivername="sqlite").render_as_string(hide_password=False))
    if backend in {"postgresql", "postgres"}:
        pg = u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        return pg, pg
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
    """One database: an async engine for the app and Alembic for the schema."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.async_url, self.sync_url = _urls(url)
        self.sqlite = is_sqlite(url)
        kwargs: dict[str, Any] = {"echo": echo}
        if self.sqlite:
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(self.async_url, **kwargs)
        if self.sqlite:
            _tune_sqlite(self.engine.sync_engine)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits on success and rolls back on error."""
        async with self._sessions() as session:
            async with session.begin():
                yield session

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
        await asyncio.to_thread(self.upgrade_sync)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
