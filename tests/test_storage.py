"""Schema and storage basics on both backends."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

from storage import members, pushes
from storage.db import Database

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


async def test_migrations_create_every_table(db: Database) -> None:
    with db.engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
    assert {"member", "inbound_push", "outbox", "outbox_attempt", "access_token", "alembic_version"} <= names


async def test_upgrade_twice_is_harmless(db: Database) -> None:
    await db.upgrade()
    with db.session() as s:
        assert pushes.claim(s, key="k", openid="o", now=NOW)


async def test_member_recorded_once_with_window(db: Database) -> None:
    with db.session() as s:
        m = members.touch(s, platform="oa", openid="o1", now=NOW, user_message=True, event=False)
        first_id = m.id
    with db.session() as s:
        m = members.touch(s, platform="oa", openid="o1", now=NOW.replace(hour=10),
                                user_message=False, event=True)
        assert m.id == first_id
        assert m.last_message_at == NOW and m.last_event_at == NOW.replace(hour=10)
        assert m.created_at == NOW


async def test_claim_is_once(db: Database) -> None:
    with db.session() as s:
        assert pushes.claim(s, key="msg:1", openid="o", now=NOW)
    with db.session() as s:
        assert not pushes.claim(s, key="msg:1", openid="o", now=NOW)


async def test_sqlite_pragmas(tmp_path) -> None:  # type: ignore[no-untyped-def]
    database = Database(f"sqlite:///{tmp_path / 'x.db'}")
    await database.upgrade()
    with database.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    await database.dispose()
