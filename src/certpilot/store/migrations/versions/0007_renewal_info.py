"""ACME Renewal Information, RFC 9773 (issue 10)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

- certificate_status: the renewal window the CA suggested for the current revision,
  the renewal time drawn in it, when the CA was asked and when it is asked next, the
  CA's explanation page and the last check's error.
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

TIMES = ('renewal_info_window_start', 'renewal_info_window_end', 'renewal_info_renew_at',
         'renewal_info_checked_at', 'renewal_info_check_at')
TEXTS = ('renewal_info_explanation_url', 'renewal_info_error')


def upgrade() -> None:
    with op.batch_alter_table('certificate_status', schema=None) as batch_op:
        for column in TIMES:
            batch_op.add_column(sa.Column(column, sa.DateTime(timezone=True), nullable=True))
        for column in TEXTS:
            batch_op.add_column(sa.Column(column, sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('certificate_status', schema=None) as batch_op:
        for column in TEXTS[::-1] + TIMES[::-1]:
            batch_op.drop_column(column)
