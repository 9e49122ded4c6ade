"""What the REST API tests share: a movable clock, role tokens, problem+json checks,
the operations listed by the OpenAPI document, and request bodies for the bundled
local-CA script. A real `certpilot serve` is `processes.ServerProcess`."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from certpilot.domain.model import Role
from certpilot.pki.local_ca import LocalCA
from certpilot.services.setup import bundled_local_ca_source

ACTOR = "test:api"
PASSWORD = "a-long-password-123"
PROBLEM_JSON = "application/problem+json"
METHODS = ("get", "post", "put", "patch", "delete")


# --- time ----------------------------------------------------------------------------


class MovableClock:
    """The real UTC time plus an offset a test can move forward."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + self.offset

    def advance(self, delta: dt.timedelta) -> None:
        self.offset += delta


# --- who is calling ------------------------------------------------------------------


def user_name(role: Role) -> str:
    return role.value


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class RoleTokens:
    tokens: Mapping[Role, str]

    def __getitem__(self, role: Role) -> str:
        return self.tokens[role]

    def headers(self, role: Role) -> dict[str, str]:
        return bearer(self.tokens[role])


# --- answers -------------------------------------------------------------------------


def assert_problem(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    """`response` is an RFC 9457 problem with `status` whose `detail` names every one of `words`."""
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == status, f"{where}: {response.status_code} {response.text}"
    assert response.headers["content-type"].startswith(PROBLEM_JSON), f"{where}: {response.headers['content-type']}"
    body = response.json()
    assert body["status"] == status and body["title"], f"{where}: {body}"
    assert isinstance(body.get("detail"), str) and body["detail"].strip(), f"{where}: no detail in {body}"
    for word in words:
        assert word.lower() in body["detail"].lower(), f"{where}: {word!r} not in detail {body['detail']!r}"
    return body  # type: ignore[no-any-return]


def openapi_operations(document: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(METHOD, path template) of every operation the OpenAPI document lists."""
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def fill_path(template: str, values: Mapping[str, str]) -> str:
    """`template` with each `{param}` replaced by its value in `values`."""
    path = template
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no value for a parameter of {template}"
    return path


# --- bodies --------------------------------------------------------------------------


def local_ca_params(ca: LocalCA, *, validity_days: int = 90,
                    extra: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """The profile params of the bundled local-CA script for `ca`, the key password sensitive."""
    return [
        {"name": "ca_cert", "value": ca.cert_path.read_text()},
        {"name": "ca_key", "value": ca.key_path.read_text(), "sensitive": True},
        {"name": "ca_key_password", "value": ca.password, "sensitive": True},
        {"name": "validity_days", "value": str(validity_days)},
        *[dict(p) for p in extra],
    ]


def add_local_ca(client: Any, headers: Mapping[str, str], ca: LocalCA, *, script: str = "local-ca",
                 profile: str = "corp", source: str | None = None, validity_days: int = 90,
                 extra_params: Sequence[Mapping[str, Any]] = (), **profile_fields: Any) -> dict[str, Any]:
    """Add the script (bundled local-CA unless `source`) and a profile using it, through the API."""
    r = client.post("/api/v1/scripts", headers=headers,
                    json={"name": script, "source": source or bundled_local_ca_source(), "timeout_s": 30})
    assert r.status_code == 201, r.text
    return add_profile(client, headers, ca, script=script, profile=profile, validity_days=validity_days,
                       extra_params=extra_params, **profile_fields)


def add_profile(client: Any, headers: Mapping[str, str], ca: LocalCA, *, script: str, profile: str,
                validity_days: int = 90, extra_params: Sequence[Mapping[str, Any]] = (),
                **profile_fields: Any) -> dict[str, Any]:
    r = client.post("/api/v1/profiles", headers=headers, json={
        "name": profile, "script": script,
        "params": local_ca_params(ca, validity_days=validity_days, extra=extra_params), **profile_fields,
    })
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def certificate_body(name: str, profile: str = "corp", *, cn: str | None = None, sans: Iterable[str] = (),
                     key: str | None = None, dynamic: Mapping[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"profile": profile, "subject": {"common_name": cn or f"{name}.example.test"},
                            "subject_alt_names": list(sans), "dynamic_params": dict(dynamic or {})}
    if key is not None:
        spec["key"] = key
    return {"name": name, "spec": spec}


# --- issuer scripts ------------------------------------------------------------------

_CHECKING_WRAPPER = '''

import hashlib as _hashlib

_sign = certificate_request


def certificate_request(csr, common_name, args_dict):
    # every parameter NAME_sha256 holds the SHA-256 of what parameter NAME must be
    for name, digest in args_dict.items():
        if name.endswith("_sha256"):
            checked = name[: -len("_sha256")]
            if _hashlib.sha256(args_dict.get(checked, "").encode()).hexdigest() != digest:
                raise ValueError(f"parameter {checked} is not the value it was given")
    return _sign(csr, common_name, args_dict)
'''


def checking_local_ca_source() -> str:
    """The bundled local-CA script that refuses to sign unless each parameter NAME has
    the value whose SHA-256 the parameter NAME_sha256 holds: proof that a secret the
    API only ever shows as `***` reached the script intact."""
    return bundled_local_ca_source() + _CHECKING_WRAPPER


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
