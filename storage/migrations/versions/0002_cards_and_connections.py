"""cards, settings, connections, invites, dialogs, export links

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 19:19:12.708393
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
from sqlmodel.sql.sqltypes import AutoString
import storage.models


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('card',
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('name', AutoString(length=40), nullable=True),
    sa.Column('title', AutoString(length=60), nullable=True),
    sa.Column('company', AutoString(length=60), nullable=True),
    sa.Column('city', AutoString(length=30), nullable=True),
    sa.Column('industry', AutoString(length=30), nullable=True),
    sa.Column('offers', sa.Text(), nullable=False),
    sa.Column('needs', sa.Text(), nullable=False),
    sa.Column('bio', AutoString(length=200), nullable=True),
    sa.Column('contact', AutoString(length=80), nullable=True),
    sa.Column('updated_at', storage.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], ),
    sa.PrimaryKeyConstraint('member_id')
    )
    op.create_table('connection',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=False),
    sa.Column('strength', sa.Integer(), nullable=True),
    sa.Column('source', AutoString(length=16), nullable=False),
    sa.Column('created_at', storage.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['member.id'], ),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('member_id', 'contact_id', name='uq_connection_pair')
    )
    with op.batch_alter_table('connection', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_connection_contact_id'), ['contact_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_connection_member_id'), ['member_id'], unique=False)

    op.create_table('dialog',
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('name', AutoString(length=32), nullable=False),
    sa.Column('step', AutoString(length=32), nullable=False),
    sa.Column('data', sa.Text(), nullable=False),
    sa.Column('updated_at', storage.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], ),
    sa.PrimaryKeyConstraint('member_id')
    )
    op.create_table('export_link',
    sa.Column('token', AutoString(length=64), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('created_at', storage.models.UTCDateTime(), nullable=False),
    sa.Column('expires_at', storage.models.UTCDateTime(), nullable=False),
    sa.Column('used_at', storage.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], ),
    sa.PrimaryKeyConstraint('token')
    )
    with op.batch_alter_table('export_link', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_export_link_member_id'), ['member_id'], unique=False)

    op.create_table('invite',
    sa.Column('code', AutoString(length=16), nullable=False),
    sa.Column('inviter_id', sa.Integer(), nullable=False),
    sa.Column('created_at', storage.models.UTCDateTime(), nullable=False),
    sa.Column('expires_at', storage.models.UTCDateTime(), nullable=False),
    sa.Column('max_uses', sa.Integer(), nullable=False),
    sa.Column('uses', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['inviter_id'], ['member.id'], ),
    sa.PrimaryKeyConstraint('code')
    )
    with op.batch_alter_table('invite', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_invite_inviter_id'), ['inviter_id'], unique=False)

    op.create_table('member_settings',
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('visibility', sa.Text(), nullable=False),
    sa.Column('stealth', sa.Boolean(), nullable=False),
    sa.Column('paused_until', storage.models.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], ),
    sa.PrimaryKeyConstraint('member_id')
    )


def downgrade() -> None:
    op.drop_table('member_settings')
    with op.batch_alter_table('invite', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_invite_inviter_id'))

    op.drop_table('invite')
    with op.batch_alter_table('export_link', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_export_link_member_id'))

    op.drop_table('export_link')
    op.drop_table('dialog')
    with op.batch_alter_table('connection', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_connection_member_id'))
        batch_op.drop_index(batch_op.f('ix_connection_contact_id'))

    op.drop_table('connection')
    op.drop_table('card')
