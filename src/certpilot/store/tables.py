"""The schema (DESIGN §4). Spec and status of a certificate live in separate tables.

Columns ending in `_sealed` hold AES-GCM ciphertext (see `keys.sealing`); the
associated data is the row's identity, built by the repositories.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC in Python on both SQLite and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value: dt.datetime | None, dialect: object) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ScriptRow(Base):
    __tablename__ = "scripts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="python")
    source: Mapped[str] = mapped_column(Text, deferred=True)  # not loaded with every profile
    sha256: Mapped[str] = mapped_column(String(64))
    timeout_s: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ProfileRow(Base):
    __tablename__ = "profiles"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    script_id: Mapped[int] = mapped_column(ForeignKey("scripts.id", ondelete="RESTRICT"), index=True)
    renew_before_days: Mapped[int | None] = mapped_column(Integer)
    renew_before_percent: Mapped[float | None] = mapped_column(Float)
    warning_days: Mapped[list[int]] = mapped_column(JSON)
    default_key: Mapped[str] = mapped_column(String(16))
    # the script sandbox (migration 0002): server defaults give rows made before it the defaults
    concurrency: Mapped[int] = mapped_column(Integer, server_default="16")
    allow_read: Mapped[list[str]] = mapped_column(JSON, server_default="[]")
    allow_write: Mapped[list[str]] = mapped_column(JSON, server_default="[]")
    # deployment and notifications (migration 0005); the webhook URL is a credential: sealed
    deploy_root: Mapped[str | None] = mapped_column(String(4096))
    deploy_command: Mapped[str | None] = mapped_column(Text)
    deploy_owner: Mapped[str | None] = mapped_column(String(256))
    notify_url_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    notify_email: Mapped[str | None] = mapped_column(String(320))
    max_pending_days: Mapped[int] = mapped_column(Integer, server_default="30")  # migration 0006
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    script: Mapped[ScriptRow] = relationship(lazy="joined")
    params: Mapped[list[ProfileParamRow]] = relationship(
        order_by="ProfileParamRow.position", cascade="all, delete-orphan", lazy="select"
    )  # loaded when a profile is read whole, not with every certificate that uses it


class ProfileParamRow(Base):
    __tablename__ = "profile_params"
    __table_args__ = (UniqueConstraint("profile_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid hex, part of the sealing identity
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[str | None] = mapped_column(Text)  # clear text: only for non-sensitive params
    value_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    dynamic: Mapped[bool] = mapped_column(Boolean, default=False)


class ProfileStateRow(Base):
    """One key of a profile's script state (`context.state`); the value is sealed under the
    profile's id and the key (migration 0006)."""

    __tablename__ = "profile_state"
    __table_args__ = (UniqueConstraint("profile_id", "key"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid hex
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(256))
    value_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)  # bytes of key and value, for the 64 KiB bound
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class CertificateRow(Base):
    """The spec: what the user asked for."""

    __tablename__ = "certificates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id", ondelete="RESTRICT"), index=True)
    subject: Mapped[dict[str, str | None]] = mapped_column(JSON)
    subject_alt_names: Mapped[list[str]] = mapped_column(JSON)
    key_spec: Mapped[str] = mapped_column(String(16))
    hsm_group: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    profile: Mapped[ProfileRow] = relationship(lazy="joined")
    status: Mapped[CertificateStatusRow] = relationship(
        back_populates="certificate", cascade="all, delete-orphan", lazy="joined", uselist=False
    )
    dynamic_params: Mapped[list[DynamicParamRow]] = relationship(cascade="all, delete-orphan", lazy="select")


