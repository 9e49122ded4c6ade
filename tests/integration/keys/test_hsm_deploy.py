"""Deploying a certificate whose key lives in the HSM (SoftHSM, SQLite and PostgreSQL):
the directory gets `key.pkcs11-uri` (the token key's RFC 7512 URI), never a `key.pem`."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from certpilot.domain.model import DeploySettings
from certpilot.services.app import App
from certpilot.services.certificates import export_material, get_certificate
from certpilot.services.deployment import redeploy
from certpilot.services.profiles import get_profile, update_profile
from certpilot.services.issuance import attempt
from tests.integration.keys.hsm_support import ACTOR, PROFILE, request_hsm, served_certificate


def test_an_hsm_key_is_deployed_as_its_pkcs11_uri(hsm_app: App, tmp_path: Path) -> None:
    root = tmp_path / "live"
    root.mkdir()
    profile = get_profile(hsm_app, PROFILE)
    update_profile(hsm_app, PROFILE, script=profile.script, actor=ACTOR, deploy=DeploySettings(root=str(root)),
                   params=[p if not p.sensitive else type(p)(p.name, "***", sensitive=True) for p in profile.params])
    request_hsm(hsm_app, "web1")
    assert attempt(hsm_app, "web1", actor=ACTOR).revision == 1

    report = redeploy(hsm_app, "web1", actor=ACTOR)
    assert report.deployed, report.error
    files = sorted(p.name for p in (root / "web1").iterdir())
    assert files == ["cert.pem", "chain.pem", "fullchain.pem", "key.pkcs11-uri"]
    uri = (root / "web1" / "key.pkcs11-uri").read_text().strip()
    assert uri == export_material(hsm_app, "web1", include_key=False, actor=ACTOR).pkcs11_uri
    assert uri.startswith("pkcs11:token=") and uri.endswith(";type=private")
    on_disk = x509.load_pem_x509_certificate((root / "web1" / "cert.pem").read_bytes())
    assert on_disk == served_certificate(hsm_app, "web1")
    assert get_certificate(hsm_app, "web1").status.deployed_revision == 1
