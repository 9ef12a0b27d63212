"""asks, nudges, follow-ups, digest settings

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 20:30:43.262435
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate writes sqlmodel.sql.sqltypes.AutoString)
import storage.models


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ask',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('text', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('created_at', storage.models.UTCDateTime(), nullable=False),
    sa.Column('expires_at', storage.models.UTCDateTime(), nullable=False),
    sa.Column('closed_at', storage.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('ask', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ask_member_id'), ['member_id'], unique=False)
        batch_op.create_index('ix_ask_open', ['status', 'expires_at'], unique=False)

    op.create_table('follow_up',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('intro_id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('due_at', storage.models.UTCDateTime(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('answer', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('answered_at', storage.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['intro_id'], ['intro.id'], ),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('intro_id', 'member_id', 'round', name='uq_follow_up')
    )
    with op.batch_alter_table('follow_up', schema=None) as batch_op:
        batch_op.create_index('ix_follow_up_due', ['status', 'due_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_follow_up_intro_id'), ['intro_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_follow_up_member_id'), ['member_id'], unique=False)

    op.create_table('nudge',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ask_id', sa.Integer(), nullable=False),
    sa.Column('candidate_id', sa.Integer(), nullable=False),
    sa.Column('connector_id', sa.Integer(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('created_at', storage.models.UTCDateTime(), nullable=False),
    sa.Column('decided_at', storage.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['ask_id'], ['ask.id'], ),
    sa.ForeignKeyConstraint(['candidate_id'], ['member.id'], ),
    sa.ForeignKeyConstraint(['connector_id'], ['member.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('ask_id', 'candidate_id', name='uq_nudge_ask_candidate')
    )
    with op.batch_alter_table('nudge', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_nudge_ask_id'), ['ask_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_nudge_candidate_id'), ['candidate_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_nudge_connector_id'), ['connector_id'], unique=False)

    with op.batch_alter_table('member_settings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('digest', sqlmodel.sql.sqltypes.AutoString(length=8), server_default='weekly', nullable=False))
        batch_op.add_column(sa.Column('timezone', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('member_settings', schema=None) as batch_op:
        batch_op.drop_column('timezone')
        batch_op.drop_column('digest')

    with op.batch_alter_table('nudge', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_nudge_connector_id'))
        batch_op.drop_index(batch_op.f('ix_nudge_candidate_id'))
        batch_op.drop_index(batch_op.f('ix_nudge_ask_id'))

    op.drop_table('nudge')
    with op.batch_alter_table('follow_up', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_follow_up_member_id'))
        batch_op.drop_index(batch_op.f('ix_follow_up_intro_id'))
        batch_op.drop_index('ix_follow_up_due')

    op.drop_table('follow_up')
    with op.batch_alter_table('ask', schema=None) as batch_op:
        batch_op.drop_index('ix_ask_open')
        batch_op.drop_index(batch_op.f('ix_ask_member_id'))

    op.drop_table('ask')
