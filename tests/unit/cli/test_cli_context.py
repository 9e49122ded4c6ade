"""The CLI's quick SQLite reader finds the database `Settings` names, without pydantic:
the same environment names (any case), defaults and flags."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from certpilot.cli import context
from certpilot.config import Settings


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        if name.upper().startswith("CERTPILOT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    context.reset_overrides()
    yield
    context.reset_overrides()


def agree(data_dir: Path | None = None, database_url: str | None = None) -> Path | None:
    """What the quick reader says with these flags, checked against `Settings`."""
    context.remember_overrides(data_dir, database_url)
    quick = context.sqlite_database_for_reads()
    settled = Settings(**context.given_overrides()).sqlite_path
    assert (quick and quick.resolve()) == (settled and settled.resolve())
    return quick


def test_by_default_the_database_is_in_the_default_data_dir(tmp_path: Path) -> None:
    assert agree() == (tmp_path / "certpilot-data" / "certpilot.db").resolve()


@pytest.mark.parametrize("name", ["CERTPILOT_DATA_DIR", "certpilot_data_dir", "Certpilot_Data_Dir"])
def test_the_data_dir_from_the_environment_in_any_case(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       name: str) -> None:
    monkeypatch.setenv(name, str(tmp_path / "elsewhere"))
    assert agree() == tmp_path / "elsewhere" / "certpilot.db"


def test_a_sqlite_url_from_the_environment_wins_over_the_data_dir(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    monkeypatch.setenv("CERTPILOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("certpilot_database_url", f"sqlite:///{tmp_path / 'db' / 'x.db'}")
    assert agree() == tmp_path / "db" / "x.db"


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CERTPILOT_DATA_DIR", str(tmp_path / "env"))
    assert agree(data_dir=tmp_path / "flag") == tmp_path / "flag" / "certpilot.db"


def test_no_sqlite_file_no_quick_path(monkeypatch: pytest.MonkeyPatch) -> None:
    assert agree(database_url="postgresql://127.0.0.1/certpilot") is None


@pytest.mark.parametrize("url", ["sqlite:///x.db?mode=ro", "sqlite:///"])
def test_a_url_the_shortcut_does_not_read_exactly_leaves_it_to_settings(url: str) -> None:
    context.remember_overrides(None, url)
    assert context.sqlite_database_for_reads() is None


def test_an_empty_environment_value_leaves_it_to_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTPILOT_DATABASE_URL", "")
    assert context.sqlite_database_for_reads() is None
