"""Small helpers for statements that differ between SQLite and PostgreSQL."""

from __future__ import annotations

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
