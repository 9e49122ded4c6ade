"""create_local_ca: a self-signed CA whose key is written encrypted, mode 0600."""

from __future__ import annotations

import datetime as dt
import os
import stat

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from certpilot.pki.local_ca import create_local_ca
from tests.unit.pki.certs_for_tests import NOW, spki_sha256


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_local_ca_files_and_certificate(tmp_path):
    ca = create_local_ca(tmp_path / "nested" / "ca", "Demo CA", NOW)
    assert ca.cert_path == tmp_path / "nested" / "ca" / "ca.pem"
    assert ca.key_path == tmp_path / "nested" / "ca" / "ca.key"
    cert = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())

    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Demo CA"
    assert cert.not_valid_before_utc <= NOW < cert.not_valid_after_utc
    assert cert.not_valid_after_utc - NOW == dt.timedelta(days=3650)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    cert.verify_directly_issued_by(cert)  # self-signed signature holds


def test_local_ca_validity_days(tmp_path):
    ca = create_local_ca(tmp_path, "Short CA", NOW, validity_days=30)
    cert = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=30)


def test_local_ca_key_is_encrypted_private_and_matches(tmp_path):
    ca = create_local_ca(tmp_path, "Demo CA", NOW)
    assert _mode(ca.key_path) == 0o600
    data = ca.key_path.read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in data
    try:
        serialization.load_pem_private_key(data, password=None)
    except TypeError:
        pass  # "password was not given but private key is encrypted"
    else:
        raise AssertionError("the CA key loaded without a password")
    key = serialization.load_pem_private_key(data, password=ca.password.encode())
    cert = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    assert spki_sha256(key) == spki_sha256_of_cert(cert)


def spki_sha256_of_cert(cert: x509.Certificate) -> str:
    import hashlib

    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def test_two_local_cas_differ(tmp_path):
    a = create_local_ca(tmp_path / "a", "Demo CA", NOW)
    b = create_local_ca(tmp_path / "b", "Demo CA", NOW)
    assert a.password != b.password
    assert a.cert_path.read_bytes() != b.cert_path.read_bytes()


def test_local_ca_key_is_0600_even_over_an_old_readable_file(tmp_path):
    (tmp_path / "ca.key").write_text("old key")
    os.chmod(tmp_path / "ca.key", 0o644)
    ca = create_local_ca(tmp_path, "Demo CA", NOW)
    assert _mode(ca.key_path) == 0o600
