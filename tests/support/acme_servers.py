"""Real ACME test servers on loopback: Debian's `pebble` (real validation) and BIND 9's
`named` as its resolver, with a TSIG-enabled dynamic zone `example.test` for dns-01.

Every name under example.test resolves to 127.0.0.1 (a wildcard A record), so Pebble's
validation of http-01 connects back to this machine; dns-01 records are added by RFC 2136
updates signed with the zone's TSIG key. Nothing here leaves loopback.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PEBBLE = "/usr/bin/pebble"
NAMED = "/usr/sbin/named"
ZONE = "example.test"
TSIG_NAME = "certpilot-test."
START_TIMEOUT_S = 30


def tools_missing() -> str | None:
    for tool in (PEBBLE, NAMED):
        if not os.access(tool, os.X_OK):
            return f"{tool} is not installed (Debian packages pebble and bind9; `make test` installs them)"
    return None


def free_port() -> int:
    """A port free for TCP and UDP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def _tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for localhost / 127.0.0.1 signed by it: Pebble's TLS."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble TLS test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = directory / "tls-ca.pem", directory / "tls-cert.pem", directory / "tls-key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


def _wait(probe, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            if probe():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {START_TIMEOUT_S} s:\n{log.read_text(errors='replace')[-3000:]}")


@dataclass
class Named:
    """`named` serving example.test on 127.0.0.1:`port`, updatable with the TSIG key."""

    directory: Path
    port: int
    tsig_secret: str
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, directory: Path) -> Named:
        directory.mkdir(parents=True, exist_ok=True)
        server = cls(directory, free_port(), base64.b64encode(secrets.token_bytes(32)).decode())
        (directory / f"{ZONE}.db").write_text(
            "$TTL 60\n"
            f"@ IN SOA ns.{ZONE}. admin.{ZONE}. 1 60 60 600 60\n"
            f"@ IN NS ns.{ZONE}.\n"
            "ns IN A 127.0.0.1\n"
            "@ IN A 127.0.0.1\n"
            "* IN A 127.0.0.1\n")
        d = directory
        (directory / "named.conf").write_text(f"""
options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {server.port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    allow-query {{ any; }};
    notify no;
}};
controls {{ }};
key "{TSIG_NAME}" {{ algorithm hmac-sha256; secret "{server.tsig_secret}"; }};
zone "{ZONE}" {{ type primary; file "{d}/{ZONE}.db"; allow-update {{ key "{TSIG_NAME}"; }}; }};
""")
        log = directory / "named.log"
        with open(log, "wb") as out:
            server.proc = subprocess.Popen([NAMED, "-g", "-c", str(directory / "named.conf")], stdout=out,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _wait(lambda: server.txt("ns." + ZONE) is not None, "named", server.proc, log)
        return server

    def txt(self, name: str) -> list[str] | None:
        """The TXT strings at `name` (empty: none), or None when named does not answer."""
        import dns.message
        import dns.query
        import dns.rdatatype

        answer = dns.query.udp(dns.message.make_query(name, dns.rdatatype.TXT), "127.0.0.1", port=self.port, timeout=1)
        return [b"".join(r.strings).decode() for rrset in answer.answer for r in rrset]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Pebble:
    """`pebble` on 127.0.0.1:`port`, validating through `named`; http-01 on `http_port`."""

    directory: Path
    port: int
    http_port: int
    tls_ca_pem: str
    eab_keys: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    @classmethod
    def start(cls, directory: Path, named: Named, *, eab: bool = False) -> Pebble:
        directory.mkdir(parents=True, exist_ok=True)
        ca_path, cert_path, key_path = _tls(directory)
        eab_keys = {"kid-1": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")} if eab else {}
        server = cls(directory, free_port(), free_port(), ca_path.read_text(), eab_keys)
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{server.port}", "managementListenAddress": f"127.0.0.1:{free_port()}",
            "certificate": str(cert_path), "privateKey": str(key_path), "httpPort": server.http_port,
            "tlsPort": free_port(), "ocspResponderURL": "", "externalAccountBindingRequired": eab,
            **({"externalAccountMACKeys": eab_keys} if eab else {}),
        }}
        (directory / "pebble.json").write_text(json.dumps(config))
        env = {"PATH": "/usr/bin:/bin", "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
               "PEBBLE_AUTHZREUSE": "0"}
        log = directory / "pebble.log"
        with open(log, "wb") as out:
            server.proc = subprocess.Popen(
                [PEBBLE, "-config", str(directory / "pebble.json"), "-dnsserver", f"127.0.0.1:{named.port}"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=directory)
        import ssl

        import httpx

        context = ssl.create_default_context(cafile=str(ca_path))
        _wait(lambda: httpx.get(server.directory_url, verify=context, timeout=2).status_code == 200,
              "pebble", server.proc, log)
        return server

    def log(self) -> str:
        return (self.directory / "pebble.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
