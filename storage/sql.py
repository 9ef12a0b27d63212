"""Small helpers for statements that differ between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def dialect(session: AsyncSession) -> str:
    """'sqlite' or 'postgresql'."""
    return session.get_bind().dialect.name


async def insert_ignore(
    session: AsyncSession, table: sa.Table, values: dict[str, Any], *, conflict: list[str]
) -> bool:
    """INSERT … ON CONFLICT DO NOTHING; True when the row was inserted by us."""
    ins: Any = postgresql.insert(table) if dialect(session) == "postgresql" else sqlite.insert(table)
    # RETURNING, not rowcount: psycopg's async cursor reports -1 for this statement.
    stmt = ins.values(**values).on_conflict_do_nothing(index_elements=conflict).returning(
        sa.literal_column("1")
    )
    result = await session.execute(stmt)
    return result.first() is not None
