"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-30
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('object_type', sa.String(length=32), nullable=False),
    sa.Column('object_name', sa.String(length=128), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_events_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_kind'), ['kind'], unique=False)
        batch_op.create_index('ix_events_object', ['object_type', 'object_name'], unique=False)

    op.create_table('hsm_groups',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('module_path', sa.String(length=1024), nullable=False),
    sa.Column('token_label', sa.String(length=64), nullable=False),
    sa.Column('pin_sealed', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hsm_groups')),
    sa.UniqueConstraint('name', name=op.f('uq_hsm_groups_name'))
    )
    op.create_table('loop_heartbeats',
    sa.Column('owner', sa.String(length=128), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_pass_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('owner', name=op.f('pk_loop_heartbeats'))
    )
    with op.batch_alter_table('loop_heartbeats', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_loop_heartbeats_last_pass_at'), ['last_pass_at'], unique=False)

    op.create_table('scripts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('timeout_s', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scripts')),
    sa.UniqueConstraint('name', name=op.f('uq_scripts_name'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=128), nullable=False),
    sa.Column('password_hash', sa.String(length=256), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_tokens_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_sha256', name=op.f('uq_api_tokens_token_sha256'))
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_user_id'), ['user_id'], unique=False)

    op.create_table('profiles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('script_id', sa.Integer(), nullable=False),
    sa.Column('renew_before_days', sa.Integer(), nullable=True),
    sa.Column('renew_before_percent', sa.Float(), nullable=True),
    sa.Column('warning_days', sa.JSON(), nullable=False),
    sa.Column('default_key', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['script_id'], ['scripts.id'], name=op.f('fk_profiles_script_id_scripts'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_profiles')),
    sa.UniqueConstraint('name', name=op.f('uq_profiles_name'))
    )
    with op.batch_alter_table('profiles', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_profiles_script_id'), ['script_id'], unique=False)

    op.create_table('certificates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('profile_id', sa.Integer(), nullable=False),
    sa.Column('subject', sa.JSON(), nullable=False),
    sa.Column('subject_alt_names', sa.JSON(), nullable=False),
    sa.Column('key_spec', sa.String(length=16), nullable=False),
    sa.Column('hsm_group', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['profile_id'], ['profiles.id'], name=op.f('fk_certificates_profile_id_profiles'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_certificates')),
    sa.UniqueConstraint('name', name=op.f('uq_certificates_name'))
    )
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_certificates_profile_id'), ['profile_id'], unique=False)

    op.create_table('profile_params',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('profile_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('value', sa.Text(), nullable=True),
    sa.Column('value_sealed', sa.LargeBinary(), nullable=True),
    sa.Column('sensitive', sa.Boolean(), nullable=False),
    sa.Column('dynamic', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['profile_id'], ['profiles.id'], name=op.f('fk_profile_params_profile_id_profiles'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_profile_params')),
    sa.UniqueConstraint('profile_id', 'name', name=op.f('uq_profile_params_profile_id'))
    )
    op.create_table('certificate_params',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('certificate_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('value', sa.Text(), nullable=True),
    sa.Column('value_sealed', sa.LargeBinary(), nullable=True),
    sa.Column('sensitive', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['certificate_id'], ['certificates.id'], name=op.f('fk_certificate_params_certificate_id_certificates'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_certificate_params')),
    sa.UniqueConstraint('certificate_id', 'name', name=op.f('uq_certificate_params_certificate_id'))
    )
    op.create_table('keys',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('certificate_id', sa.Integer(), nullable=False),
    sa.Column('backend', sa.String(length=16), nullable=False),
    sa.Column('key_spec', sa.String(length=16), nullable=False),
    sa.Column('private_key_sealed', sa.LargeBinary(), nullable=True),
    sa.Column('hsm_group_id', sa.String(length=32), nullable=True),
    sa.Column('pkcs11_label', sa.String(length=128), nullable=True),
    sa.Column('pkcs11_id', sa.String(length=64), nullable=True),
    sa.Column('public_key_sha256', sa.String(length=64), nullable=False),
    sa.Column('csr_pem', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('destroyed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['certificate_id'], ['certificates.id'], name=op.f('fk_keys_certificate_id_certificates'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['hsm_group_id'], ['hsm_groups.id'], name=op.f('fk_keys_hsm_group_id_hsm_groups'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_keys'))
    )
    with op.batch_alter_table('keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_keys_certificate_id'), ['certificate_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_keys_hsm_group_id'), ['hsm_group_id'], unique=False)

    op.create_table('attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('certificate_id', sa.Integer(), nullable=False),
    sa.Column('key_id', sa.String(length=32), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('worker', sa.String(length=128), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('output', sa.Text(), nullable=True),
    sa.Column('revision_number', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['certificate_id'], ['certificates.id'], name=op.f('fk_attempts_certificate_id_certificates'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['key_id'], ['keys.id'], name=op.f('fk_attempts_key_id_keys'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attempts'))
    )
    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.create_index('ix_attempts_certificate_started', ['certificate_id', 'started_at'], unique=False)

    op.create_table('revisions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('certificate_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('key_id', sa.String(length=32), nullable=False),
    sa.Column('leaf_pem', sa.Text(), nullable=False),
    sa.Column('chain_pem', sa.Text(), nullable=False),
    sa.Column('csr_pem', sa.Text(), nullable=False),
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('fingerprint_sha256', sa.String(length=64), nullable=False),
    sa.Column('public_key_sha256', sa.String(length=64), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['certificate_id'], ['certificates.id'], name=op.f('fk_revisions_certificate_id_certificates'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['key_id'], ['keys.id'], name=op.f('fk_revisions_key_id_keys'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_revisions')),
    sa.UniqueConstraint('certificate_id', 'number', name=op.f('uq_revisions_certificate_id')),
    sa.UniqueConstraint('key_id', name=op.f('uq_revisions_key_id'))
    )
    with op.batch_alter_table('revisions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_revisions_not_after'), ['not_after'], unique=False)

    op.create_table('certificate_status',
    sa.Column('certificate_id', sa.Integer(), nullable=False),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('current_revision_id', sa.Integer(), nullable=True),
    sa.Column('pending_key_id', sa.String(length=32), nullable=True),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('next_action_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('retry_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('renewal_requested', sa.Boolean(), nullable=False),
    sa.Column('warned_days', sa.JSON(), nullable=False),
    sa.Column('expired_event_recorded', sa.Boolean(), nullable=False),
    sa.Column('deferred_cookie_sealed', sa.LargeBinary(), nullable=True),
    sa.Column('lease_owner', sa.String(length=128), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['certificate_id'], ['certificates.id'], name=op.f('fk_certificate_status_certificate_id_certificates'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['current_revision_id'], ['revisions.id'], name=op.f('fk_certificate_status_current_revision_id_revisions'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['pending_key_id'], ['keys.id'], name=op.f('fk_certificate_status_pending_key_id_keys'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('certificate_id', name=op.f('pk_certificate_status'))
    )
    with op.batch_alter_table('certificate_status', schema=None) as batch_op:
        batch_op.create_index('ix_certificate_status_lease_expires_at', ['lease_expires_at'], unique=False)
        batch_op.create_index('ix_certificate_status_next_action_at', ['next_action_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('certificate_status', schema=None) as batch_op:
        batch_op.drop_index('ix_certificate_status_next_action_at')
        batch_op.drop_index('ix_certificate_status_lease_expires_at')

    op.drop_table('certificate_status')
    with op.batch_alter_table('revisions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_revisions_not_after'))

    op.drop_table('revisions')
    with op.batch_alter_table('attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_attempts_certificate_started')

    op.drop_table('attempts')
    with op.batch_alter_table('keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_keys_hsm_group_id'))
        batch_op.drop_index(batch_op.f('ix_keys_certificate_id'))

    op.drop_table('keys')
    op.drop_table('certificate_params')
    op.drop_table('profile_params')
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_certificates_profile_id'))

    op.drop_table('certificates')
    with op.batch_alter_table('profiles', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_profiles_script_id'))

    op.drop_table('profiles')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_user_id'))

    op.drop_table('api_tokens')
    op.drop_table('users')
    op.drop_table('scripts')
    with op.batch_alter_table('loop_heartbeats', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_loop_heartbeats_last_pass_at'))

    op.drop_table('loop_heartbeats')
    op.drop_table('hsm_groups')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_object')
        batch_op.drop_index(batch_op.f('ix_events_kind'))
        batch_op.drop_index(batch_op.f('ix_events_at'))

    op.drop_table('events')
