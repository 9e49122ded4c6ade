"""A real nginx serves the deployed files: after `cert renew --wait` a TLS handshake sees
the new serial; a failing deploy command leaves the revision and the files consistent
(nginx keeps serving the previous certificate) until the deployment is done again."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tests.conftest import missing
from tests.support.cli import Cli, copy_example_issuer, corp_profile_args, make_test_ca
from tests.support.processes import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def served_serial(port: int, cafile: Path) -> str | None:
    """The serial (hex) of the certificate nginx presents, verified against the test CA."""
    context = ssl.create_default_context(cafile=str(cafile))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            with context.wrap_socket(sock, server_hostname="web1.example.test") as tls:
                der = tls.getpeercert(binary_form=True)
    except OSError:
        return None
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


def wait_for_serial(port: int, cafile: Path, serial: str, timeout_s: float = 20.0) -> str | None:
    deadline = time.monotonic() + timeout_s
    seen = None
    while time.monotonic() < deadline:
        seen = served_serial(port, cafile)
        if seen == serial:
            return seen
        time.sleep(0.1)
    return seen


@pytest.fixture
def nginx_conf(tmp_path: Path) -> Iterator[tuple[Path, int, Path]]:
    """(nginx.conf, port, deploy root); nginx itself is started by the test."""
    if not Path(NGINX).exists():
        missing("nginx is not installed (Debian nginx-light)")
    root = tmp_path / "live"
    root.mkdir()
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log;
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {root}/web1/fullchain.pem;
        ssl_certificate_key {root}/web1/key.pem;
        location / {{ return 200 "ok\\n"; }}
    }}
}}
""")
    yield conf, port, root


def serial_of(cli: Cli) -> str:
    return cli.json("cert", "show", "web1", "--json")["status"]["serial"]


def test_nginx_serves_each_new_revision_and_a_failing_command_keeps_things_consistent(
    cli: Cli, tmp_path: Path, nginx_conf: tuple[Path, int, Path]
) -> None:
    conf, port, root = nginx_conf
    ca = make_test_ca(tmp_path / "ca")
    cli.ok("init")
    cli.ok("script", "add", "local-ca", "--file", copy_example_issuer(tmp_path / "scripts"))
    cli.ok(*corp_profile_args(ca), "--deploy-root", str(root))
    cli.ok("cert", "request", "web1", "--profile", "corp", "--cn", "web1.example.test", "--param",
           "cost_center=CC-1", "--wait")

    nginx = subprocess.Popen([NGINX, "-c", str(conf), "-g", "daemon off;"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_for_serial(port, ca.cert_path, serial_of(cli)) == serial_of(cli), "nginx serves revision 1"

        reload = f"{NGINX} -c {conf} -s reload"
        cli.ok("profile", "update", "corp", "--deploy-command", reload)
        cli.ok("cert", "renew", "web1", "--wait")
        second = serial_of(cli)
        assert wait_for_serial(port, ca.cert_path, second) == second, "the handshake sees the new serial"

        broken = tmp_path / "broken-reload.sh"
        broken.write_text("#!/bin/sh\necho 'nginx: [emerg] pretend the config test failed' >&2\nexit 1\n")
        broken.chmod(0o755)
        cli.ok("profile", "update", "corp", "--deploy-command", str(broken))
        result = cli.ok("cert", "renew", "web1", "--wait")  # a revision is stored: exit 0, deploy error on stderr
        assert "deployment of revision 3 failed" in result.stderr
        status = cli.json("cert", "show", "web1", "--json")["status"]
        assert (status["revision"], status["deployed_revision"]) == (3, None)
        assert "pretend the config test failed" in status["deploy_error"]
        third = status["serial"]
        on_disk = x509.load_pem_x509_certificate((root / "web1" / "cert.pem").read_bytes())
        key = load_pem_private_key((root / "web1" / "key.pem").read_bytes(), None)
        assert format(on_disk.serial_number, "x") == third, "the files are the stored revision"
        assert key.public_key().public_numbers() == on_disk.public_key().public_numbers(), "a matching pair"
        assert served_serial(port, ca.cert_path) == second, "nginx, never reloaded, serves the previous one"

        cli.ok("profile", "update", "corp", "--deploy-command", reload)  # fixed: deployed again
        cli.ok("cert", "deploy", "web1")
        assert wait_for_serial(port, ca.cert_path, third) == third
        status = cli.json("cert", "show", "web1", "--json")["status"]
        assert (status["deployed_revision"], status["deploy_error"]) == (3, None)
    finally:
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(timeout=10)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait()
