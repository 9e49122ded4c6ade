"""Pydantic models of the API: what clients send and what they get back.

Objects are written as they are read: input models ignore unknown fields, so a
client that sends back a whole object it read (status, timestamps…) never gets
an error for fields it may not set.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from certpilot.domain.model import DEFAULT_CONCURRENCY

Name = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
GrantedPath = Annotated[str, Field(min_length=1, max_length=4096)]


def _reject_nul(value: Any) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text must not contain NUL characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_nul(key)
            _reject_nul(item)
    elif isinstance(value, list):
        for item in value:
            _reject_nul(item)


class Lenient(BaseModel):
    """Input: unknown fields are ignored; no text may hold a NUL (no database stores one)."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        _reject_nul(data)
        return data


# --- scripts -----------------------------------------------------------------


class ScriptIn(Lenient):
    name: str = Name
    source: str = Field(max_length=1024 * 1024)
    timeout_s: int = Field(default=60, ge=1, le=3600)


class ScriptUpdate(Lenient):
    source: str = Field(max_length=1024 * 1024)
    timeout_s: int = Field(default=60, ge=1, le=3600)


class ScriptOut(BaseModel):
    name: str
    kind: str
    sha256: str
    timeout_s: int
    source: str
    created_at: str
    updated_at: str


# --- profiles ----------------------------------------------------------------


class ParamIn(Lenient):
    name: str = Field(min_length=1, max_length=128)
    value: str | None = Field(default=None, max_length=16 * 1024, description='"***" keeps a stored sensitive value')
    sensitive: bool = False
    dynamic: bool = False


class ProfileUpdate(Lenient):
    script: str = Field(min_length=1, max_length=128)
    params: list[ParamIn] = Field(default_factory=list, max_length=64)
    renew_before_days: int | None = Field(default=None, ge=1, le=3650)
    renew_before_percent: float | None = Field(default=None, gt=0, lt=100)
    warning_days: list[int] | None = Field(default=None, max_length=16)
    default_key: str = "ec:p256"
    concurrency: int = Field(default=DEFAULT_CONCURRENCY, ge=1, le=256,
                             description="most calls in flight to this profile's CA, per controller process")
    allow_read: list[GrantedPath] = Field(default_factory=list, max_length=64,
                                          description="absolute paths the script may read")
    allow_write: list[GrantedPath] = Field(default_factory=list, max_length=64,
                                           description="absolute paths the script may read and write")
    max_pending_days: int | None = Field(default=None, ge=1, le=365,
                                         description="days a deferred request may wait for the CA before it "
                                                     "fails (default 30; on update, unset keeps it)")
    deploy_root: str | None = Field(default=None, max_length=4096, description=(
        "absolute directory: each new revision is written to DEPLOY_ROOT/<certificate>/ (cert.pem, chain.pem, "
        "fullchain.pem, key.pem), never through a symlink"))
    deploy_command: str | None = Field(default=None, max_length=4096, description=(
        "run after the files are in place; split like a shell would, no shell; 60 s timeout"))
    deploy_owner: str | None = Field(default=None, max_length=256, description="USER[:GROUP] owning the files")
    notify_url: str | None = Field(default=None, max_length=2048, description=(
        "webhook receiving a JSON POST on failures and expiry; write-only (read as \"***\", which keeps it)"))
    notify_email: str | None = Field(default=None, max_length=320, description="mail failures and expiry here")


class ProfileIn(ProfileUpdate):
    name: str = Name


class ScriptStateOut(BaseModel):
    """A profile's script state (`context.state`): its keys only, never the values."""

    profile: str
    keys: list[str]


class ParamOut(BaseModel):
    name: str
    value: str | None
    sensitive: bool
    dynamic: bool


class ProfileOut(BaseModel):
    name: str
    script: str
    params: list[ParamOut]
    renew_before_days: int | None
    renew_before_percent: float | None
    warning_days: list[int]
    max_pending_days: int = 30
    default_key: str
    concurrency: int
    allow_read: list[str]
    allow_write: list[str]
    deploy_root: str | None = None
    deploy_command: str | None = None
    deploy_owner: str | None = None
    notify_url: str | None = None
    notify_email: str | None = None
    created_at: str
    updated_at: str


# --- certificates --------------------------------------------------------------


class SubjectModel(Lenient):
    common_name: str = Field(min_length=1, max_length=64)
    organization: str | None = Field(default=None, max_length=64)
    organizational_unit: str | None = Field(default=None, max_length=64)
    locality: str | None = Field(default=None, max_length=128)
    state: str | None = Field(default=None, max_length=128)
    country: str | None = Field(default=None, max_length=8)
    email_address: str | None = Field(default=None, max_length=128)


class SpecIn(Lenient):
    profile: str = Field(min_length=1, max_length=128)
    subject: SubjectModel
    subject_alt_names: list[str] = Field(default_factory=list, max_length=100)
    key: str | None = None
    hsm_group: str | None = None
    dynamic_params: dict[str, str] = Field(default_factory=dict, description='"***" keeps a stored sensitive value')


