"""Frozen domain values: what a script, a profile, a certificate and its history are.

Constructors validate through the `parse_*` / `make_*` functions, which raise
`InvalidInput` with the offending field named; deeper code trusts these types.
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from certpilot.domain.errors import InvalidInput

SENSITIVE_MASK = "***"
DEFAULT_WARNING_DAYS: tuple[int, ...] = (30, 7, 1)
DEFAULT_SCRIPT_TIMEOUT_S = 60
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


class Phase(str, enum.Enum):
    PENDING = "pending"
    ISSUED = "issued"
    RENEWING = "renewing"
    DEFERRED = "deferred"
    FAILED = "failed"
    EXPIRED = "expired"


class ExpiryStatus(str, enum.Enum):
    GOOD = "good"
    WARNING = "warning"
    EXPIRED = "expired"


class Outcome(str, enum.Enum):
    ISSUED = "issued"
    FAILED = "failed"
    DEFERRED = "deferred"
    TIMEOUT = "timeout"
    INVALID = "invalid"


class EventKind(str, enum.Enum):
    CERT_REQUESTED = "CERT_REQUESTED"
    CERT_ISSUED = "CERT_ISSUED"
    CERT_ISSUE_FAILED = "CERT_ISSUE_FAILED"
    CERT_RENEWAL_REQUESTED = "CERT_RENEWAL_REQUESTED"
    CERT_RENEWED = "CERT_RENEWED"
    CERT_RENEW_FAILED = "CERT_RENEW_FAILED"
    CERT_DEFERRED = "CERT_DEFERRED"  # the CA accepted the request and will answer later
    CERT_EXPIRING = "CERT_EXPIRING"
    CERT_EXPIRED = "CERT_EXPIRED"
    CERT_DELETED = "CERT_DELETED"
    CERT_UPDATED = "CERT_UPDATED"
    KEY_EXPORTED = "KEY_EXPORTED"
    PROFILE_CHANGED = "PROFILE_CHANGED"
    SCRIPT_CHANGED = "SCRIPT_CHANGED"
    LOGIN_FAILED = "LOGIN_FAILED"
    USER_CHANGED = "USER_CHANGED"
    HSM_GROUP_CHANGED = "HSM_GROUP_CHANGED"
    TOKEN_CREATED = "TOKEN_CREATED"
    TOKEN_REVOKED = "TOKEN_REVOKED"
    CERT_DEPLOYED = "CERT_DEPLOYED"
    CERT_DEPLOY_FAILED = "CERT_DEPLOY_FAILED"
    NOTIFICATION_DROPPED = "NOTIFICATION_DROPPED"
    CERT_DEFERRAL_OVERDUE = "CERT_DEFERRAL_OVERDUE"  # the CA has kept a request waiting for over a day


def check_name(value: str, what: str) -> str:
    """An object name: letters, digits, '.', '_' and '-', at most 128 characters."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise InvalidInput(
            f"{what} name {value!r} is not valid: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            field="name",
        )
    return value


# --- keys -------------------------------------------------------------------

_RSA_SIZES = (2048, 3072, 4096)
_EC_CURVES = ("p256", "p384", "p521")


@dataclass(frozen=True)
class KeySpec:
    """`rsa:2048|3072|4096` or `ec:p256|p384|p521`."""

    algorithm: str  # "rsa" or "ec"
    size: int | None = None  # RSA modulus bits
    curve: str | None = None  # EC curve short name

    def __str__(self) -> str:
        return f"rsa:{self.size}" if self.algorithm == "rsa" else f"ec:{self.curve}"

    @classmethod
    def parse(cls, text: str) -> KeySpec:
        algorithm, _, param = (text or "").strip().lower().partition(":")
        if algorithm == "rsa" and param in {str(s) for s in _RSA_SIZES}:
            return cls("rsa", size=int(param))
        if algorithm == "ec" and param in _EC_CURVES:
            return cls("ec", curve=param)
        raise InvalidInput(
            f"key spec {text!r} is not supported: use one of "
            + ", ".join([f"rsa:{s}" for s in _RSA_SIZES] + [f"ec:{c}" for c in _EC_CURVES]),
            field="key",
        )


DEFAULT_KEY_SPEC = KeySpec("ec", curve="p256")


