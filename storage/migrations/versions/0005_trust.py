"""trust under attack: nonces, mentions, stable numbers, ids never reused, contact never network

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 21:40:00
"""
from __future__ import annotations

import json

from alembic import op
import sqlalchemy as sa
from sqlmodel.sql.sqltypes import AutoString
import storage.models


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# Tables whose ids members type back or that serve as idempotency keys; on SQLite they are
# rebuilt with AUTOINCREMENT so that a deleted row's id is never handed out again.
_NO_REUSE = ('member', 'outbox', 'outbox_attempt', 'connection', 'intro', 'intro_step', 'ask',
             'nudge', 'follow_up')


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == 'sqlite'

    op.create_table('push_nonce',
    sa.Column('timestamp', AutoString(length=16), nullable=False),
    sa.Column('nonce', AutoString(length=64), nullable=False),
    sa.Column('body_sha256', AutoString(length=64), nullable=False),
    sa.Column('seen_at', storage.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('timestamp', 'nonce')
    )
    with op.batch_alter_table('push_nonce', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_push_nonce_seen_at'), ['seen_at'], unique=False)

    op.create_table('outbox_mention',
    sa.Column('outbox_id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], ),
    sa.ForeignKeyConstraint(['outbox_id'], ['outbox.id'], ),
    sa.PrimaryKeyConstraint('outbox_id', 'member_id')
    )
    with op.batch_alter_table('outbox_mention', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_mention_member_id'), ['member_id'], unique=False)

    op.create_table('contact_seq',
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('last', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], ),
    sa.PrimaryKeyConstraint('member_id')
    )

    with op.batch_alter_table('intro', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ask_text', AutoString(length=200), nullable=True))

    # Contact numbers: each member's list keeps the numbers it showed (in the order the
    # connections were made), and the counter remembers the highest, so none is reused.
    with op.batch_alter_table('connection', schema=None) as batch_op:
        batch_op.add_column(sa.Column('number', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('name_pending', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
    op.execute(
        "UPDATE connection SET number = ranked.n FROM ("
        "SELECT id, row_number() OVER (PARTITION BY member_id ORDER BY created_at, id) AS n "
        "FROM connection) AS ranked WHERE connection.id = ranked.id"
    )
    op.execute("INSERT INTO contact_seq (member_id, last) "
               "SELECT member_id, MAX(number) FROM connection GROUP BY member_id")
    with op.batch_alter_table('connection', schema=None,
                              table_kwargs={'sqlite_autoincrement': True} if sqlite else {}) as batch_op:
        batch_op.alter_column('number', existing_type=sa.Integer(), nullable=False)
        batch_op.create_unique_constraint('uq_connection_number', ['member_id', 'number'])

    # Contact moves only through a completed double opt-in: it can never be seen by the
    # network, so any such setting goes back to connections.
    settings = sa.table('member_settings', sa.column('member_id', sa.Integer()),
                        sa.column('visibility', sa.Text()))
    for member_id, raw in bind.execute(sa.select(settings.c.member_id, settings.c.visibility)
                                       .where(settings.c.visibility.like('%contact%'))).all():
        levels = json.loads(raw or '{}')
        if levels.get('contact') == 'network':
            levels['contact'] = 'connections'
            bind.execute(settings.update().where(settings.c.member_id == member_id)
                         .values(visibility=json.dumps(levels, sort_keys=True)))

    if sqlite:
        for table in _NO_REUSE:
            if table == 'connection':
                continue  # rebuilt above
            with op.batch_alter_table(table, schema=None, recreate='always',
                                      table_kwargs={'sqlite_autoincrement': True}):
                pass


def downgrade() -> None:
    with op.batch_alter_table('connection', schema=None) as batch_op:
        batch_op.drop_constraint('uq_connection_number', type_='unique')
        batch_op.drop_column('name_pending')
        batch_op.drop_column('number')
    with op.batch_alter_table('intro', schema=None) as batch_op:
        batch_op.drop_column('ask_text')
    op.drop_table('contact_seq')
    with op.batch_alter_table('outbox_mention', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_mention_member_id'))
    op.drop_table('outbox_mention')
    with op.batch_alter_table('push_nonce', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_push_nonce_seen_at'))
    op.drop_table('push_nonce')
