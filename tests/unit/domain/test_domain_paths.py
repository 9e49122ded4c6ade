"""The one rule for paths users give (profile grants, deploy roots), and the paths it guards."""

from __future__ import annotations

from pathlib import Path

import pytest

from certpilot.config import Settings
from certpilot.domain.errors import InvalidInput
from certpilot.domain.paths import MAX_PATH_CHARS, checked_path, guard

BECAUSE = "keep away"


def check(path: object, protected: list[tuple[str, Path]] | None = None) -> str:
    return checked_path(path, field="f", subject="the path", guarded=guard(protected or []), because=BECAUSE)


@pytest.mark.parametrize(("given", "normal"), [
    ("/srv/certs", "/srv/certs"),
    ("/srv/certs/", "/srv/certs"),
    ("//srv//certs/./", "/srv/certs"),
    ("/", "/"),
])
def test_a_plain_absolute_path_comes_back_normalised(given: str, normal: str) -> None:
    assert check(given) == normal


@pytest.mark.parametrize(("given", "says"), [
    ("srv/certs", "the path 'srv/certs' is not absolute"),
    ("", "is not absolute"),
    ("/srv/../etc", "the path '/srv/../etc' has a '..' component"),
    ("/srv/\x00ca", "contains a NUL character"),
    ("/srv/\udcff", "is not valid UTF-8 text"),
    ("/" + "a" * MAX_PATH_CHARS, f"at most {MAX_PATH_CHARS} characters"),
    (b"/srv", "f takes paths (text), got bytes"),
    (None, "got NoneType"),
])
def test_what_is_no_plain_absolute_path_is_refused_in_one_sentence(given: object, says: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check(given)
    assert says in str(refused.value)
    assert refused.value.field == "f"


def test_a_guarded_path_is_refused_as_it_is_inside_or_around_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    protected = [("master key file", data / "master.key"), ("data dir", data)]
    cases = {
        str(data / "master.key"): f"is certpilot's master key file ({data / 'master.key'})",
        str(data / "scripts") + "/": f"lies inside certpilot's data dir ({data})",
        str(tmp_path): f"contains certpilot's data dir ({data})",
    }
    for given, how in cases.items():
        with pytest.raises(InvalidInput) as refused:
            check(given, protected)
        assert str(refused.value) == f"the path {given.rstrip('/')!r} {how}: {BECAUSE}"
    assert check(str(tmp_path / "elsewhere"), protected) == str(tmp_path / "elsewhere")


def test_a_symlink_into_a_guarded_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    with pytest.raises(InvalidInput, match="lies inside certpilot's data dir"):
        check(str(tmp_path / "link" / "certs"), [("data dir", tmp_path / "data")])


def test_settings_guard_the_master_key_the_sqlite_database_and_the_data_dir_most_specific_first(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    sqlite = Settings(data_dir=data, database_url=None, master_key_file=None)
    assert sqlite.protected_paths == (
        ("master key file", data / "master.key"),
        ("database", (data / "certpilot.db").resolve()),
        ("data dir", data),
    )
    elsewhere = Settings(data_dir=data, database_url="postgresql://db/certpilot", master_key_file=tmp_path / "k")
    assert elsewhere.protected_paths == (("master key file", tmp_path / "k"), ("data dir", data))
