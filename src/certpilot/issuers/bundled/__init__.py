"""Issuer scripts that ship with certpilot (`certpilot script add NAME --bundled KIND`).

Each is an ordinary issuer script, stored like any other when added, and run in
the same sandbox; this module only says which there are, what their parameters
are, and reads their source.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from certpilot.domain.errors import InvalidInput


@dataclass(frozen=True)
class BundledParam:
    name: str
    description: str
    sensitive: bool = False
    required: bool = False


@dataclass(frozen=True)
class BundledScript:
    kind: str
    description: str
    params: tuple[BundledParam, ...]
    package: str
    file: str

    def source(self) -> str:
        return resources.files(self.package).joinpath(self.file).read_text(encoding="utf-8")


BUNDLED: tuple[BundledScript, ...] = (
    BundledScript(
        "acme", "RFC 8555 ACME client (http-01 or dns-01 with RFC 2136 updates); the account key lives in "
        "context.state, one account per profile",
        (
            BundledParam("directory_url", "the ACME server's directory URL", required=True),
            BundledParam("email", "contact address for the account"),
            BundledParam("challenge", "http-01 (default) or dns-01"),
            BundledParam("http_port", "http-01: listen on this port for the CA's validation"),
            BundledParam("http_webroot", "http-01: write tokens under DIR/.well-known/acme-challenge/ "
                                         "(grant DIR with --allow-write)"),
            BundledParam("dns_server", "dns-01: host:port of the primary taking RFC 2136 updates"),
            BundledParam("dns_zone", "dns-01: the zone to update (default: found by SOA lookup)"),
            BundledParam("tsig_key_name", "dns-01: TSIG key name"),
            BundledParam("tsig_secret", "dns-01: TSIG secret, base64", sensitive=True),
            BundledParam("tsig_algorithm", "dns-01: TSIG algorithm (default hmac-sha256)"),
            BundledParam("ca_bundle", "path or PEM of the CA that signs the ACME server's TLS certificate"),
            BundledParam("eab_kid", "external account binding key id"),
            BundledParam("eab_hmac_key", "external account binding HMAC key (base64url)", sensitive=True),
            BundledParam("acme_profile", "certificate profile to ask for; refused unless the server's "
                                         "directory offers it (meta.profiles)"),
            BundledParam("wait_s", "seconds one call waits for validation and issuance (default 40, within the "
                                   "script's timeout); an order still processing then is polled later"),
        ),
        "certpilot.issuers.bundled", "acme_client.py",
    ),
    BundledScript(
        "certmonger", "runs an existing certmonger CA helper unchanged (SUBMIT, then POLL while it defers)",
        (
            BundledParam("helper", "path of the certmonger CA helper (grant it with --allow-read)", required=True),
            BundledParam("helper_args", "extra arguments for the helper, split like a shell would"),
            BundledParam("poll_interval_s", "seconds before polling after exit status 1 (default 300)"),
        ),
        "certpilot.issuers.bundled", "certmonger_helper.py",
    ),
    BundledScript(
        "local-ca", "signs with a local CA given inline or as files (the demo's script, and a template)",
        (
            BundledParam("ca_cert", "the CA certificate (PEM), or ca_cert_path"),
            BundledParam("ca_key", "the CA private key (PEM)", sensitive=True),
            BundledParam("ca_key_password", "password of the CA key", sensitive=True),
            BundledParam("validity_days", "lifetime of issued certificates in days (default 90)"),
        ),
        "certpilot.examples", "local_ca.py",
    ),
)


def bundled(kind: str) -> BundledScript | None:
    return next((b for b in BUNDLED if b.kind == kind), None)


def bundled_source(kind: str) -> str:
    """The source of the bundled script `kind`; raises `InvalidInput` naming the choices."""
    found = bundled(kind)
    if found is None:
        raise InvalidInput(f"there is no bundled script {kind!r}: choose one of "
                           + ", ".join(b.kind for b in BUNDLED), field="bundled")
    return found.source()
