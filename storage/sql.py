"""Small helpers for statements that differ between SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def dialect(session: Session) -> str:
    """'sqlite' or 'postgresql'."""
    return session.get_bind().dialect.name


def insert_ignore(
    session: Session, table: sa.Table, values: dict[str, Any], *, conflict: list[str]
) -> bool:
    """INSERT … ON CONFLICT DO NOTHING; True when the row was inserted by us."""
    ins: Any = postgresql.insert(table) if dialect(session) == "postgresql" else sqlite.insert(table)
    # RETURNING, not rowcount: it works the same on both backends and tells us the row is ours.
    stmt = ins.values(**values).on_conflict_do_nothing(index_elements=conflict).returning(
        sa.literal_column("1")
    )
    result = session.execute(stmt)
    return result.first() is not None


def insert_ignore_returning(
    session: Session, table: sa.Table, values: dict[str, Any], *, conflict: list[str], column: str
) -> Any:
    """INSERT … ON CONFLICT DO NOTHING RETURNING `column`: the new row's value, or None."""
    ins: Any = postgresql.insert(table) if dialect(session) == "postgresql" else sqlite.insert(table)
    stmt = ins.values(**values).on_conflict_do_nothing(index_elements=conflict).returning(table.c[column])
    return session.execute(stmt).scalar_one_or_none()


class RawStatement:
    """A statement for the push hot path, run on the driver's own cursor.

    Every push runs a handful of these; through SQLAlchemy's execution layer each costs about
    50 µs of CPU, on the driver's cursor about 10 µs (see bench/README.md). Written with `?`
    placeholders; PostgreSQL gets `%s`. Times are passed through `to_db` and read back
    through `from_db`, in the same format SQLAlchemy's DateTime uses on SQLite.
    """

    def __init__(self, sql: str) -> None:
        self.sqlite = sql
        self.postgresql = sql.replace("?", "%s")

    def execute(self, session: Session, params: tuple[Any, ...]) -> Any:
        """Execute in the session's transaction; returns the driver's cursor."""
        cached: tuple[Any, bool] | None = session.info.get("driver")
        if cached is None:
            connection = session.connection()
            cached = session.info["driver"] = (connection.connection.driver_connection,
                                               connection.dialect.name == "postgresql")
        driver, postgres = cached
        return driver.execute(self.postgresql if postgres else self.sqlite, params)


_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


def to_db(session: Session, value: datetime | None) -> Any:
    """An aware datetime as the driver should store it (naive UTC, as UTCDateTime does)."""
    if value is None:
        return None
    naive = value.astimezone(timezone.utc).replace(tzinfo=None)
    return naive if dialect(session) == "postgresql" else naive.strftime(_SQLITE_TIME)


def from_db(value: Any) -> datetime | None:
    """What the driver returned for a UTCDateTime column, as an aware datetime."""
    if value is None:
        return None
    parsed: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed.replace(tzinfo=timezone.utc)
