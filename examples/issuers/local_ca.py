"""certpilot issuer script: sign the CSR with a local CA whose files lie on this host.

It is written in the seed's form, so it is also a template for your own
scripts: one function, `certificate_request(csr, common_name, args_dict)`, that
returns the signed leaf followed by its chain, as PEM text, or raises.

Profile parameters (args_dict), the CA given either inline or as files:
    ca_cert          the CA certificate (PEM text)
    ca_key           the CA private key (PEM text, PKCS#8, may be encrypted; mark it sensitive)
    ca_cert_path     or: path of the CA certificate (grant it with `profile create --allow-read`)
    ca_key_path      or: path of the CA private key
    ca_key_password  password of the CA key (mark it sensitive); empty if none
    validity_days    lifetime of the issued certificate in days (default 90)
    validity_seconds optional: lifetime in seconds, overrides validity_days
                     (for short-lived test certificates)
"""

import datetime
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID


# The script runs in a warm process that serves many calls of its profile: the CA is
# loaded (and its key decrypted) once, not on every call.
_LOADED = {}


def _read(args_dict, name):
    if args_dict.get(name):
        return args_dict[name].encode()
    with open(args_dict[name + "_path"], "rb") as f:
        return f.read()


def _load_ca(args_dict):
    try:
        cert_pem, key_pem = _read(args_dict, "ca_cert"), _read(args_dict, "ca_key")
        password = args_dict.get("ca_key_password") or None
        cache_key = (cert_pem, key_pem, password)
        if cache_key in _LOADED:
            return _LOADED[cache_key]
        ca_cert = x509.load_pem_x509_certificate(cert_pem)
        ca_key = serialization.load_pem_private_key(key_pem, password=password.encode() if password else None)
    except KeyError as exc:
        inline = exc.args[0].removesuffix("_path")
        raise ValueError(f"profile parameter {inline!r} (or {inline + '_path'!r}) is missing") from None
    except FileNotFoundError as exc:
        raise ValueError(f"CA file not found: {exc.filename}") from None
    except PermissionError as exc:
        raise ValueError(f"cannot read the CA file {exc.filename}: grant it with --allow-read") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot load the CA key: {exc}") from None
    _LOADED.clear()  # one CA per profile: keep only the latest
    _LOADED[cache_key] = (ca_cert, ca_key)
    return ca_cert, ca_key


def certificate_request(csr, common_name, args_dict):
    request = x509.load_pem_x509_csr(csr.encode())
    if not request.is_signature_valid:
        raise ValueError("the CSR's signature does not verify")
    ca_cert, ca_key = _load_ca(args_dict)

    now = datetime.datetime.now(datetime.timezone.utc)
    if args_dict.get("validity_seconds"):
        lifetime = datetime.timedelta(seconds=int(args_dict["validity_seconds"]))
    else:
        lifetime = datetime.timedelta(days=int(args_dict.get("validity_days") or 90))
    builder = (
        x509.CertificateBuilder()
        .subject_name(request.subject)
        .issuer_name(ca_cert.subject)
        .public_key(request.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - datetime.timedelta(seconds=30))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(request.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
    )
    try:
        san = request.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        builder = builder.add_extension(san.value, critical=False)
    except x509.ExtensionNotFound:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False
        )
    leaf = builder.sign(ca_key, hashes.SHA256())
    pem = serialization.Encoding.PEM
    return (leaf.public_bytes(pem) + ca_cert.public_bytes(pem)).decode()
