"""Typed messages between the controller's runner, the zygote and a script host.

Each is a dataclass that turns into a JSON object and back (`protocol` frames
them); unknown keys are ignored and missing ones take their defaults, so a
message is read by its type, never by which keys happen to be present.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


def _from_message(cls: type[T], message: dict[str, Any]) -> T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in message.items() if k in names})


@dataclass(frozen=True)
class HostSpec:
    """What the zygote needs to start one script host. Holds no secret: the zygote
    never sees a request."""

    script_name: str
    base_dir: str
    user: tuple[int, int, str] | None = None  # uid, gid, name; None: stay the controller's user
    read_paths: tuple[str, ...] = ()
    write_paths: tuple[str, ...] = ()
    memory_limit_bytes: int = 0

    def to_message(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> HostSpec:
        spec = _from_message(cls, message)
        user = tuple(spec.user) if spec.user else None
        return dataclasses.replace(spec, user=user, read_paths=tuple(spec.read_paths),  # type: ignore[arg-type]
                                   write_paths=tuple(spec.write_paths))


OPERATION_REQUEST = "request"  # certificate_request(csr, common_name, args_dict[, context])
OPERATION_POLL = "poll"  # certificate_poll(cookie, args_dict[, context])
OPERATION_RENEWAL_INFO = "renewal_info"  # certificate_renewal_info(cert_pem, args_dict[, context])


@dataclass(frozen=True)
class CallRequest:
    """One call of `certificate_request` (or, with `operation` "poll", of `certificate_poll`
    with `cookie`; with "renewal_info", of `certificate_renewal_info` with `certificate`).
    `source` is sent with a host's first call only; `state` is the profile's
    `context.state` as the call starts."""

    timeout_s: int
    csr: str
    common_name: str
    args: dict[str, str]
    secrets: list[str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    operation: str = OPERATION_REQUEST
    cookie: str = ""
    state: dict[str, str] = field(default_factory=dict)
    certificate: str = ""  # renewal_info: the served certificate, leaf then chain (PEM)

    def to_message(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> CallRequest:
        return _from_message(cls, message)


@dataclass
class CallReply:
    """What the script did. At most one of `result`, `result_type`, `pending`, `renewal_info`,
    `error` and a non-zero `exit_status` is set; none of them means the script returned None."""

    result: str | None = None
    result_type: str | None = None
    pending: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None
    exit_status: int = 0
    logs: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    loaded: bool = True  # False: the script could not even be loaded; the host is of no further use
    # what the call did to `context.state`: {"set": {key: value}, "deleted": [key]}; None: nothing
    state_changes: dict[str, Any] | None = None
    # a renewal_info call's answer: {"window": None} (no suggestion) or {"window": {"start": RFC 3339,
    # "end": RFC 3339, "retry_after_s": int, "explanation_url": str | None}}, as the script gave it
    renewal_info: dict[str, Any] | None = None

    def to_message(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> CallReply:
        return _from_message(cls, message)
