"""`certpilot init`: data dir, master key, schema, the first admin, and the demo."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from certpilot.config import Settings
from certpilot.domain.errors import ConfigurationError
from certpilot.domain.model import ProfileParam, Role
from certpilot.keys.sealing import create_master_key_file
from certpilot.pki.local_ca import LocalCA, create_local_ca
from certpilot.services.app import App
from certpilot.services.profiles import create_profile
from certpilot.services.scripts import add_script
from certpilot.services.users import add_user, generate_password
from certpilot.store.users import has_users

DEMO_SCRIPT = "local-ca"
DEMO_PROFILE = "demo"


@dataclass(frozen=True)
class InitReport:
    admin_password: str
    demo_profile: str | None


def bundled_local_ca_source() -> str:
    return resources.files("certpilot.examples").joinpath("local_ca.py").read_text()


def initialise(settings: Settings, *, demo: bool, actor: str) -> InitReport:
    """Create everything a new installation needs; refuses to run twice."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_file = settings.effective_master_key_file
    app = App(settings, check_schema=False)
    try:
        app.db.upgrade()
        with app.db.transaction() as session:
            if has_users(session):
                raise ConfigurationError(f"certpilot is initialised already in {settings.data_dir}")
        if not key_file.exists():
            create_master_key_file(key_file)
        password = generate_password()
        add_user(app, "admin", Role.ADMIN, password, actor=actor)
        demo_profile = _create_demo(app, actor) if demo else None
        return InitReport(admin_password=password, demo_profile=demo_profile)
    finally:
        app.close()


def local_ca_params(ca: LocalCA, *, validity_days: int = 90) -> list[ProfileParam]:
    """The parameters of the bundled local-CA script for `ca`: the CA inline (scripts
    cannot read certpilot's files), its key and the key's password sensitive."""
    return [
        ProfileParam("ca_cert", ca.cert_path.read_text()),
        ProfileParam("ca_key", ca.key_path.read_text(), sensitive=True),
        ProfileParam("ca_key_password", ca.password, sensitive=True),
        ProfileParam("validity_days", str(validity_days)),
    ]


def _create_demo(app: App, actor: str) -> str:
    ca = create_local_ca(app.settings.data_dir / "demo-ca", "certpilot demo CA", app.clock.now())
    add_script(app, DEMO_SCRIPT, bundled_local_ca_source(), actor=actor)
    create_profile(app, DEMO_PROFILE, script=DEMO_SCRIPT, params=local_ca_params(ca), actor=actor)
    return DEMO_PROFILE
