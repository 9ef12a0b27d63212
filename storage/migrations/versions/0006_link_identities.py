"""link: one member across the Official Account and WeCom

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 22:50:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
from sqlmodel.sql.sqltypes import AutoString
import storage.models


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == 'sqlite'
    with op.batch_alter_table('member', schema=None,
                              table_kwargs={'sqlite_autoincrement': True} if sqlite else {}) as batch_op:
        batch_op.add_column(sa.Column('merged_into', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_member_merged_into'), ['merged_into'], unique=False)
        batch_op.create_foreign_key('fk_member_merged_into', 'member', ['merged_into'], ['id'])

    op.create_table('link_code',
    sa.Column('code', AutoString(length=16), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('created_at', storage.models.UTCDateTime(), nullable=False),
    sa.Column('expires_at', storage.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], ),
    sa.PrimaryKeyConstraint('code')
    )
    with op.batch_alter_table('link_code', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_link_code_member_id'), ['member_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('link_code', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_link_code_member_id'))
    op.drop_table('link_code')
    with op.batch_alter_table('member', schema=None) as batch_op:
        batch_op.drop_constraint('fk_member_merged_into', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_member_merged_into'))
        batch_op.drop_column('merged_into')
