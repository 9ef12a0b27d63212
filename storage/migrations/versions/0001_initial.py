"""initial schema: members, pushes, outbox, access token

Revision ID: 0001
Revises: 
Create Date: 2026-11-26 19:12:36.428368
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
from sqlmodel.sql.sqltypes import AutoString
import storage.models


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('access_token',
    sa.Column('app_id', AutoString(length=64), nullable=False),
    sa.Column('token', sa.Text(), nullable=True),
    sa.Column('expires_at', storage.models.UTCDateTime(), nullable=True),
    sa.Column('refresh_lock_until', storage.models.UTCDateTime(), nullable=True),
    sa.Column('refreshed_at', storage.models.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('app_id')
    )
    op.create_table('inbound_push',
    sa.Column('key', AutoString(length=200), nullable=False),
    sa.Column('member_openid', AutoString(length=128), nullable=False),
    sa.Column('received_at', storage.models.UTCDateTime(), nullable=False),
    sa.Column('reply', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('inbound_push', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_inbound_push_received_at'), ['received_at'], unique=False)

    op.create_table('member',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('platform', AutoString(length=16), nullable=False),
    sa.Column('openid', AutoString(length=128), nullable=False),
    sa.Column('lang', AutoString(length=8), nullable=True),
    sa.Column('status', AutoString(length=16), nullable=False),
    sa.Column('created_at', storage.models.UTCDateTime(), nullable=False),
    sa.Column('last_message_at', storage.models.UTCDateTime(), nullable=True),
    sa.Column('last_event_at', storage.models.UTCDateTime(), nullable=True),
    sa.Column('deactivated_at', storage.models.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('platform', 'openid', name='uq_member_platform_openid')
    )
    op.create_table('outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('kind', AutoString(length=16), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('status', AutoString(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', storage.models.UTCDateTime(), nullable=False),
    sa.Column('next_attempt_at', storage.models.UTCDateTime(), nullable=False),
    sa.Column('lease_until', storage.models.UTCDateTime(), nullable=True),
    sa.Column('sent_at', storage.models.UTCDateTime(), nullable=True),
    sa.Column('last_errcode', sa.Integer(), nullable=True),
    sa.Column('dedupe_key', AutoString(length=200), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dedupe_key')
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_outbox_member_id'), ['member_id'], unique=False)

    op.create_table('outbox_attempt',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('outbox_id', sa.Integer(), nullable=False),
    sa.Column('attempted_at', storage.models.UTCDateTime(), nullable=False),
    sa.Column('errcode', sa.Integer(), nullable=True),
    sa.Column('errmsg', AutoString(length=500), nullable=False),
    sa.Column('outcome', AutoString(length=16), nullable=False),
    sa.ForeignKeyConstraint(['outbox_id'], ['outbox.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('outbox_attempt', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_attempt_outbox_id'), ['outbox_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('outbox_attempt', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_attempt_outbox_id'))

    op.drop_table('outbox_attempt')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_member_id'))
        batch_op.drop_index('ix_outbox_due')

    op.drop_table('outbox')
    op.drop_table('member')
    with op.batch_alter_table('inbound_push', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_inbound_push_received_at'))

    op.drop_table('inbound_push')
    op.drop_table('access_token')
