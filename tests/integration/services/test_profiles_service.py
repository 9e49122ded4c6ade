"""Profiles through the service: the script sandbox settings are checked once here,
stored, read back and kept by a write of what was read. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from certpilot.config import Settings
from certpilot.domain.errors import InvalidInput
from certpilot.domain.model import SandboxSettings
from certpilot.keys.sealing import create_master_key_file
from certpilot.services import profiles, scripts
from certpilot.services.app import App
from certpilot.services.events import list_events
from certpilot.store.database import create_db_engine, upgrade

SOURCE = "def certificate_request(csr, common_name, args_dict):\n    return ''\n"


class SteppingClock:
    """Each reading is a minute after the one before: a rewrite always shows in `updated_at`."""

    def __init__(self) -> None:
        self.at = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

    def now(self) -> dt.datetime:
        self.at += dt.timedelta(minutes=1)
        return self.at


@pytest.fixture
def script(app: App) -> str:
    scripts.add_script(app, "s1", SOURCE, actor="t")
    return "s1"


def test_sandbox_settings_round_trip_normalised(app: App, script: str) -> None:
    created = profiles.create_profile(
        app, "corp", script=script, concurrency=4,
        allow_read=["/etc/ssl/certs/", "/srv//ca/./chain", "/etc/ssl/certs"], allow_write=["/srv/deploy"],
        actor="t",
    )
    expected = SandboxSettings(concurrency=4, allow_read=("/etc/ssl/certs", "/srv/ca/chain"),
                               allow_write=("/srv/deploy",))
    assert created.sandbox == expected
    assert profiles.get_profile(app, "corp").sandbox == expected
    assert [p.sandbox for p in profiles.list_profiles(app)] == [expected]


def test_profile_without_sandbox_settings_gets_the_defaults(app: App, script: str) -> None:
    profiles.create_profile(app, "corp", script=script, actor="t")
    assert profiles.get_profile(app, "corp").sandbox == SandboxSettings(concurrency=16, allow_read=(), allow_write=())


def test_update_of_the_sandbox_is_a_change_and_the_same_again_is_none(app: App, script: str) -> None:
    app.clock = SteppingClock()
    before = profiles.create_profile(app, "corp", script=script, actor="t")

    same = profiles.update_profile(app, "corp", script=script, actor="t")
    assert same.updated_at == before.updated_at, "writing back the defaults changed the profile"

    changed = profiles.update_profile(app, "corp", script=script, concurrency=2, allow_write=["/srv/out"], actor="t")
    assert changed.sandbox == SandboxSettings(concurrency=2, allow_write=("/srv/out",))
    assert changed.updated_at > before.updated_at
    updated = [e for e in list_events(app, object_type="profile", object_name="corp")
               if e.details.get("action") == "updated"]
    assert [e.details["changed"] for e in updated] == [["sandbox"]]

    again = profiles.update_profile(app, "corp", script=script, concurrency=2, allow_write=["/srv/out/"], actor="t")
    assert again.updated_at == changed.updated_at, "the same grant, written differently, is no change"


def _bad_cases(data_dir: Path, master_key: Path) -> dict[str, tuple[dict, str, str]]:
    """id -> (service keywords, the `field` of the error, a fragment of its message)."""
    return {
        "relative-read-path": ({"allow_read": ["srv/ca"]}, "allow_read", "not absolute"),
        "empty-path": ({"allow_write": [""]}, "allow_write", "not absolute"),
        "dot-dot": ({"allow_write": ["/srv/../etc"]}, "allow_write", "'..'"),
        "nul": ({"allow_read": ["/srv/\x00ca"]}, "allow_read", "NUL"),
        "data-dir": ({"allow_read": [str(data_dir)]}, "allow_read", f"certpilot's data dir ({data_dir})"),
        "inside-data-dir": ({"allow_write": [str(data_dir / "scripts")]}, "allow_write",
                            f"lies inside certpilot's data dir ({data_dir})"),
        "contains-data-dir": ({"allow_read": [str(data_dir.parent)]}, "allow_read",
                              f"contains certpilot's data dir ({data_dir})"),
        "root": ({"allow_read": ["/"]}, "allow_read", "contains certpilot's data dir"),
        "master-key": ({"allow_read": [str(master_key)]}, "allow_read",
                       f"is certpilot's master key file ({master_key})"),
        "concurrency-0": ({"concurrency": 0}, "concurrency", "1 to 256"),
        "concurrency-257": ({"concurrency": 257}, "concurrency", "1 to 256"),
        "one-text-not-a-list": ({"allow_read": "/srv/ca"}, "allow_read", "list"),
    }


CASE_IDS = list(_bad_cases(Path("/d"), Path("/k")))


@pytest.mark.parametrize("case", CASE_IDS)
def test_bad_sandbox_settings_are_refused_and_nothing_is_stored(app: App, script: str, case: str) -> None:
    keywords, field, says = _bad_cases(app.settings.data_dir.resolve(),
                                       app.settings.effective_master_key_file.resolve())[case]
    with pytest.raises(InvalidInput) as refused:
        profiles.create_profile(app, "corp", script=script, actor="t", **keywords)
    assert refused.value.field == field
    assert says in str(refused.value)
    assert profiles.list_profiles(app) == []

    profiles.create_profile(app, "corp", script=script, actor="t")
    with pytest.raises(InvalidInput):
        profiles.update_profile(app, "corp", script=script, actor="t", **keywords)
    assert profiles.get_profile(app, "corp").sandbox == SandboxSettings()


def test_a_symlink_to_the_data_dir_is_refused(app: App, script: str, tmp_path: Path) -> None:
    link = tmp_path / "elsewhere" / "link"
    link.parent.mkdir()
    link.symlink_to(app.settings.data_dir)
    with pytest.raises(InvalidInput, match="certpilot's master key file"):
        profiles.create_profile(app, "corp", script=script, allow_read=[str(link / "master.key")], actor="t")



def test_the_sqlite_database_file_is_refused(tmp_path: Path) -> None:
    """A SQLite database outside the data dir is guarded too (once: PostgreSQL has no file)."""
    (tmp_path / "data").mkdir()
    create_master_key_file(tmp_path / "data" / "master.key")
    database = tmp_path / "db" / "certpilot.db"
    database.parent.mkdir()
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{database}")
    engine = create_db_engine(settings.effective_database_url)
    upgrade(engine)
    engine.dispose()
    with App(settings) as app:
        scripts.add_script(app, "s1", SOURCE, actor="t")
        with pytest.raises(InvalidInput, match=r"is certpilot's database \("):
            profiles.create_profile(app, "corp", script="s1", allow_write=[str(database)], actor="t")
        with pytest.raises(InvalidInput, match=r"contains certpilot's database \("):
            profiles.create_profile(app, "corp", script="s1", allow_read=[str(database.parent)], actor="t")
        assert profiles.list_profiles(app) == []
