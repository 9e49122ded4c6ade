"""profile sandbox: concurrency, allow_read, allow_write

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

Existing profiles get the defaults through the server defaults: 16 calls in
flight, no granted paths.
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain-text server defaults: with these SQLite's batch mode adds the columns in place
    # (ALTER TABLE ADD COLUMN). A SQL-expression default would make it copy the table, and
    # dropping the old `profiles` would cascade to `profile_params`.
    with op.batch_alter_table('profiles', schema=None) as batch_op:
        batch_op.add_column(sa.Column('concurrency', sa.Integer(), server_default='16', nullable=False))
        batch_op.add_column(sa.Column('allow_read', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('allow_write', sa.JSON(), server_default='[]', nullable=False))


def downgrade() -> None:
    # not batch: SQLite (3.35+) drops a column in place; a batch copy of `profiles` would cascade
    for column in ('allow_write', 'allow_read', 'concurrency'):
        op.drop_column('profiles', column)
