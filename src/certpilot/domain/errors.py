"""The one error tree of certpilot, grouped by what the caller can do.

    CertpilotError
    ├── NotFound            the named object does not exist: fix the name
    ├── Conflict            it exists already, or is in use, or is busy: choose another / retry later
    ├── InvalidInput        the request itself is wrong: fix the input (`field` says where)
    ├── IssuerFailed        the issuer script did not give a usable certificate
    │   └── IssuerRetryable     a timeout or a CA-side failure: trying again may work
    ├── KeyBackendError     the key could not be made or used (HSM, master key)
    ├── DeployFailed        the files or the deploy command failed: fix the target; retried with backoff
    └── ConfigurationError  certpilot itself is set up wrongly (data dir, master key)

No HTTP codes here; the edges map these in one place.
"""

from __future__ import annotations


class CertpilotError(Exception):
    """Root of every error certpilot raises on purpose."""


class NotFound(CertpilotError):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} does not exist")
        self.kind = kind
        self.name = name


class Conflict(CertpilotError):
    pass


class InvalidInput(CertpilotError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class IssuerFailed(CertpilotError):
    def __init__(self, message: str, outcome: str = "failed") -> None:
        super().__init__(message)
        self.outcome = outcome


class IssuerRetryable(IssuerFailed):
    pass


class KeyBackendError(CertpilotError):
    pass


class DeployFailed(CertpilotError):
    pass


class ConfigurationError(CertpilotError):
    pass
