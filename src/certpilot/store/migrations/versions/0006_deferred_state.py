"""deferred issuance and script state (issue 10)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

- certificate_status: when a deferral began, when it is polled next, how many
  polls it has had (the sealed cookie column exists since 0001);
- profiles: max_pending_days (default 30), after which a deferral fails;
- profile_state: a script's `context.state`, one sealed row per key.
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain-text server defaults: SQLite adds the columns in place (see 0002)
    with op.batch_alter_table('certificate_status', schema=None) as batch_op:
        batch_op.add_column(sa.Column('deferred_since', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('deferred_poll_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('deferred_polls', sa.Integer(), server_default='0', nullable=False))
    with op.batch_alter_table('profiles', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_pending_days', sa.Integer(), server_default='30', nullable=False))
    op.create_table(
        'profile_state',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('profile_id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=256), nullable=False),
        sa.Column('value_sealed', sa.LargeBinary(), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['profile_id'], ['profiles.id'], name=op.f('fk_profile_state_profile_id_profiles'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_profile_state')),
        sa.UniqueConstraint('profile_id', 'key', name=op.f('uq_profile_state_profile_id')),
    )


def downgrade() -> None:
    op.drop_table('profile_state')
    op.drop_column('profiles', 'max_pending_days')
    for column in ('deferred_polls', 'deferred_poll_at', 'deferred_since'):
        op.drop_column('certificate_status', column)