# --- subject and names ------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    common_name: str
    organization: str | None = None
    organizational_unit: str | None = None
    locality: str | None = None
    state: str | None = None
    country: str | None = None
    email_address: str | None = None

    FIELDS = (
        "common_name",
        "organization",
        "organizational_unit",
        "locality",
        "state",
        "country",
        "email_address",
    )

    def as_dict(self) -> dict[str, str | None]:
        return {f: getattr(self, f) for f in self.FIELDS}


_DNS_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def is_dns_name(value: str) -> bool:
    """A host name, optionally with one leading wildcard label (`*.example.com`)."""
    name = value[2:] if value.startswith("*.") else value
    if not name or len(value) > 253:
        return False
    name = name[:-1] if name.endswith(".") else name  # one trailing dot: the root
    return all(_DNS_LABEL_RE.fullmatch(label) for label in name.split("."))


def _is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# Unicode bidirectional controls: they make a name display in another order than it is
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def make_subject(
    common_name: str,
    organization: str | None = None,
    organizational_unit: str | None = None,
    locality: str | None = None,
    state: str | None = None,
    country: str | None = None,
    email_address: str | None = None,
) -> Subject:
    """A validated subject; empty strings count as absent."""

    def clean(value: str | None, field_name: str, max_len: int = 64) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            return None
        if len(value) > max_len:
            raise InvalidInput(
                f"{field_name} is longer than {max_len} characters", field=field_name
            )
        if any(unicodedata.category(ch) == "Cc" for ch in value):
            raise InvalidInput(f"{field_name} contains control characters", field=field_name)
        if any(ch in BIDI_CONTROLS for ch in value):  # text that reads otherwise than it is
            raise InvalidInput(f"{field_name} contains bidirectional control characters (such as the "
                               "right-to-left override)", field=field_name)
        return value

    cn = clean(common_name, "common_name")
    if cn is None:
        raise InvalidInput("common_name is required", field="common_name")
    if not (is_dns_name(cn) or _is_ip_address(cn)):
        raise InvalidInput(
            f"common_name {cn!r} is neither a DNS name (letters, digits, '-' and dots; '*.' in front "
            "for a wildcard) nor an IP address",
            field="common_name",
        )
    c = clean(country, "country")
    if c is not None:
        if not (len(c) == 2 and c.isascii() and c.isalpha()):
            raise InvalidInput(
                f"country {country!r} must be a two-letter ISO 3166 code such as 'DE' or 'US'",
                field="country",
            )
        c = c.upper()
    email = clean(email_address, "email_address", max_len=128)
    if email is not None and not (email.isascii() and _EMAIL_RE.fullmatch(email)):
        raise InvalidInput(f"email_address {email!r} is not an e-mail address", field="email_address")
    return Subject(
        common_name=cn,
        organization=clean(organization, "organization"),
        organizational_unit=clean(organizational_unit, "organizational_unit"),
        locality=clean(locality, "locality", max_len=128),
        state=clean(state, "state", max_len=128),
        country=c,
        email_address=email,
    )


class SanKind(str, enum.Enum):
    DNS = "DNS"
    IP = "IP"
    EMAIL = "EMAIL"
    URI = "URI"


@dataclass(frozen=True, order=True)
class SubjectAltName:
    kind: SanKind
    value: str

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.value}"

    @classmethod
    def parse(cls, text: str) -> SubjectAltName:
        """`DNS:host`, `IP:addr`, `EMAIL:a@b`, `URI:scheme://…`; a bare value is guessed
        (an IP address, an e-mail address, a URI with a scheme, else a DNS name)."""
        raw = (text or "").strip()
        prefix, sep, rest = raw.partition(":")
        kind_by_prefix = {"dns": SanKind.DNS, "ip": SanKind.IP, "email": SanKind.EMAIL, "uri": SanKind.URI}
        if sep and prefix.lower() in kind_by_prefix:
            kind, value = kind_by_prefix[prefix.lower()], rest.strip()
        else:
            kind, value = _guess_san_kind(raw), raw
        return cls(kind, _check_san_value(kind, value, raw))

    @classmethod
    def stored(cls, text: str) -> SubjectAltName:
        """A SAN as the store keeps it (`str()` of one `parse` made): checked when it was
        written, so read back without checking again."""
        kind, _, value = text.partition(":")
        return cls(SanKind(kind), value)


def _guess_san_kind(value: str) -> SanKind:
    try:
        ipaddress.ip_address(value)
        return SanKind.IP
    except ValueError:
        pass
    if "@" in value and "://" not in value:
        return SanKind.EMAIL
    if "://" in value:
        return SanKind.URI
    return SanKind.DNS


