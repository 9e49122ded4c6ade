"""store.scripts: a script reads back as saved (source, its SHA-256, timeout, aware times),
listed by name; an update keeps `created_at`; names are unique; a script in use by a
profile is not removed; the timeout of the script that issues a certificate."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session

from certpilot.domain.errors import Conflict, NotFound
from certpilot.store import scripts
from certpilot.store.session import Database
from tests.integration.store.conftest import T0, Seed, overlapping

SOURCE = "def certificate_request(csr, common_name, args_dict):\n    return 'é'\n"


def test_a_script_reads_back_as_saved(db: Database) -> None:
    with db.transaction() as session:
        added = scripts.add_script(session, "acme", SOURCE, 45, T0)
    with db.read() as session:
        read = scripts.get_script(session, "acme")
    assert read == added
    assert (read.name, read.kind, read.source, read.timeout_s) == ("acme", "python", SOURCE, 45)
    assert read.sha256 == hashlib.sha256(SOURCE.encode()).hexdigest()
    assert read.created_at == read.updated_at == T0 and read.created_at.utcoffset() == dt.timedelta(0)


def test_an_update_replaces_source_and_timeout_and_keeps_created_at(db: Database) -> None:
    later = T0 + dt.timedelta(days=1)
    with db.transaction() as session:
        scripts.add_script(session, "acme", SOURCE, 45, T0)
    with db.transaction() as session:
        scripts.update_script(session, "acme", "def certificate_request(csr):\n    pass\n", 90, later)
    with db.read() as session:
        read = scripts.get_script(session, "acme")
    assert read.source.startswith("def certificate_request(csr):") and read.timeout_s == 90
    assert read.sha256 == hashlib.sha256(read.source.encode()).hexdigest()
    assert (read.created_at, read.updated_at) == (T0, later)


def test_names_are_unique_and_unknown_names_are_not_found(db: Database) -> None:
    with db.transaction() as session:
        scripts.add_script(session, "acme", SOURCE, 45, T0)
    with pytest.raises(Conflict, match="script 'acme' exists already"):
        with db.transaction() as session:
            scripts.add_script(session, "acme", "other", 10, T0)
    for call in (lambda s: scripts.get_script(s, "nope"), lambda s: scripts.remove_script(s, "nope"),
                 lambda s: scripts.update_script(s, "nope", SOURCE, 1, T0)):
        with pytest.raises(NotFound, match="nope"):
            with db.transaction() as session:
                call(session)
    with db.read() as session:
        assert scripts.get_script(session, "acme").source == SOURCE


def test_listed_by_name(db: Database) -> None:
    with db.transaction() as session:
        for name in ("zeta", "alpha", "mid", "beta"):
            scripts.add_script(session, name, f"# {name}\n", 30, T0)
    with db.read() as session:
        listed = scripts.list_scripts(session)
    assert [s.name for s in listed] == ["alpha", "beta", "mid", "zeta"]
    assert {s.name: s.source for s in listed}["zeta"] == "# zeta\n"


def test_a_script_in_use_is_not_removed(db: Database, seed: Seed) -> None:
    with db.transaction() as session:
        seed.script(session, "used")
        seed.script(session, "free")
        seed.profile(session, "p2", script="used")
        seed.profile(session, "p1", script="used")
    with pytest.raises(Conflict, match=r"script 'used' is used by profile\(s\) p1, p2"):
        with db.transaction() as session:
            scripts.remove_script(session, "used")
    with db.transaction() as session:
        scripts.remove_script(session, "free")
    with db.read() as session:
        assert [s.name for s in scripts.list_scripts(session)] == ["used"]


def test_the_timeout_of_the_script_that_issues_a_certificate(db: Database, seed: Seed) -> None:
    with db.transaction() as session:
        seed.script(session, "slow", timeout_s=600)
        seed.script(session, "fast", timeout_s=5)
        seed.profile(session, "ps", script="slow")
        seed.profile(session, "pf", script="fast")
        seed.certificate(session, "a", profile="ps")
        seed.certificate(session, "b", profile="pf")
    with db.read() as session:
        assert scripts.timeout_of_certificate_script(session, "a") == 600
        assert scripts.timeout_of_certificate_script(session, "b") == 5
        with pytest.raises(NotFound, match="certificate"):
            scripts.timeout_of_certificate_script(session, "missing")


def test_two_transactions_adding_one_name_at_once_one_conflicts(db: Database) -> None:
    def add(source: str) -> Callable[[Session], object]:
        return lambda session: scripts.add_script(session, "acme", source, 30, T0)

    first, second = overlapping(db, add("# first\n"), add("# second\n"))
    assert not isinstance(first, Exception)
    assert isinstance(second, Conflict) and "script 'acme' exists already" in str(second)
    with db.read() as session:
        assert [s.source for s in scripts.list_scripts(session)] == ["# first\n"]
