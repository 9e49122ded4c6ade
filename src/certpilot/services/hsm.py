"""HSM groups (PKCS#11 tokens) and the keys certpilot keeps in them."""

from __future__ import annotations

import datetime as dt
import logging

from certpilot.domain.errors import InvalidInput, KeyBackendError
from certpilot.domain.model import EventKind, HsmGroup, check_module_env, check_name
from certpilot.keys import pkcs11_backend
from certpilot.keys.pkcs11_backend import TokenInfo, TokenRef
from certpilot.services.app import App
from certpilot.store import certificates as cert_repo
from certpilot.store import hsm as repo
from certpilot.store.events import record_event

log = logging.getLogger("certpilot.hsm")


def add_group(app: App, name: str, *, module_path: str, token_label: str, pin: str, actor: str,
              module_env: dict[str, str] | None = None) -> HsmGroup:
    """`module_env`: what the module reads from the environment (e.g. SOFTHSM2_CONF); every
    process that loads the module for this group sets it first."""
    check_name(name, "HSM group")
    env = check_module_env(module_env or {})
    if not module_path.startswith("/"):
        raise InvalidInput("the PKCS#11 module path must be absolute, e.g. /usr/lib/softhsm/libsofthsm2.so",
                           field="module_path")
    if not token_label or len(token_label) > 32:
        raise InvalidInput("the token label must have 1 to 32 characters", field="token_label")
    if not pin:
        raise InvalidInput("the PIN must not be empty", field="pin")
    now = app.clock.now()
    with app.db.transaction() as session:
        group = repo.add_group(session, app.sealer, name=name, module_path=module_path, token_label=token_label,
                               pin=pin, now=now, module_env=env)
        record_event(session, at=now, actor=actor, kind=EventKind.HSM_GROUP_CHANGED, object_type="hsm_group",
                     object_name=name, details={"action": "created", "module_path": module_path,
                                                "token_label": token_label, "module_env": sorted(env)})
    return group


def list_groups(app: App) -> list[HsmGroup]:
    with app.db.read() as session:
        return repo.list_groups(session)


def get_group(app: App, name: str) -> HsmGroup:
    with app.db.read() as session:
        return repo.get_group(session, name)


def token_ref(app: App, name: str) -> TokenRef:
    with app.db.read() as session:
        return repo.token_ref(session, app.sealer, name)


def check_group(app: App, name: str) -> TokenInfo:
    """Log in to the token and describe it; raises `KeyBackendError` with what to fix."""
    return pkcs11_backend.token_info(token_ref(app, name))


def remove_group(app: App, name: str, *, actor: str) -> None:
    now = app.clock.now()
    with app.db.transaction() as session:
        repo.remove_group(session, name)
        record_event(session, at=now, actor=actor, kind=EventKind.HSM_GROUP_CHANGED, object_type="hsm_group",
                     object_name=name, details={"action": "removed"})


def destroy_keys(app: App, keys: list[cert_repo.StoredKey]) -> int:
    """Destroy these HSM keys in their tokens and mark them destroyed; returns how many."""
    destroyed = 0
    for key in keys:
        if key.hsm_group is None or key.pkcs11_id is None:
            continue
        try:
            pkcs11_backend.destroy_key(token_ref(app, key.hsm_group), bytes.fromhex(key.pkcs11_id))
        except KeyBackendError as exc:
            log.warning("could not destroy HSM key %s in group %s: %s", key.key_id, key.hsm_group, exc)
            continue
        with app.db.transaction() as session:
            repo.mark_key_destroyed(session, key.key_id, app.clock.now())
        destroyed += 1
    return destroyed


def retire_old_keys(app: App) -> int:
    """Destroy the HSM keys of revisions superseded longer than the grace period ago
    (CERTPILOT_HSM_KEY_GRACE_DAYS; unset: keys live as long as their revision's history)."""
    grace_days = app.settings.hsm_key_grace_days
    if grace_days is None:
        return 0
    cutoff = app.clock.now() - dt.timedelta(days=grace_days)
    with app.db.transaction() as session:
        keys = repo.hsm_keys_to_retire(session, older_than=cutoff)
    return destroy_keys(app, keys)
