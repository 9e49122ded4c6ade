"""`cert export` into a directory another local user can write to (issue 12): a
symlink planted there never receives the key, and a PKCS#12 file with the key is
never written without a password unless the operator says so."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography.hazmat.primitives.serialization import pkcs12

from tests.support.cli import SeededInstallation, assert_clean_error


def planted(tmp: Path, name: str) -> tuple[Path, Path]:
    """A shared directory, and the file outside it that the attacker's symlinks point to."""
    shared = tmp / name
    shared.mkdir(mode=0o777)
    stolen = tmp / f"{name}-attacker-reads-this"
    stolen.write_text("nothing yet\n")
    return shared, stolen


def test_a_symlink_planted_at_the_key_is_refused(seeded_installation: SeededInstallation, tmp_path: Path) -> None:
    cli = seeded_installation.cli
    shared, stolen = planted(tmp_path, "at-key")
    (shared / "key.pem").symlink_to(stolen)
    message = assert_clean_error(cli.run("cert", "export", "web1", "--out", shared, "--include-key"),
                                 "symbolic link", "key.pem")
    assert "PRIVATE KEY" not in stolen.read_text()
    assert stolen.read_text() == "nothing yet\n" and "refusing" in message
    assert sorted(p.name for p in shared.iterdir()) == ["key.pem"], "something was written before the refusal"


def test_a_symlink_planted_at_the_temporary_name_is_never_written_through(
    seeded_installation: SeededInstallation, tmp_path: Path
) -> None:
    cli = seeded_installation.cli
    shared, stolen = planted(tmp_path, "at-temp")
    for name in ("key.pem", "cert.pem", "web1.p12"):  # the temporary names an export used to take
        (shared / f".{name}.tmp").symlink_to(stolen)
    cli.ok("cert", "export", "web1", "--out", shared, "--include-key")
    assert "PRIVATE KEY" not in stolen.read_text() and stolen.read_text() == "nothing yet\n"
    key = shared / "key.pem"
    assert not key.is_symlink() and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "PRIVATE KEY" in key.read_text()


def test_an_output_directory_that_is_a_symlink_is_refused(
    seeded_installation: SeededInstallation, tmp_path: Path
) -> None:
    cli = seeded_installation.cli
    real = tmp_path / "elsewhere"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert_clean_error(cli.run("cert", "export", "web1", "--out", tmp_path / "link", "--include-key"),
                       "symbolic link")
    assert list(real.iterdir()) == []


def test_pkcs12_with_the_key_needs_a_password_or_an_explicit_no(
    seeded_installation: SeededInstallation, tmp_path: Path
) -> None:
    cli = seeded_installation.cli
    out = tmp_path / "p12"
    assert_clean_error(cli.run("cert", "export", "web1", "--out", out, "--format", "pkcs12", "--include-key"),
                       "--password-file", "--no-password")
    assert not out.exists() or list(out.iterdir()) == []

    password_file = tmp_path / "p12-password"
    password_file.write_text("p12-secret-123\n")
    cli.ok("cert", "export", "web1", "--out", out, "--format", "pkcs12", "--include-key",
           "--password-file", password_file)
    key, cert, _ = pkcs12.load_key_and_certificates((out / "web1.p12").read_bytes(), b"p12-secret-123")
    assert key is not None and cert is not None
    assert stat.S_IMODE((out / "web1.p12").stat().st_mode) == 0o600

    cli.ok("cert", "export", "web1", "--out", out, "--format", "pkcs12", "--include-key", "--no-password")
    key, _, _ = pkcs12.load_key_and_certificates((out / "web1.p12").read_bytes(), None)
    assert key is not None
    # without the key there is nothing to protect: no password needed
    cli.ok("cert", "export", "web1", "--out", tmp_path / "p12-nokey", "--format", "pkcs12")