class DynamicParamRow(Base):
    __tablename__ = "certificate_params"
    __table_args__ = (UniqueConstraint("certificate_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificates.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[str | None] = mapped_column(Text)
    value_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)


class CertificateStatusRow(Base):
    """The status: what the controller observed and plans; written only by the controller."""

    __tablename__ = "certificate_status"
    __table_args__ = (
        Index("ix_certificate_status_next_action_at", "next_action_at"),
        Index("ix_certificate_status_lease_expires_at", "lease_expires_at"),  # the loop's "next lease to expire"
    )
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificates.id", ondelete="CASCADE"), primary_key=True)
    phase: Mapped[str] = mapped_column(String(16))
    current_revision_id: Mapped[int | None] = mapped_column(
        ForeignKey("revisions.id", ondelete="SET NULL")
    )
    pending_key_id: Mapped[str | None] = mapped_column(ForeignKey("keys.id", ondelete="SET NULL"))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    next_action_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # when the loop looks next
    retry_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # backoff: no attempt before this
    renewal_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    warned_days: Mapped[list[int]] = mapped_column(JSON, default=list)
    expired_event_recorded: Mapped[bool] = mapped_column(Boolean, default=False)
    deferred_cookie_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    # a deferral (migration 0006): set while the CA holds a request of ours
    deferred_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    deferred_poll_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    deferred_polls: Mapped[int] = mapped_column(Integer, server_default="0")
    # deployment (migration 0005): the revision whose files are in place, the one whose
    # command has run too (deployed), and the deployment's own backoff (never the issuer's)
    deploy_written_revision: Mapped[int | None] = mapped_column(Integer)
    deployed_revision: Mapped[int | None] = mapped_column(Integer)
    deploy_error: Mapped[str | None] = mapped_column(Text)
    deploy_failures: Mapped[int] = mapped_column(Integer, server_default="0")
    deploy_retry_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    deploy_failed_revision: Mapped[int | None] = mapped_column(Integer)  # what failures and retry_at are about
    # ACME Renewal Information, RFC 9773 (migration 0007), about the current revision: the window the
    # CA suggested, the renewal time drawn in it, when it was asked and when it is asked next (None:
    # never: the script has no certificate_renewal_info), the CA's explanation page, the last error
    renewal_info_window_start: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    renewal_info_window_end: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    renewal_info_renew_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    renewal_info_checked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    renewal_info_check_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    renewal_info_explanation_url: Mapped[str | None] = mapped_column(Text)
    renewal_info_error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    certificate: Mapped[CertificateRow] = relationship(back_populates="status")
    current_revision: Mapped[RevisionRow | None] = relationship(
        foreign_keys=[current_revision_id], lazy="joined"
    )


class HsmGroupRow(Base):
    __tablename__ = "hsm_groups"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid hex, part of the PIN's sealing identity
    name: Mapped[str] = mapped_column(String(128), unique=True)
    module_path: Mapped[str] = mapped_column(String(1024))
    token_label: Mapped[str] = mapped_column(String(64))
    pin_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # what the PKCS#11 module reads from the environment when a process loads it (e.g. SOFTHSM2_CONF)
    module_env: Mapped[dict[str, str]] = mapped_column(JSON, server_default="{}", default=dict)


class KeyRow(Base):
    __tablename__ = "keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificates.id", ondelete="CASCADE"), index=True)
    backend: Mapped[str] = mapped_column(String(16))  # "software" or "pkcs11"
    key_spec: Mapped[str] = mapped_column(String(16))
    private_key_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    hsm_group_id: Mapped[str | None] = mapped_column(ForeignKey("hsm_groups.id", ondelete="RESTRICT"), index=True)
    pkcs11_label: Mapped[str | None] = mapped_column(String(128))
    pkcs11_id: Mapped[str | None] = mapped_column(String(64))  # CKA_ID, hex
    public_key_sha256: Mapped[str] = mapped_column(String(64))
    csr_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    destroyed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class RevisionRow(Base):
    __tablename__ = "revisions"
    __table_args__ = (UniqueConstraint("certificate_id", "number"), UniqueConstraint("key_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificates.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    key_id: Mapped[str] = mapped_column(ForeignKey("keys.id", ondelete="RESTRICT"))
    leaf_pem: Mapped[str] = mapped_column(Text)
    chain_pem: Mapped[str] = mapped_column(Text)
    csr_pem: Mapped[str] = mapped_column(Text)
    serial: Mapped[str] = mapped_column(String(64))
    not_before: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    not_after: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    fingerprint_sha256: Mapped[str] = mapped_column(String(64))
    public_key_sha256: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class AttemptRow(Base):
    __tablename__ = "attempts"
    __table_args__ = (Index("ix_attempts_certificate_started", "certificate_id", "started_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificates.id", ondelete="CASCADE"))
    key_id: Mapped[str | None] = mapped_column(ForeignKey("keys.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(16))
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)
    revision_number: Mapped[int | None] = mapped_column(Integer)


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_object", "object_type", "object_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32), index=True)
    object_type: Mapped[str] = mapped_column(String(32))
    object_name: Mapped[str] = mapped_column(String(128))
    details: Mapped[dict[str, object]] = mapped_column(JSON)


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiTokenRow(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)  # the token itself is never stored
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings to tell tokens apart
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # a token made with a token: its parent (it expires no later, carries no more role, dies with it)
    parent_id: Mapped[int | None] = mapped_column(Integer, index=True)
    role: Mapped[str | None] = mapped_column(String(16))  # None: the user's role

    user: Mapped[UserRow] = relationship(lazy="joined")


class WebSessionRow(Base):
    """A web login: the cookie carries a random id whose SHA-256 is stored here, so logging
    out (or a password change, disable, remove) ends it on the server, not only in the browser."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    session_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[UserRow] = relationship(lazy="joined")


class LoopHeartbeatRow(Base):
    """One row per renewal loop: when it last finished a pass (for /metrics and alerts)."""

    __tablename__ = "loop_heartbeats"
    owner: Mapped[str] = mapped_column(String(128), primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_pass_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)


class DeploymentRow(Base):
    """One deployment of a revision to the profile's deploy root (migration 0005)."""

    __tablename__ = "deployments"
    __table_args__ = (Index("ix_deployments_certificate_started", "certificate_id", "started_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificates.id", ondelete="CASCADE"))
    revision_number: Mapped[int] = mapped_column(Integer)
    directory: Mapped[str] = mapped_column(String(4096))
    worker: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(16))  # "deployed", "failed" or "interrupted"
    error: Mapped[str | None] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)  # the command's, bounded and scrubbed


class NotificationRow(Base):
    """The outbox (migration 0005): one row per (event, channel), written in the event's
    transaction, delivered by the renewal loops under a lease, as certificates are."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("event_id", "channel"),
        Index("ix_notifications_due", "delivered_at", "dropped_at", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    profile_id: Mapped[int | None] = mapped_column(ForeignKey("profiles.id", ondelete="SET NULL"), index=True)
    channel: Mapped[str] = mapped_column(String(16))  # "webhook" or "email"; the target is the profile's
    payload: Mapped[dict[str, object]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    dropped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    event: Mapped[EventRow] = relationship(lazy="select")
