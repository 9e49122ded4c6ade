"""deployment and notifications (issue 11)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

Profiles gain deploy settings and notification targets (all empty: no deployment,
no notifications); certificate status gains the deployment's progress; two new
tables: `deployments` (one row per deployment run) and `notifications` (the outbox).
Columns are added with plain-text server defaults or none, so SQLite adds them in
place (see 0002).
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_PROFILE_COLUMNS = ('deploy_root', 'deploy_command', 'deploy_owner', 'notify_url_sealed', 'notify_email')
_STATUS_COLUMNS = ('deploy_written_revision', 'deployed_revision', 'deploy_error', 'deploy_failures',
                   'deploy_retry_at', 'deploy_failed_revision')


def upgrade() -> None:
    with op.batch_alter_table('profiles', schema=None) as batch_op:
        batch_op.add_column(sa.Column('deploy_root', sa.String(length=4096), nullable=True))
        batch_op.add_column(sa.Column('deploy_command', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('deploy_owner', sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column('notify_url_sealed', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('notify_email', sa.String(length=320), nullable=True))
    with op.batch_alter_table('certificate_status', schema=None) as batch_op:
        batch_op.add_column(sa.Column('deploy_written_revision', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('deployed_revision', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('deploy_error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('deploy_failures', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('deploy_retry_at', sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('deploy_failed_revision', sa.Integer(), nullable=True))
    op.create_table(
        'deployments',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('certificate_id', sa.Integer(), nullable=False),
        sa.Column('revision_number', sa.Integer(), nullable=False),
        sa.Column('directory', sa.String(length=4096), nullable=False),
        sa.Column('worker', sa.String(length=128), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('outcome', sa.String(length=16), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('output', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['certificate_id'], ['certificates.id'],
                                name=op.f('fk_deployments_certificate_id_certificates'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_deployments')),
    )
    op.create_index('ix_deployments_certificate_started', 'deployments', ['certificate_id', 'started_at'],
                    unique=False)
    op.create_table(
        'notifications',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('event_id', sa.Integer(), nullable=False),
        sa.Column('profile_id', sa.Integer(), nullable=True),
        sa.Column('channel', sa.String(length=16), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('dropped_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('lease_owner', sa.String(length=128), nullable=True),
        sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['event_id'], ['events.id'],
                                name=op.f('fk_notifications_event_id_events'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['profile_id'], ['profiles.id'],
                                name=op.f('fk_notifications_profile_id_profiles'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications')),
        sa.UniqueConstraint('event_id', 'channel', name=op.f('uq_notifications_event_id')),
    )
    op.create_index('ix_notifications_due', 'notifications', ['delivered_at', 'dropped_at', 'next_attempt_at'],
                    unique=False)
    op.create_index(op.f('ix_notifications_profile_id'), 'notifications', ['profile_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_notifications_profile_id'), table_name='notifications')
    op.drop_index('ix_notifications_due', table_name='notifications')
    op.drop_table('notifications')
    op.drop_index('ix_deployments_certificate_started', table_name='deployments')
    op.drop_table('deployments')
    # not batch: SQLite (3.35+) drops a column in place; a batch copy would cascade (see 0002)
    for column in reversed(_STATUS_COLUMNS):
        op.drop_column('certificate_status', column)
    for column in reversed(_PROFILE_COLUMNS):
        op.drop_column('profiles', column)