def _check_san_value(kind: SanKind, value: str, raw: str) -> str:
    bad = InvalidInput(f"subject alternative name {raw!r} is not a valid {kind.value} name", field="subject_alt_names")
    if kind is SanKind.DNS:
        if not is_dns_name(value):
            raise bad
        return value.lower().rstrip(".")
    if kind is SanKind.IP:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise bad from None
    if kind is SanKind.EMAIL:
        if not (value.isascii() and _EMAIL_RE.fullmatch(value)):  # IA5String: ASCII only
            raise bad
        return value
    parts = urlsplit(value)
    if not value.isascii() or not parts.scheme or not (parts.netloc or parts.path) or any(
        c.isspace() or unicodedata.category(c) == "Cc" for c in value
    ):
        raise bad
    return value


def make_sans(common_name: str, sans: list[str] | tuple[str, ...], add_cn: bool = True) -> tuple[SubjectAltName, ...]:
    """Parsed, de-duplicated SANs in the order given; the CN first as a DNS name
    (or IP) when it is one and `add_cn` is set."""
    result: list[SubjectAltName] = []
    if add_cn:
        try:
            ipaddress.ip_address(common_name)
            result.append(SubjectAltName(SanKind.IP, str(ipaddress.ip_address(common_name))))
        except ValueError:
            if is_dns_name(common_name):
                result.append(SubjectAltName(SanKind.DNS, common_name.lower().rstrip(".")))
    for text in sans:
        san = SubjectAltName.parse(text)
        if san not in result:
            result.append(san)
    return tuple(result)


# --- scripts and profiles ---------------------------------------------------


@dataclass(frozen=True)
class Script:
    name: str
    kind: str
    source: str
    sha256: str
    timeout_s: int
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class ProfileParam:
    """One profile parameter. `value` is None for a dynamic one; a sensitive value is
    clear text only inside the service layer, never past an edge."""

    name: str
    value: str | None
    sensitive: bool = False
    dynamic: bool = False


DEFAULT_MAX_PENDING_DAYS = 30


@dataclass(frozen=True)
class RenewalSettings:
    """`max_pending_days`: how long a deferred request may wait for its CA before it fails."""

    renew_before_days: int | None = None
    renew_before_percent: float | None = None
    warning_days: tuple[int, ...] = DEFAULT_WARNING_DAYS
    max_pending_days: int = DEFAULT_MAX_PENDING_DAYS


DEFAULT_CONCURRENCY = 16


@dataclass(frozen=True)
class SandboxSettings:
    """How the profile's script runs: calls in flight at once (per controller process),
    and the absolute paths it may read or write besides its own temporary directory."""

    concurrency: int = DEFAULT_CONCURRENCY
    allow_read: tuple[str, ...] = ()
    allow_write: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeploySettings:
    """Where the controller writes each new revision (`root`/<certificate>/), the command it
    runs afterwards, and who owns the files (`USER[:GROUP]`); all None: no deployment."""

    root: str | None = None
    command: str | None = None
    owner: str | None = None


@dataclass(frozen=True)
class NotifySettings:
    """Who hears about failures and expiry: a webhook URL (a credential: sealed at rest,
    shown masked) and an e-mail address."""

    url: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    script: str
    params: tuple[ProfileParam, ...]
    renewal: RenewalSettings
    default_key: KeySpec
    created_at: dt.datetime
    updated_at: dt.datetime
    sandbox: SandboxSettings = field(default_factory=lambda: SandboxSettings())
    deploy: DeploySettings = field(default_factory=lambda: DeploySettings())
    notify: NotifySettings = field(default_factory=lambda: NotifySettings())

    def dynamic_params(self) -> tuple[ProfileParam, ...]:
        return tuple(p for p in self.params if p.dynamic)


# --- certificates -----------------------------------------------------------


