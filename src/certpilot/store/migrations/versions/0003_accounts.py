"""accounts: user lifecycle, server-side sessions, token lineage (issue 12)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

Reserved in the chain so the second-wave changes can land in any order; it
changes nothing until its feature fills it in.
"""

from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