class CertificateIn(Lenient):
    name: str = Name
    spec: SpecIn


class CertificateUpdate(Lenient):
    spec: SpecIn


class SubjectOut(BaseModel):
    """A subject as read: the input model's checks (length, NUL) held when it was written."""

    common_name: str
    organization: str | None = None
    organizational_unit: str | None = None
    locality: str | None = None
    state: str | None = None
    country: str | None = None
    email_address: str | None = None


class SpecOut(BaseModel):
    profile: str
    subject: SubjectOut
    subject_alt_names: list[str]
    key: str
    hsm_group: str | None
    dynamic_params: dict[str, str]


class AwaitingCaOut(BaseModel):
    """Deferred issuance: the CA accepted the request and has not issued yet."""

    since: str
    next_poll_at: str | None
    polls: int


class RenewalInfoOut(BaseModel):
    """The CA's suggested renewal window (ACME Renewal Information, RFC 9773); the window is
    null when the CA suggests none, `error` the last check's when it failed."""

    window_start: str | None
    window_end: str | None
    checked_at: str | None
    next_check_at: str | None
    explanation_url: str | None = None
    error: str | None = None


class StatusOut(BaseModel):
    phase: str
    revision: int | None
    serial: str | None
    not_before: str | None
    not_after: str | None
    fingerprint_sha256: str | None
    expiry_status: str | None
    renew_at: str | None
    next_action_at: str | None
    failures: int
    last_error: str | None
    awaiting_ca: AwaitingCaOut | None = None
    deployed_revision: int | None = None
    deploy_error: str | None = None
    renewal_info: RenewalInfoOut | None = None


class CertificateOut(BaseModel):
    name: str
    spec: SpecOut
    status: StatusOut


class RevisionOut(BaseModel):
    revision: int
    serial: str
    not_before: str
    not_after: str
    fingerprint_sha256: str
    public_key_sha256: str
    issued_at: str
    current: bool


class AttemptOut(BaseModel):
    id: int
    kind: str
    started_at: str
    finished_at: str | None
    outcome: str | None
    duration_ms: int | None
    error: str | None
    output: str | None
    revision: int | None


class DeploymentOut(BaseModel):
    id: int
    revision: int
    directory: str
    started_at: str
    finished_at: str | None
    outcome: str | None = Field(
        description='"deployed", "failed", "interrupted" (its worker died), or null while it runs')
    error: str | None
    output: str | None = Field(description="the deploy command's last 4 KiB, secrets replaced by ***")


class ExportIn(Lenient):
    format: Literal["pem", "pkcs12"] = "pem"
    include_key: bool = True
    password: str | None = Field(default=None, max_length=256, description="PKCS#12 password")
    no_password: bool = Field(default=False, description="PKCS#12 with the key and no password: must be said")


class ExportOut(BaseModel):
    revision: int
    certificate: str
    chain: str
    fullchain: str
    private_key: str | None = None
    pkcs12_base64: str | None = None


# --- events, users, tokens ---------------------------------------------------


class EventOut(BaseModel):
    id: int
    at: str
    actor: str
    kind: str
    object_type: str
    object: str
    details: dict[str, object]


class UserIn(Lenient):
    username: str = Name
    role: Literal["admin", "operator", "viewer"]
    password: str = Field(min_length=12, max_length=1024)


class UserOut(BaseModel):
    username: str
    role: str
    created_at: str
    disabled: bool


class TokenIn(Lenient):
    name: str = Field(default="api", min_length=1, max_length=128)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)
    role: Literal["admin", "operator", "viewer"] | None = Field(
        default=None, description="at most the caller's role (a token made with a token: at most that token's)")


class PasswordIn(Lenient):
    password: str = Field(min_length=12, max_length=1024)


class LoggedOutOut(BaseModel):
    sessions_ended: int
    tokens_revoked: int


class TokenOut(BaseModel):
    id: int
    username: str
    name: str
    prefix: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None
    parent_id: int | None = None
    role: str | None = None


class NewTokenOut(TokenOut):
    token: str = Field(description="Shown once; only its hash is stored")


# --- HSM groups --------------------------------------------------------------


class HsmGroupIn(Lenient):
    name: str = Name
    module_path: str = Field(min_length=1, max_length=1024)
    token_label: str = Field(min_length=1, max_length=32)
    pin: str = Field(min_length=1, max_length=256, description="write-only; responses show ***")
    module_env: dict[str, str] = Field(
        default_factory=dict, description="what the PKCS#11 module reads from the environment, e.g. SOFTHSM2_CONF")


class HsmGroupOut(BaseModel):
    name: str
    module_path: str
    token_label: str
    module_env: dict[str, str]
    pin: str
    created_at: str
    updated_at: str


class HsmCheckOut(BaseModel):
    label: str
    manufacturer: str
    model: str
    serial: str
    mechanisms: int
