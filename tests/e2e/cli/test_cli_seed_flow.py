"""The seed flow as a new user runs it, through the installed `certpilot` script,
on SQLite and PostgreSQL: init, script, profile, request, inspect, export, renew,
a failed renewal that keeps the served revision, and the settings given as flags."""

from __future__ import annotations

import datetime as dt
import hashlib
import stat
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from tests.support.cli import (
    WEB1_REQUEST,
    Cli,
    admin_password_from,
    assert_clean_error,
    copy_example_issuer,
    corp_profile_args,
    make_test_ca,
)

CERT_KEYS = {"name", "spec", "status"}
SPEC_KEYS = {"profile", "subject", "subject_alt_names", "key", "hsm_group", "dynamic_params"}
STATUS_KEYS = {
    "phase", "revision", "serial", "not_before", "not_after", "fingerprint_sha256", "expiry_status",
    "renew_at", "next_action_at", "failures", "last_error", "deployed_revision", "deploy_error", "awaiting_ca",
    "renewal_info",
}
TIMESTAMP_KEYS = ("not_before", "not_after", "renew_at", "next_action_at")
REVISION_KEYS = {"revision", "serial", "not_before", "not_after", "fingerprint_sha256", "public_key_sha256"}
PARAM_KEYS = {"name", "value", "sensitive", "dynamic"}


def parse_timestamp(value: str) -> dt.datetime:
    assert isinstance(value, str) and value.endswith("Z"), value
    parsed = dt.datetime.fromisoformat(value)
    assert parsed.utcoffset() == dt.timedelta(0), value
    return parsed


