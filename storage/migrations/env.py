"""Alembic environment: the only place the schema is created or changed."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, cast

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy import create_engine, pool, text

import storage.models  # noqa: F401  (registers the tables on the metadata)
from sqlmodel import SQLModel

config = context.config
target_metadata = SQLModel.metadata
# Any constant works: it only has to be the same for every worker that upgrades at once.
_PG_MIGRATION_LOCK = 0x79696E6A


def _applied(ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any],
             run_args: Mapping[str, Any]) -> None:
    """Note each migration that really runs, so Database.upgrade can say so in one line."""
    if step.is_upgrade:
        config.attributes.setdefault("applied", []).append(step.up_revision_id)


def run_migrations_online() -> None:
    # Database.upgrade always sets sync_url; the ini option is only a fallback.
    url = cast(str, config.attributes.get("sync_url") or config.get_main_option("sqlalchemy.url"))
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            # Several `yinjian serve` workers may start together; one migrates, the rest wait.
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
                on_version_apply=_applied,
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if postgres:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK})
                connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `yinjian db upgrade`")
run_migrations_online()
