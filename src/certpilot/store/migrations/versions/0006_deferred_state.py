"""deferred issuance and script state (issue 10)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

Reserved in the chain so the second-wave changes can land in any order; it
changes nothing until its feature fills it in.
"""

from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