def spki_sha256(public_key: Any) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def read_pem_export(out: Path) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The leaf and chain of a PEM export, after checking fullchain = leaf + chain."""
    leaf = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert len(x509.load_pem_x509_certificates((out / "cert.pem").read_bytes())) == 1
    chain = x509.load_pem_x509_certificates((out / "chain.pem").read_bytes())
    assert x509.load_pem_x509_certificates((out / "fullchain.pem").read_bytes()) == [leaf, *chain]
    return leaf, chain


def assert_certificate_shape(view: dict[str, Any]) -> None:
    assert set(view) == CERT_KEYS, view
    assert set(view["spec"]) == SPEC_KEYS, view["spec"]
    assert set(view["status"]) == STATUS_KEYS, view["status"]
    for key in TIMESTAMP_KEYS:
        if view["status"][key] is not None:
            parse_timestamp(view["status"][key])


def assert_served(view: dict[str, Any], leaf: x509.Certificate) -> None:
    """The status describes exactly this leaf."""
    st = view["status"]
    assert st["fingerprint_sha256"] == leaf.fingerprint(hashes.SHA256()).hex()
    assert int(st["serial"], 16) == leaf.serial_number
    assert parse_timestamp(st["not_before"]) == leaf.not_valid_before_utc
    assert parse_timestamp(st["not_after"]) == leaf.not_valid_after_utc


def test_seed_flow(cli: Cli, tmp_path: Path, database_url: str) -> None:
    ca = make_test_ca(tmp_path / "ca")
    ca_cert = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    issuer = copy_example_issuer(tmp_path / "scripts")

    # init: prints the admin password once; a second init fails clearly and prints no password
    first = cli.ok("init")
    admin_password = admin_password_from(first.stdout)
    again = cli.run("init")
    assert_clean_error(again, "already")
    assert admin_password not in again.stdout + again.stderr

    # script
    cli.ok("script", "add", "local-ca", "--file", issuer, "--timeout", "30")
    scripts = cli.json("script", "list", "--json")
    assert [s["name"] for s in scripts] == ["local-ca"]
    shown_script = cli.json("script", "show", "local-ca", "--json")
    assert shown_script["name"] == "local-ca"
    assert shown_script["timeout_s"] == 30
    assert shown_script["source"] == issuer.read_text()
    assert shown_script["sha256"] == hashlib.sha256(issuer.read_bytes()).hexdigest()
    assert scripts[0] == shown_script

    # profile: the sensitive value is write-only
    cli.ok(*corp_profile_args(ca))
    profile = cli.json("profile", "show", "corp", "--json")
    assert profile["name"] == "corp" and profile["script"] == "local-ca"
    params = {p["name"]: p for p in profile["params"]}
    assert all(set(p) == PARAM_KEYS for p in profile["params"]), profile["params"]
    assert set(params) == {"ca_cert", "ca_key", "ca_key_password", "validity_days", "cost_center"}
    assert params["ca_cert"] == {"name": "ca_cert", "value": ca.cert_path.read_text(), "sensitive": False, "dynamic": False}
    assert params["ca_key"] == {"name": "ca_key", "value": "***", "sensitive": True, "dynamic": False}
    assert params["ca_key_password"] == {"name": "ca_key_password", "value": "***", "sensitive": True, "dynamic": False}
    assert params["validity_days"]["value"] == "30"
    assert params["cost_center"]["dynamic"] is True and params["cost_center"]["sensitive"] is False
    assert cli.json("profile", "list", "--json") == [profile]

    # request and issue in this process
    issued = cli.ok(*WEB1_REQUEST, "--wait")
    assert "revision 1" in issued.stdout, issued.describe()

    view = cli.json("cert", "show", "web1", "--json")
    assert_certificate_shape(view)
    assert view["name"] == "web1"
    spec, st = view["spec"], view["status"]
    assert spec["profile"] == "corp"
    assert spec["subject"]["common_name"] == "web1.example.test"
    assert spec["subject"]["organization"] == "Example"
    assert spec["subject"]["country"] == "DE"
    assert spec["subject_alt_names"] == ["DNS:web1.example.test", "DNS:www.example.test", "IP:127.0.0.1"]
    assert spec["key"] == "ec:p384"
    assert spec["hsm_group"] is None
    assert spec["dynamic_params"] == {"cost_center": "CC-1"}
    assert st["phase"] == "issued"
    assert st["revision"] == 1
    assert st["expiry_status"] == "warning"  # a 30-day certificate is inside the default 30-day warning
    assert st["failures"] == 0 and st["last_error"] is None
    not_before, not_after = parse_timestamp(st["not_before"]), parse_timestamp(st["not_after"])
    assert dt.timedelta(days=29) < not_after - not_before <= dt.timedelta(days=30, minutes=1)
    renew_at = parse_timestamp(st["renew_at"])
    expected_renew_at = not_before + (not_after - not_before) * 2 / 3  # default: 2/3 of the lifetime
    assert abs(renew_at - expected_renew_at) <= dt.timedelta(seconds=2), (renew_at, expected_renew_at)
    # the next action is the renewal or, here, the 30-day expiry warning that is due already
    assert parse_timestamp(st["next_action_at"]) <= renew_at

    # export PEM: leaf, chain, full chain; the chain verifies the leaf
    out = tmp_path / "out-pem"
    cli.ok("cert", "export", "web1", "--out", out)
    assert sorted(p.name for p in out.iterdir()) == ["cert.pem", "chain.pem", "fullchain.pem"]
    leaf1, chain = read_pem_export(out)
    assert chain == [ca_cert]
    leaf1.verify_directly_issued_by(chain[0])
    assert_served(view, leaf1)
    assert leaf1.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "web1.example.test"
    assert leaf1.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example"
    assert leaf1.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "DE"
    sans = leaf1.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["web1.example.test", "www.example.test"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    public_key = leaf1.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name == "secp384r1"

    # export with the key: mode 0600, the key of this certificate
    out_key = tmp_path / "out-key"
    cli.ok("cert", "export", "web1", "--out", out_key, "--include-key")
    key_file = out_key / "key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    private_key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert spki_sha256(private_key.public_key()) == spki_sha256(leaf1.public_key())
    assert read_pem_export(out_key)[0] == leaf1

    # export PKCS#12, without and with the key
    out_p12 = tmp_path / "out-p12"
    cli.ok("cert", "export", "web1", "--out", out_p12, "--format", "pkcs12")
    assert [p.name for p in out_p12.iterdir()] == ["web1.p12"]
    key, cert, extra = pkcs12.load_key_and_certificates((out_p12 / "web1.p12").read_bytes(), None)
    # without a key, PKCS#12 has no "the" certificate: the loader returns them all as extra
    bundled = ([cert] if cert is not None else []) + extra
    assert key is None and len(bundled) == 2 and leaf1 in bundled and ca_cert in bundled
    out_p12_key = tmp_path / "out-p12-key"
    cli.ok("cert", "export", "web1", "--out", out_p12_key, "--format", "pkcs12", "--include-key", "--no-password")
    key, cert, extra = pkcs12.load_key_and_certificates((out_p12_key / "web1.p12").read_bytes(), None)
    assert key is not None and cert == leaf1 and extra == [ca_cert]
    assert spki_sha256(key.public_key()) == spki_sha256(leaf1.public_key())

    # renew: a new revision with a new key pair; the history keeps both, newest first
    cli.ok("cert", "renew", "web1", "--wait")
    view2 = cli.json("cert", "show", "web1", "--json")
    assert_certificate_shape(view2)
    assert view2["spec"] == view["spec"]
    assert view2["status"]["revision"] == 2 and view2["status"]["phase"] == "issued"
    assert view2["status"]["fingerprint_sha256"] != view["status"]["fingerprint_sha256"]
    out2 = tmp_path / "out-pem-2"
    cli.ok("cert", "export", "web1", "--out", out2)
    leaf2, chain2 = read_pem_export(out2)
    leaf2.verify_directly_issued_by(chain2[0])
    assert_served(view2, leaf2)
    assert spki_sha256(leaf2.public_key()) != spki_sha256(leaf1.public_key())

    history = cli.json("cert", "history", "web1", "--json")
    assert [h["revision"] for h in history] == [2, 1]
    for h in history:
        assert REVISION_KEYS <= set(h), h
        parse_timestamp(h["not_before"])
        parse_timestamp(h["not_after"])
    assert history[0]["fingerprint_sha256"] == view2["status"]["fingerprint_sha256"]
    assert history[1]["fingerprint_sha256"] == view["status"]["fingerprint_sha256"]
    assert history[0]["public_key_sha256"] == spki_sha256(leaf2.public_key())
    assert history[1]["public_key_sha256"] == spki_sha256(leaf1.public_key())
    assert int(history[1]["serial"], 16) == leaf1.serial_number

    # list: the same objects as show; --expiring-within filters on not_after
    listed = cli.json("cert", "list", "--json")
    assert listed == [view2]
    assert [c["name"] for c in cli.json("cert", "list", "--expiring-within", "60", "--json")] == ["web1"]
    assert cli.json("cert", "list", "--expiring-within", "1", "--json") == []

    # a failed renewal (the CA says its key is gone) exits non-zero with the script's own words,
    # and the previous revision stays served
    broken = tmp_path / "broken_ca.py"
    broken.write_text("def certificate_request(csr, common_name, args_dict):\n"
                      "    raise ValueError('CA file not found: /srv/ca/ca.key')\n")
    cli.ok("script", "add", "local-ca", "--file", broken, "--replace", "--timeout", "30")
    failed = cli.run("cert", "renew", "web1", "--wait")
    assert_clean_error(failed, "CA file not found")
    cli.ok("script", "add", "local-ca", "--file", issuer, "--replace", "--timeout", "30")
    view3 = cli.json("cert", "show", "web1", "--json")
    st3 = view3["status"]
    assert st3["revision"] == 2
    assert st3["fingerprint_sha256"] == view2["status"]["fingerprint_sha256"]
    assert st3["phase"] == "issued"
    assert st3["expiry_status"] == "warning"
    assert st3["failures"] == 1
    assert "CA file not found" in st3["last_error"]
    assert st3["next_action_at"] is not None  # (the due 30-day warning hides the retry time here)
    assert [h["revision"] for h in cli.json("cert", "history", "web1", "--json")] == [2, 1]
    out3 = tmp_path / "out-pem-3"
    cli.ok("cert", "export", "web1", "--out", out3)
    assert read_pem_export(out3)[0] == leaf2

    # with the CA back, a manual renewal works at once and clears the failure
    cli.ok("cert", "renew", "web1", "--wait")
    view4 = cli.json("cert", "show", "web1", "--json")
    assert view4["status"]["revision"] == 3
    assert view4["status"]["failures"] == 0 and view4["status"]["last_error"] is None

    # events: newest first, the whole life of web1
    events = cli.json("cert", "events", "web1", "--json")
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "CERT_RENEWED" and kinds[-1] == "CERT_REQUESTED", kinds
    assert {"CERT_ISSUED", "KEY_EXPORTED", "CERT_RENEWED", "CERT_RENEW_FAILED"} <= set(kinds), kinds
    assert kinds.index("CERT_RENEW_FAILED") < kinds.index("KEY_EXPORTED") < kinds.index("CERT_ISSUED")
    assert kinds.count("KEY_EXPORTED") == 2  # --include-key, PEM and PKCS#12
    times = [parse_timestamp(e["at"]) for e in events]
    assert times == sorted(times, reverse=True)

    # the CA key's password appears in no output of any command, nor in the SQLite file
    assert ca.password not in cli.all_output()
    if database_url.startswith("sqlite:///"):
        db_file = Path(database_url.removeprefix("sqlite:///"))
        for path in (db_file, db_file.with_name(db_file.name + "-wal")):
            if path.exists():
                assert ca.password.encode() not in path.read_bytes(), path


def test_init_demo_with_settings_flags(tmp_path: Path, database_url: str) -> None:
    """`--data-dir` / `--database-url` work on the subcommand and before it, and all
    three ways of giving the settings reach the same installation."""
    data_dir = tmp_path / "data"
    on_subcommand = Cli(data_dir, database_url, settings_via="subcommand-flags")
    on_root = Cli(data_dir, database_url, settings_via="root-flags")
    via_env = Cli(data_dir, database_url)

    created = on_subcommand.ok("init", "--demo")
    admin_password_from(created.stdout)
    assert "demo" in created.stdout
    assert_clean_error(on_root.run("init", "--demo"), "already")

    demo = on_root.json("profile", "show", "demo", "--json")
    demo_params = {p["name"]: p for p in demo["params"]}
    assert demo_params["ca_key_password"]["value"] == "***"
    assert demo_params["ca_key_password"]["sensitive"] is True
    assert [s["name"] for s in on_subcommand.json("script", "list", "--json")] == [demo["script"]]

    on_subcommand.ok("cert", "request", "web1", "--profile", "demo", "--cn", "web1.example.test", "--wait")
    view = on_root.json("cert", "show", "web1", "--json")
    assert_certificate_shape(view)
    assert view["status"]["phase"] == "issued" and view["status"]["revision"] == 1
    assert view["spec"]["key"] == "ec:p256"
    assert view["spec"]["subject_alt_names"] == ["DNS:web1.example.test"]
    assert view["status"]["expiry_status"] == "good"  # the demo profile issues for 90 days

    out = tmp_path / "out"
    on_root.ok("cert", "export", "web1", "--out", out)
    leaf, chain = read_pem_export(out)
    assert len(chain) == 1
    leaf.verify_directly_issued_by(chain[0])
    assert_served(view, leaf)

    listed = [cli.json("cert", "list", "--json") for cli in (on_subcommand, on_root, via_env)]
    assert listed[0] == listed[1] == listed[2] == [view]

    # a failed renewal is retried after the first backoff step (5 min ± 10 %), and the
    # served revision stays
    assert demo_params["ca_key"]["value"] == "***"  # the demo CA is inline: scripts cannot read the data dir
    broken = tmp_path / "broken_ca.py"
    broken.write_text("def certificate_request(csr, common_name, args_dict):\n"
                      "    raise ValueError('CA file not found: /srv/ca/ca.key')\n")
    on_root.ok("script", "add", "local-ca", "--file", broken, "--replace")
    before = dt.datetime.now(dt.timezone.utc)
    assert_clean_error(via_env.run("cert", "renew", "web1", "--wait"), "CA file not found")
    after = dt.datetime.now(dt.timezone.utc)
    failed = on_root.json("cert", "show", "web1", "--json")["status"]
    assert failed["revision"] == 1 and failed["fingerprint_sha256"] == view["status"]["fingerprint_sha256"]
    assert failed["phase"] == "issued" and failed["failures"] == 1
    retry_at = parse_timestamp(failed["next_action_at"])
    assert before + dt.timedelta(minutes=4, seconds=29) <= retry_at <= after + dt.timedelta(minutes=5, seconds=31)


def test_failing_scripts_exit_non_zero_with_the_cas_words(cli: Cli, tmp_path: Path) -> None:
    """A seed-style script that writes its reason to stderr and exits, and one that
    overruns its timeout: `--wait` fails clearly and nothing is issued. Sensitive
    values the script echoes are shown as `***`."""
    api_key, token = "static-S3cret-4f1c9a", "dynamic-S3cret-77b2e0"
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "refuse.py").write_text(
        "import sys\n\n"
        "def certificate_request(csr, common_name, args_dict):\n"
        "    sys.stderr.write('CA says no: quota exceeded for ' + args_dict['team']\n"
        "                     + ' (key ' + args_dict['api_key'] + ', token ' + args_dict['token'] + ')\\n')\n"
        "    sys.exit(3)\n"
    )
    (scripts / "slow.py").write_text(
        "import time\n\n"
        "def certificate_request(csr, common_name, args_dict):\n"
        "    time.sleep(30)\n"
    )
    cli.ok("init")
    cli.ok("script", "add", "refuse", "--file", scripts / "refuse.py")
    cli.ok("script", "add", "slow", "--file", scripts / "slow.py", "--timeout", "1")
    cli.ok("profile", "create", "refusing", "--script", "refuse", "--dynamic-param", "team",
           "--sensitive-param", f"api_key={api_key}", "--sensitive-dynamic-param", "token")
    cli.ok("profile", "create", "slow", "--script", "slow")

    refused = cli.run("cert", "request", "web1", "--profile", "refusing", "--cn", "web1.example.test",
                      "--param", "team=blue", "--param", f"token={token}", "--wait")
    assert_clean_error(refused, "CA says no: quota exceeded for blue (key ***, token ***)")
    view = cli.json("cert", "show", "web1", "--json")
    assert_certificate_shape(view)
    assert view["spec"]["dynamic_params"] == {"team": "blue", "token": "***"}
    assert view["status"]["phase"] == "failed"
    assert view["status"]["revision"] is None and view["status"]["fingerprint_sha256"] is None
    assert view["status"]["failures"] == 1
    assert "CA says no: quota exceeded for blue" in view["status"]["last_error"]
    assert cli.json("cert", "history", "web1", "--json") == []
    assert_clean_error(cli.run("cert", "export", "web1", "--out", tmp_path / "out"), "web1")
    assert not (tmp_path / "out" / "cert.pem").exists()

    timed_out = cli.run("cert", "request", "web2", "--profile", "slow", "--cn", "web2.example.test", "--wait")
    message = assert_clean_error(timed_out)
    assert "timeout" in message.lower() or "timed out" in message.lower(), message
    slow_view = cli.json("cert", "show", "web2", "--json")
    assert slow_view["status"]["revision"] is None and slow_view["status"]["failures"] == 1

    for result in cli.run_parallel(("cert", "events", "web1", "--json"), ("cert", "attempts", "web1", "--json"),
                                   ("profile", "show", "refusing"), ("cert", "show", "web1")):
        assert result.returncode == 0, result.describe()
    assert api_key not in cli.all_output() and token not in cli.all_output()
