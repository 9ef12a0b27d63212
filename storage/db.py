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
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
P = ParamSpec("P")
T = TypeVar("T")

# PostgreSQL, on the client (libpq): how long a lost network may stay unnoticed. A push must
# fail, not hang, before its 4.5 s answer deadline: connecting gives up after 2 s (libpq's
# minimum), data the server does not acknowledge breaks the connection after 2 s, and an idle
# pooled connection is probed after 5 s of silence. A URL query parameter of the same name wins.
PG_CLIENT = {
    "connect_timeout": 2,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 1,
    "keepalives_count": 3,
    "tcp_user_timeout": 2000,  # ms
}
# PostgreSQL, on the server, for every session (set once per connection, so it works through
# PgBouncer, which refuses startup `options`): ceilings for any work, and a vanished worker's
# open transaction (and its row locks) is dropped after 15 s instead of blocking other workers.
# A `-c name=value` in the URL's `options` wins.
PG_SESSION = {
    "statement_timeout": "30s",
    "lock_timeout": "10s",
    "idle_in_transaction_session_timeout": "15s",
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "1",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "2000",
}
# Work a member is waiting for (a push, /healthz) gets tighter bounds on PostgreSQL: a
# statement or a lock wait that would outlast the answer deadline fails first, so the push
# answers "try again" rather than `success` for something it then cannot store.
INTERACTIVE_STATEMENT_TIMEOUT_MS = 3000
INTERACTIVE_LOCK_TIMEOUT_MS = 2000
# Checking a connection out of the pool never waits longer than this.
POOL_TIMEOUT = 2.0


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


def sqlite_path(url: str) -> Path | None:
    """The absolute path of a SQLite storage.url's file; None for PostgreSQL or in-memory."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database).expanduser().resolve()


def _pg_session_sql(url_options: str) -> str:
    """SET statements for PG_SESSION, leaving out what the URL's `options` already sets."""
    given = set(re.findall(r"(?:-c\s*|--)([a-z_]+)=", url_options))
    return "; ".join(f"SET {name} = '{value}'" for name, value in PG_SESSION.items()
                     if name not in given)


def _tune_postgres(engine: sa.Engine, session_sql: str) -> None:
    """Apply the session settings to every new connection, outside any transaction."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        if not session_sql:
            return
        dbapi_conn.autocommit = True
        try:
            dbapi_conn.execute(session_sql)  # one round trip: no parameters, simple protocol
        finally:
            dbapi_conn.autocommit = False


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
        query = make_url(self.sync_url).query
        if self.sqlite:
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True,
                          pool_timeout=POOL_TIMEOUT,
                          connect_args={k: v for k, v in PG_CLIENT.items() if k not in query})
        self.engine: sa.Engine = sa.create_engine(self.sync_url, **kwargs)
        if self.sqlite:
            _tune_sqlite(self.engine)
        else:
            options = query.get("options", "")
            _tune_postgres(self.engine, _pg_session_sql(options if isinstance(options, str)
                                                        else " ".join(options)))
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._interactive_sessions = self._sessions
        if not self.sqlite:
            # Same pool, other settings: see interactive_transaction.
            interactive = self.engine.execution_options()

            @event.listens_for(interactive, "begin")
            def _limits(conn: sa.Connection) -> None:
                # SET LOCAL: undone at the end of the transaction, one statement on the driver.
                conn.connection.driver_connection.execute(_INTERACTIVE_LIMITS)  # type: ignore[union-attr]

            self._interactive_sessions = sessionmaker(interactive, expire_on_commit=False)
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

    def interactive_transaction(
        self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run fn(session, ...) as work a member waits for, here and now (blocking).

        On PostgreSQL its statements and lock waits are bounded to fit the answer deadline
        (INTERACTIVE_*). The isolation stays READ COMMITTED: handlers lock a row and then read
        again what the lock holder committed, which a snapshot taken earlier would not show.
        """
        # The session connects at its first statement, so fn may still decide not to run.
        with self._interactive_sessions() as session, session.begin():
            return fn(session, *args, **kwargs)

    async def run_interactive(
        self, fn: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run fn(session, ...) as work a member waits for, on the database's threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(self.interactive_transaction, fn, *args, **kwargs)
        )

    def upgrade_sync(self) -> None:
        """Bring the schema to the newest migration (blocking; Alembic is synchronous)."""
        path = sqlite_path(self.sync_url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["sync_url"] = self.sync_url
        command.upgrade(cfg, "head")
        # Alembic's own INFO lines are silenced by the CLI; this is the one that matters.
        applied: list[str] = cfg.attributes.get("applied", [])
        if applied:
            log.info("database migrated to %s (applied %s)", applied[-1], ", ".join(applied))

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


# One statement (not two SETs): set_config(..., true) is SET LOCAL, undone at the commit.
_INTERACTIVE_LIMITS = (
    f"SELECT set_config('statement_timeout', '{INTERACTIVE_STATEMENT_TIMEOUT_MS}', true), "
    f"set_config('lock_timeout', '{INTERACTIVE_LOCK_TIMEOUT_MS}', true)"
)

# SQLite result codes that mean "busy or broken for now", not "this statement is wrong".
_SQLITE_TRANSIENT = {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL",
                     "SQLITE_CANTOPEN", "SQLITE_PROTOCOL", "SQLITE_INTERRUPT"}
# PostgreSQL: another transaction changed what this one read or waits for; running it again works.
_PG_CONFLICTS = {"40001", "40P01"}  # serialization_failure, deadlock_detected


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what SQLAlchemy wrapped, and what caused it (each once)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen or len(seen) > 20:
            continue
        seen.add(id(cur))
        yield cur
        orig = getattr(cur, "orig", None)
        todo += [orig if isinstance(orig, BaseException) else None, cur.__cause__, cur.__context__]


def conflict(exc: BaseException) -> bool:
    """True for a PostgreSQL deadlock or serialization failure: run the whole transaction again."""
    return any(getattr(e, "sqlstate", None) in _PG_CONFLICTS for e in _chain(exc))


def transient(exc: BaseException) -> bool:
    """True for database trouble that passes (connection lost or refused, timeouts, lock waits,
    conflicts, a busy SQLite file): the same work may well succeed later. False for bugs."""
    for e in _chain(exc):
        if isinstance(e, sa.exc.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, (sa.exc.TimeoutError, sa.exc.DisconnectionError)):
            return True  # the pool had no connection in time, or a connection died
        if isinstance(e, sqlite3.OperationalError):
            # Extended codes (SQLITE_BUSY_SNAPSHOT, SQLITE_IOERR_READ) count as their base code.
            name = getattr(e, "sqlite_errorname", "") or ""
            if "_".join(name.split("_")[:2]) in _SQLITE_TRANSIENT:
                return True
        elif isinstance(e, psycopg.OperationalError):
            # Class 54 ("program limit exceeded", e.g. a statement too complex) is a bug.
            if not (getattr(e, "sqlstate", None) or "").startswith("54"):
                return True
        elif isinstance(e, psycopg.InterfaceError):
            return True  # the connection is closed or lost
        elif isinstance(e, (ConnectionError, TimeoutError)):
            return True
    return False


def describe_error(exc: BaseException) -> str:
    """A short, parameter-free name for a database error, for one log line."""
    for e in _chain(exc):
        code = getattr(e, "sqlstate", None) or getattr(e, "sqlite_errorname", None)
        if code:
            return f"{type(e).__name__} {code}"
    return type(exc).__name__
