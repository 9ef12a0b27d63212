"""search index and introductions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 20:04:40.783237
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate writes sqlmodel.sql.sqltypes.AutoString)
import storage.models


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('intro',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('requester_id', sa.Integer(), nullable=True),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('broker_id', sa.Integer(), nullable=True),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('created_at', storage.models.UTCDateTime(), nullable=False),
    sa.Column('finished_at', storage.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['broker_id'], ['member.id'], ),
    sa.ForeignKeyConstraint(['requester_id'], ['member.id'], ),
    sa.ForeignKeyConstraint(['target_id'], ['member.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('intro', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_intro_broker_id'), ['broker_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_intro_requester_id'), ['requester_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_intro_target_id'), ['target_id'], unique=False)

    op.create_table('search_result',
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('degree', sa.Integer(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('created_at', storage.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], ),
    sa.ForeignKeyConstraint(['target_id'], ['member.id'], ),
    sa.PrimaryKeyConstraint('member_id', 'n')
    )
    with op.batch_alter_table('search_result', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_search_result_target_id'), ['target_id'], unique=False)

    op.create_table('search_token',
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('token', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('weight', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], ),
    sa.PrimaryKeyConstraint('member_id', 'token')
    )
    with op.batch_alter_table('search_token', schema=None) as batch_op:
        batch_op.create_index('ix_search_token_token', ['token', 'member_id'], unique=False)

    op.create_table('intro_step',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('intro_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=False),
    sa.Column('role', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('vouch', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('created_at', storage.models.UTCDateTime(), nullable=False),
    sa.Column('expires_at', storage.models.UTCDateTime(), nullable=True),
    sa.Column('reminded_at', storage.models.UTCDateTime(), nullable=True),
    sa.Column('decided_at', storage.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['actor_id'], ['member.id'], ),
    sa.ForeignKeyConstraint(['intro_id'], ['intro.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('intro_step', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_intro_step_actor_id'), ['actor_id'], unique=False)
        batch_op.create_index('ix_intro_step_due', ['status', 'expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_intro_step_intro_id'), ['intro_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('intro_step', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_intro_step_intro_id'))
        batch_op.drop_index('ix_intro_step_due')
        batch_op.drop_index(batch_op.f('ix_intro_step_actor_id'))

    op.drop_table('intro_step')
    with op.batch_alter_table('search_token', schema=None) as batch_op:
        batch_op.drop_index('ix_search_token_token')

    op.drop_table('search_token')
    with op.batch_alter_table('search_result', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_search_result_target_id'))

    op.drop_table('search_result')
    with op.batch_alter_table('intro', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_intro_target_id'))
        batch_op.drop_index(batch_op.f('ix_intro_requester_id'))
        batch_op.drop_index(batch_op.f('ix_intro_broker_id'))

    op.drop_table('intro')
