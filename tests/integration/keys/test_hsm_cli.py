"""`certpilot hsm …` and an HSM certificate through the real command line (DESIGN §5,
tests/support/cli.py: in the test process, which has this run's SoftHSM loaded already)
with SOFTHSM2_CONF, CERTPILOT_DATA_DIR and CERTPILOT_DATABASE_URL, on a data dir made by
`certpilot init --demo` (a process without SOFTHSM2_CONF: test_hsm_module_env.py):

hsm add (--pin-file) / list --json / show --json / check; cert request
--hsm-group --wait; cert export writes cert.pem, chain.pem, fullchain.pem and
key.pkcs11-uri (an RFC 7512 URI whose id is the key's CKA_ID), and refuses
--include-key; hsm remove is refused while a certificate uses the group; cert remove
destroys the key in the token; a group whose module does not load fails `hsm check`
with one line on stderr. The PIN (long and random) is in no output.

Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, unquote_to_bytes

import pytest
from cryptography import x509

from certpilot.config import Settings
from certpilot.services.app import App
from certpilot.services.hsm import list_groups
from tests.integration.keys.hsm_support import MODULE, SECRET_TOKEN, SoftHsm, halves_in_token, keys_of, spki, token_public_key
from tests.support.cli import Cli, assert_clean_error

pytestmark = pytest.mark.slow

@pytest.fixture
def cli(tmp_path: Path, database_url: str, softhsm: SoftHsm) -> Cli:
    return Cli(tmp_path / "data", database_url, cwd=tmp_path, env={"SOFTHSM2_CONF": str(softhsm.conf)})


def parse_pkcs11_uri(uri: str) -> dict[str, str | bytes]:
    """The path attributes of an RFC 7512 URI (no query part expected here); `id` as bytes."""
    assert uri.startswith("pkcs11:") and "?" not in uri, uri
    attributes: dict[str, str | bytes] = {}
    for part in uri[len("pkcs11:"):].split(";"):
        name, _, value = part.partition("=")
        assert name and name not in attributes, uri
        attributes[name] = unquote_to_bytes(value) if name == "id" else unquote(value)
    return attributes


def test_hsm_group_and_certificate_through_the_cli(cli: Cli, tmp_path: Path, database_url: str,
                                                    softhsm: SoftHsm) -> None:
    cli.ok("init", "--demo")
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm.secret_pin + "\n")
    pin_file.chmod(0o600)

    added = cli.ok("hsm", "add", "vault", "--module", MODULE, "--token", SECRET_TOKEN, "--pin-file", str(pin_file))
    assert "vault" in added.stdout
    (row,) = json.loads(cli.ok("hsm", "list", "--json").stdout)
    assert (row["name"], row["token_label"], row["module_path"], row["pin"]) == ("vault", SECRET_TOKEN, MODULE, "***")
    shown = json.loads(cli.ok("hsm", "show", "vault", "--json").stdout)
    assert shown["pin"] == "***" and shown["token_label"] == SECRET_TOKEN
    checked = cli.ok("hsm", "check", "vault").stdout
    assert f"logged in to token '{SECRET_TOKEN}'" in checked and "SoftHSM" in checked

    cli.ok("cert", "request", "web1", "--profile", "demo", "--cn", "web1.example.test", "--key", "ec:p256",
            "--hsm-group", "vault", "--wait")
    with App(Settings(data_dir=tmp_path / "data", database_url=database_url)) as app:
        (key,) = keys_of(app, "web1")
    assert key.backend == "pkcs11" and key.pkcs11_id and key.private_key_sealed is None

    out = tmp_path / "export"
    cli.ok("cert", "export", "web1", "--out", str(out))
    assert sorted(p.name for p in out.iterdir()) == ["cert.pem", "chain.pem", "fullchain.pem", "key.pkcs11-uri"]
    cert_pem, chain_pem = (out / "cert.pem").read_text(), (out / "chain.pem").read_text()
    assert (out / "fullchain.pem").read_text() == cert_pem + chain_pem
    assert "PRIVATE KEY" not in cert_pem + chain_pem
    uri_text = (out / "key.pkcs11-uri").read_text()
    assert uri_text.endswith("\n") and uri_text.count("\n") == 1
    uri = parse_pkcs11_uri(uri_text.strip())
    assert uri == {"token": SECRET_TOKEN, "id": bytes.fromhex(key.pkcs11_id), "object": key.pkcs11_label,
                   "type": "private"}
    assert spki(x509.load_pem_x509_certificate(cert_pem.encode()).public_key()) == spki(
        token_public_key(softhsm.secret_ref, bytes.fromhex(key.pkcs11_id)))

    refused = assert_clean_error(cli.run("cert", "export", "web1", "--out", tmp_path / "with-key", "--include-key"))
    assert "vault" in refused and "PKCS#11 URI" in refused, refused
    assert not (tmp_path / "with-key" / "key.pem").exists()

    in_use = assert_clean_error(cli.run("hsm", "remove", "vault"))
    assert "web1" in in_use, in_use

    cli.ok("cert", "remove", "web1")
    assert halves_in_token(softhsm.secret_ref, bytes.fromhex(key.pkcs11_id)) == set()
    cli.ok("hsm", "remove", "vault")

    cli.ok("hsm", "add", "broken", "--module", "/nonexistent.so", "--token", SECRET_TOKEN, "--pin-file", str(pin_file))
    broken = assert_clean_error(cli.run("hsm", "check", "broken"))
    assert broken.startswith("error: cannot load the PKCS#11 module /nonexistent.so"), broken

    with App(Settings(data_dir=tmp_path / "data", database_url=database_url)) as app:
        assert [g.name for g in list_groups(app)] == ["broken"]
    assert softhsm.secret_pin not in cli.all_output()