@dataclass(frozen=True)
class CertificateSpec:
    profile: str
    subject: Subject
    subject_alt_names: tuple[SubjectAltName, ...]
    key: KeySpec = DEFAULT_KEY_SPEC
    hsm_group: str | None = None
    dynamic_params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CertificateStatus:
    phase: Phase
    revision: int | None = None
    serial: str | None = None
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    fingerprint_sha256: str | None = None
    expiry_status: ExpiryStatus | None = None
    renew_at: dt.datetime | None = None
    next_action_at: dt.datetime | None = None
    failures: int = 0
    last_error: str | None = None
    last_attempt_at: dt.datetime | None = None
    # awaiting the CA (deferred issuance): since when, the next poll, polls so far
    deferred_since: dt.datetime | None = None
    next_poll_at: dt.datetime | None = None
    deferred_polls: int = 0
    deployed_revision: int | None = None
    deploy_error: str | None = None
    renewal_info: RenewalInfoStatus | None = None  # set when the script asks the CA (RFC 9773)


@dataclass(frozen=True)
class RenewalInfoStatus:
    """The CA's suggested renewal window for the served revision (ACME Renewal Information,
    RFC 9773): the window (None: the CA offers none), when it was asked and when it is asked
    next, the CA's explanation page, and the last check's error."""

    window_start: dt.datetime | None = None
    window_end: dt.datetime | None = None
    checked_at: dt.datetime | None = None
    next_check_at: dt.datetime | None = None
    explanation_url: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Certificate:
    name: str
    spec: CertificateSpec
    status: CertificateStatus
    sensitive_params: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Revision:
    revision: int
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint_sha256: str
    public_key_sha256: str
    leaf_pem: str
    chain_pem: str
    csr_pem: str
    key_id: str
    issued_at: dt.datetime


@dataclass(frozen=True)
class Attempt:
    id: int
    kind: str  # "issue" or "renew"
    started_at: dt.datetime
    finished_at: dt.datetime | None
    outcome: Outcome | None
    duration_ms: int | None
    error: str | None
    output: str | None
    revision: int | None


@dataclass(frozen=True)
class Event:
    id: int
    at: dt.datetime
    actor: str
    kind: str
    object_type: str
    object_name: str
    details: Mapping[str, object]


# --- users ------------------------------------------------------------------


class Role(str, enum.Enum):
    """Each role may do what the roles below it may."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        order = (Role.VIEWER, Role.OPERATOR, Role.ADMIN)
        return order.index(self) >= order.index(needed)


@dataclass(frozen=True)
class Principal:
    """Who is acting: a user, through a token, a web session or the local CLI."""

    username: str
    role: Role
    via: str  # "token:<name>", "session", "cli"
    token_id: int | None = None  # the API token it came with, if any (a token made with it is its child)

    @property
    def actor(self) -> str:
        return f"{self.username} ({self.via})"


@dataclass(frozen=True)
class User:
    username: str
    role: Role
    created_at: dt.datetime
    disabled: bool


@dataclass(frozen=True)
class ApiToken:
    id: int
    username: str
    name: str
    prefix: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    parent_id: int | None = None  # the token it was made with (it dies with it)
    role: Role | None = None  # at most the user's role; None: the user's role


@dataclass(frozen=True)
class HsmGroup:
    """A PKCS#11 token certpilot makes keys in; the PIN never leaves the service layer.
    `module_env`: the environment its module reads when it is loaded (e.g. SOFTHSM2_CONF)."""

    name: str
    module_path: str
    token_label: str
    created_at: dt.datetime
    updated_at: dt.datetime
    module_env: Mapping[str, str] = field(default_factory=dict)


ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Variables that change how certpilot itself or its interpreter runs, not what a module reads
_RESERVED_ENV = re.compile(r"^(CERTPILOT_|PYTHON|LD_)|^(PATH|HOME|TMPDIR)$")


def check_module_env(env: Mapping[str, str]) -> dict[str, str]:
    """A PKCS#11 module's environment, checked: names of letters, digits and `_`, not
    certpilot's own, the interpreter's or the dynamic linker's; values of one line."""
    checked: dict[str, str] = {}
    for name, value in env.items():
        if not ENV_NAME_RE.match(name):
            raise InvalidInput(f"environment variable name {name!r} is not valid: letters, digits and _",
                               field="module_env")
        if _RESERVED_ENV.search(name):
            raise InvalidInput(f"environment variable {name} cannot be set for a PKCS#11 module: it changes "
                               "how certpilot runs, not what the module reads", field="module_env")
        if "\x00" in value or "\n" in value or len(value) > 4096:
            raise InvalidInput(f"the value of {name} must be one line of at most 4096 characters",
                               field="module_env")
        checked[name] = value
    if len(checked) > 32:
        raise InvalidInput("at most 32 environment variables per HSM group", field="module_env")
    return checked
