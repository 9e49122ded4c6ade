"""HSM groups carry their module environment (issue 13)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

`hsm_groups.module_env`: the environment a group's PKCS#11 module reads when a
process loads it (e.g. SOFTHSM2_CONF), applied by every process that uses the
group. Existing groups get `{}` (the process's own environment, as before).
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a plain-text server default: SQLite's batch mode then adds the column in place
    with op.batch_alter_table('hsm_groups', schema=None) as batch_op:
        batch_op.add_column(sa.Column('module_env', sa.JSON(), server_default='{}', nullable=False))


def downgrade() -> None:
    op.drop_column('hsm_groups', 'module_env')
