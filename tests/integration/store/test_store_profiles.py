"""store.profiles: a profile reads back as saved; sensitive values and the webhook URL are
sealed (never in clear in the row, bound to their row) and opened only with a sealer;
names are unique; a profile in use is not removed, its params and script state go with
it; replacing keeps what the caller asks to keep and leaves an unchanged profile alone."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from certpilot.domain.errors import Conflict, InvalidInput, KeyBackendError, NotFound
from certpilot.domain.model import (
    DeploySettings,
    KeySpec,
    NotifySettings,
    Profile,
    ProfileParam,
    RenewalSettings,
    SandboxSettings,
)
from certpilot.domain.script_state import StateChanges
from certpilot.keys.sealing import Sealer
from certpilot.store import profiles, script_state, scripts
from certpilot.store.certificates import remove_certificate
from certpilot.store.session import Database
from certpilot.store.tables import ProfileParamRow, ProfileRow, ProfileStateRow
from tests.integration.store.conftest import T0, Seed, overlapping

PARAMS = (
    ProfileParam("directory", "https://ca.example.test/dir"),
    ProfileParam("api_key", "s3cr3t-api-key-value", sensitive=True),
    ProfileParam("ticket", None, dynamic=True),
    ProfileParam("token", None, sensitive=True, dynamic=True),
)
RENEWAL = RenewalSettings(renew_before_days=None, renew_before_percent=33.5, warning_days=(14, 7, 1),
                          max_pending_days=4)
SANDBOX = SandboxSettings(concurrency=3, allow_read=("/etc/ssl",), allow_write=("/var/tmp/x",))
DEPLOY = DeploySettings(root="/srv/certs", command="/usr/bin/true", owner="www-data:www-data")
NOTIFY = NotifySettings(url="https://hooks.example.test/T0k3n-in-the-path", email="ops@example.test")
KEY = KeySpec.parse("rsa:3072")


def _add(db: Database, sealer: Sealer, seed: Seed, name: str = "corp", **changes: object) -> Profile:
    with db.transaction() as session:
        if not scripts.list_scripts(session):
            seed.script(session, "s")
        fields: dict[str, object] = dict(name=name, script="s", params=PARAMS, renewal=RENEWAL, default_key=KEY,
                                         sandbox=SANDBOX, now=T0, deploy=DEPLOY, notify=NOTIFY)
        fields.update(changes)
        return profiles.add_profile(session, sealer, **fields)  # type: ignore[arg-type]


def test_a_profile_reads_back_as_saved(db: Database, sealer: Sealer, seed: Seed) -> None:
    added = _add(db, sealer, seed)
    with db.read() as session:
        masked = profiles.get_profile(session, "corp")
        opened = profiles.get_profile(session, "corp", sealer)
    assert masked == added
    assert (opened.script, opened.renewal, opened.default_key, opened.sandbox, opened.deploy) == (
        "s", RENEWAL, KEY, SANDBOX, DEPLOY)
    assert opened.params == PARAMS, "in order, sensitive values opened"
    assert opened.notify == NOTIFY
    assert [p.value for p in masked.params] == ["https://ca.example.test/dir", None, None, None]
    assert masked.notify == NotifySettings(url="***", email="ops@example.test")
    assert opened.created_at == opened.updated_at == T0 and opened.created_at.utcoffset() == dt.timedelta(0)


def test_secrets_are_sealed_in_the_rows_and_bound_to_them(db: Database, sealer: Sealer, seed: Seed) -> None:
    _add(db, sealer, seed, "corp")
    _add(db, sealer, seed, "team")
    with db.transaction() as session:
        params = {(p.profile_id, p.name): p for p in session.scalars(select(ProfileParamRow))}
        rows = {r.name: r for r in session.scalars(select(ProfileRow))}
        corp, team = rows["corp"], rows["team"]
        key = params[(corp.id, "api_key")]
        assert key.value is None and key.value_sealed is not None and b"s3cr3t" not in key.value_sealed
        assert params[(corp.id, "directory")].value == "https://ca.example.test/dir"
        assert corp.notify_url_sealed is not None and b"T0k3n" not in corp.notify_url_sealed
        # a sealed value copied into another row does not open there
        params[(team.id, "api_key")].value_sealed = key.value_sealed
        team.notify_url_sealed = corp.notify_url_sealed
        session.flush()
        with pytest.raises(KeyBackendError, match="does not open"):
            profiles.get_profile(session, "team", sealer)
        session.rollback()


def test_names_are_unique_and_references_must_exist(db: Database, sealer: Sealer, seed: Seed) -> None:
    _add(db, sealer, seed)
    with pytest.raises(Conflict, match="profile 'corp' exists already"):
        _add(db, sealer, seed)
    with pytest.raises(NotFound, match="script"):
        _add(db, sealer, seed, "other", script="no-such-script")
    with db.read() as session:
        with pytest.raises(NotFound, match="profile"):
            profiles.get_profile(session, "nope")
        with pytest.raises(NotFound, match="profile"):
            profiles.profile_id(session, "nope")
        assert [p.name for p in profiles.list_profiles(session)] == ["corp"]


def test_listed_by_name_with_their_params_and_no_secrets(db: Database, sealer: Sealer, seed: Seed) -> None:
    for name in ("web", "api", "mail"):
        _add(db, sealer, seed, name, params=PARAMS[:2] if name == "api" else ())
    with db.read() as session:
        listed = profiles.list_profiles(session)
    assert [p.name for p in listed] == ["api", "mail", "web"]
    assert listed[0].params == (PARAMS[0], ProfileParam("api_key", None, sensitive=True))
    assert listed[0].notify.url == "***"


def test_a_profile_in_use_stays_and_a_removed_one_takes_its_rows(db: Database, sealer: Sealer, seed: Seed) -> None:
    _add(db, sealer, seed, "corp")
    with db.transaction() as session:
        seed.certificate(session, "web1", profile="corp")
        script_state.apply(session, "corp", sealer, StateChanges(set={"account": "k"}), T0)
    with pytest.raises(Conflict, match=r"profile 'corp' is used by certificate\(s\) web1"):
        with db.transaction() as session:
            profiles.remove_profile(session, "corp")
    with db.transaction() as session:
        remove_certificate(session, "web1")
        profiles.remove_profile(session, "corp")
    with db.read() as session:
        assert profiles.list_profiles(session) == []
        for table in (ProfileParamRow, ProfileStateRow):
            assert session.scalar(select(func.count()).select_from(table)) == 0


def _replace(db: Database, sealer: Sealer, now: dt.datetime, **changes: object) -> Profile:
    fields: dict[str, object] = dict(name="corp", script="s", params=PARAMS, keep_sensitive=frozenset(),
                                     renewal=RENEWAL, default_key=KEY, sandbox=SANDBOX, now=now, deploy=DEPLOY,
                                     notify=NOTIFY)
    fields.update(changes)
    with db.transaction() as session:
        return profiles.replace_profile(session, sealer, **fields)  # type: ignore[arg-type]


def test_replacing_with_what_was_read_changes_nothing(db: Database, sealer: Sealer, seed: Seed) -> None:
    _add(db, sealer, seed)
    later = T0 + dt.timedelta(hours=1)
    with db.read() as session:
        param_ids = sorted(session.scalars(select(ProfileParamRow.id)))
    masked = [ProfileParam("api_key", "***", sensitive=True) if p.name == "api_key" else p for p in PARAMS]
    same = _replace(db, sealer, later, params=tuple(masked), keep_sensitive=frozenset({"api_key"}),
                    notify=NotifySettings(url="***", email=NOTIFY.email))
    assert same.updated_at == T0
    with db.read() as session:
        assert sorted(session.scalars(select(ProfileParamRow.id))) == param_ids
        assert profiles.get_profile(session, "corp", sealer).notify == NOTIFY


def test_replacing_keeps_asked_secrets_and_writes_the_rest(db: Database, sealer: Sealer, seed: Seed) -> None:
    _add(db, sealer, seed)
    with db.transaction() as session:
        seed.script(session, "s2")
    later = T0 + dt.timedelta(hours=1)
    params = (ProfileParam("api_key", "***", sensitive=True), ProfileParam("new", "v"))
    renewal = RenewalSettings(renew_before_days=20)
    notify = NotifySettings(url="***", email=None)
    replaced = _replace(db, sealer, later, script="s2", params=params, keep_sensitive=frozenset({"api_key"}),
                        renewal=renewal, deploy=DeploySettings(), notify=notify)
    assert replaced.updated_at == later and replaced.created_at == T0
    with db.read() as session:
        read = profiles.get_profile(session, "corp", sealer)
    assert read.script == "s2" and read.renewal == renewal and read.deploy == DeploySettings()
    assert read.params == (ProfileParam("api_key", "s3cr3t-api-key-value", sensitive=True), ProfileParam("new", "v"))
    assert read.notify == NotifySettings(url=NOTIFY.url, email=None)


def test_replacing_refuses_what_it_cannot_keep(db: Database, sealer: Sealer, seed: Seed) -> None:
    _add(db, sealer, seed, notify=NotifySettings())
    with pytest.raises(InvalidInput, match="'directory' has no stored sensitive value"):
        _replace(db, sealer, T0, keep_sensitive=frozenset({"directory"}))
    with pytest.raises(InvalidInput, match="no stored notify_url"):
        _replace(db, sealer, T0, notify=NotifySettings(url="***"))
    with db.transaction() as session:
        seed.certificate(session, "web1", profile="corp")
    with pytest.raises(Conflict, match=r"used by certificate\(s\) web1: a new dynamic parameter \(extra\)"):
        _replace(db, sealer, T0, params=(*PARAMS, ProfileParam("extra", None, dynamic=True)))
    with pytest.raises(NotFound, match="profile"):
        _replace(db, sealer, T0, name="nope")
    with db.read() as session:
        assert profiles.get_profile(session, "corp", sealer).params == PARAMS


def test_two_transactions_adding_one_name_at_once_one_conflicts(db: Database, sealer: Sealer, seed: Seed) -> None:
    with db.transaction() as session:
        seed.script(session, "s")

    def add(key: str) -> Callable[[Session], object]:
        return lambda session: profiles.add_profile(
            session, sealer, name="corp", script="s", params=(), renewal=RENEWAL,
            default_key=KeySpec.parse(key), sandbox=SANDBOX, now=T0)

    first, second = overlapping(db, add("rsa:2048"), add("ec:p384"))
    assert not isinstance(first, Exception)
    assert isinstance(second, Conflict) and "profile 'corp' exists already" in str(second)
    with db.read() as session:
        assert [str(p.default_key) for p in profiles.list_profiles(session)] == ["rsa:2048"]
