"""Sealer (AES-256-GCM bound to a row identity) and the master key file."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from certpilot.domain.errors import ConfigurationError, KeyBackendError
from certpilot.keys.sealing import Sealer, create_master_key_file, load_master_key

MASTER = bytes(range(32))
OTHER_MASTER = bytes(range(1, 33))
IDENTITY = "key:3f2a:private_key"


@pytest.mark.parametrize(
    "plaintext",
    [b"", b"x", b"-----BEGIN PRIVATE KEY-----\n" + os.urandom(1200), bytes(range(256)) * 64],
    ids=["empty", "one-byte", "key-sized", "64-KiB-binary"],
)
def test_seal_open_round_trip(plaintext):
    sealer = Sealer(MASTER)
    sealed = sealer.seal(plaintext, IDENTITY)
    assert sealed.startswith(b"v1")
    assert len(sealed) == 2 + 12 + len(plaintext) + 16
    assert sealer.open(sealed, IDENTITY) == plaintext
    assert Sealer(MASTER).open(sealed, IDENTITY) == plaintext  # a new Sealer with the same key


def test_sealed_value_hides_the_plaintext_and_is_fresh_each_time():
    sealer = Sealer(MASTER)
    secret = b"hunter2-hunter2-hunter2"
    first, second = sealer.seal(secret, IDENTITY), sealer.seal(secret, IDENTITY)
    assert secret not in first
    assert first != second  # a fresh nonce each time
    assert first[2:14] != second[2:14]


def test_text_round_trip():
    sealer = Sealer(MASTER)
    assert sealer.open_text(sealer.seal_text("pässwörd ☃", "param:7:value"), "param:7:value") == "pässwörd ☃"


@pytest.mark.parametrize(
    ("open_master", "open_identity"),
    [
        (MASTER, "key:3f2b:private_key"),
        (MASTER, "key:3f2a:private_key "),
        (MASTER, ""),
        (OTHER_MASTER, IDENTITY),
        (OTHER_MASTER, "key:other:private_key"),
    ],
    ids=["other-row", "identity-with-extra-space", "empty-identity", "other-master-key", "other-key-and-row"],
)
def test_open_under_another_identity_or_master_key_fails(open_master, open_identity):
    sealed = Sealer(MASTER).seal(b"secret", IDENTITY)
    with pytest.raises(KeyBackendError) as info:
        Sealer(open_master).open(sealed, open_identity)
    assert b"secret" not in str(info.value).encode()


def _flip(index):
    def tamper(sealed: bytes) -> bytes:
        data = bytearray(sealed)
        data[index] ^= 0x01
        return bytes(data)

    return tamper


@pytest.mark.parametrize(
    "tamper",
    [
        _flip(0),
        _flip(1),
        _flip(2),
        _flip(13),
        _flip(14),
        _flip(-17),
        _flip(-1),
        lambda s: s[:-1],
        lambda s: s[:-16],
        lambda s: s[:29],
        lambda s: s + b"\x00",
        lambda s: b"",
        lambda s: b"v1",
        lambda s: b"v2" + s[2:],
        lambda s: s[2:],
    ],
    ids=[
        "version-byte-0",
        "version-byte-1",
        "nonce-first-byte",
        "nonce-last-byte",
        "ciphertext-first-byte",
        "ciphertext-last-byte",
        "tag-last-byte",
        "truncated-one-byte",
        "tag-cut-off",
        "shorter-than-header-and-tag",
        "byte-appended",
        "empty",
        "version-only",
        "future-version",
        "version-stripped",
    ],
)
def test_tampered_sealed_value_does_not_open(tamper):
    sealer = Sealer(MASTER)
    sealed = sealer.seal(b"a private key of some length", IDENTITY)
    with pytest.raises(KeyBackendError):
        sealer.open(tamper(sealed), IDENTITY)


@pytest.mark.parametrize(
    "master_key",
    [b"", bytes(16), bytes(24), bytes(31), bytes(33), bytes(64)],
    ids=["empty", "16-bytes", "24-bytes", "31-bytes", "33-bytes", "64-bytes"],
)
def test_sealer_needs_a_32_byte_master_key(master_key):
    with pytest.raises(ConfigurationError):
        Sealer(master_key)


# --- master key file --------------------------------------------------------------


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_create_master_key_file_then_load(tmp_path):
    path = tmp_path / "data" / "sub" / "master.key"
    create_master_key_file(path)
    assert _mode(path) == 0o600
    key = load_master_key(path)
    assert len(key) == 32
    assert base64.b64decode(path.read_text().strip()) == key
    assert Sealer(key).open(Sealer(key).seal(b"x", "a"), "a") == b"x"


def test_create_master_key_file_is_0600_under_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        create_master_key_file(tmp_path / "master.key")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "master.key") == 0o600


def test_two_master_keys_differ(tmp_path):
    create_master_key_file(tmp_path / "a.key")
    create_master_key_file(tmp_path / "b.key")
    assert load_master_key(tmp_path / "a.key") != load_master_key(tmp_path / "b.key")


def test_create_master_key_file_refuses_to_overwrite(tmp_path):
    path = tmp_path / "master.key"
    create_master_key_file(path)
    before = path.read_bytes()
    with pytest.raises(ConfigurationError) as info:
        create_master_key_file(path)
    assert "exists" in str(info.value)
    assert path.read_bytes() == before


def _write(path, content: bytes, mode: int):
    path.write_bytes(content)
    os.chmod(path, mode)
    return path


GOOD = base64.b64encode(bytes(range(32))) + b"\n"


@pytest.mark.parametrize(
    ("content", "mode"),
    [(GOOD, 0o600), (GOOD, 0o400), (GOOD.strip(), 0o600), (b"  " + GOOD + b"\n\n", 0o600)],
    ids=["0600", "0400-read-only", "no-newline", "surrounding-whitespace"],
)
def test_load_master_key_accepts(tmp_path, content, mode):
    assert load_master_key(_write(tmp_path / "master.key", content, mode)) == bytes(range(32))


@pytest.mark.parametrize(
    ("content", "mode", "hint"),
    [
        (GOOD, 0o640, "chmod 600"),
        (GOOD, 0o604, "chmod 600"),
        (GOOD, 0o644, "chmod 600"),
        (GOOD, 0o660, "chmod 600"),
        (GOOD, 0o610, "chmod 600"),
        (b"not base64 at all!\n", 0o600, "base64"),
        (GOOD[:10] + b"*" + GOOD[11:], 0o600, "base64"),
        (b"\xc3\xa9" * 22 + b"\n", 0o600, "base64"),
        (bytes(range(200, 232)), 0o600, "master key"),
        (b"", 0o600, "32 bytes"),
        (base64.b64encode(bytes(16)), 0o600, "32 bytes"),
        (base64.b64encode(bytes(31)), 0o600, "32 bytes"),
        (base64.b64encode(bytes(33)), 0o600, "32 bytes"),
        (base64.b64encode(bytes(64)), 0o600, "32 bytes"),
    ],
    ids=[
        "group-readable",
        "world-readable",
        "group-and-world-readable",
        "group-writable",
        "group-executable",
        "not-base64",
        "bad-base64-character",
        "non-ascii-text",
        "raw-binary-key-not-utf8",
        "empty-file",
        "16-bytes",
        "31-bytes",
        "33-bytes",
        "64-bytes",
    ],
)
def test_load_master_key_refuses(tmp_path, content, mode, hint):
    path = _write(tmp_path / "master.key", content, mode)
    with pytest.raises(ConfigurationError) as info:
        load_master_key(path)
    assert hint in str(info.value)
    assert str(path) in str(info.value)


def test_load_master_key_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(ConfigurationError) as info:
        load_master_key(tmp_path / "absent.key")
    assert "certpilot init" in str(info.value)
    assert "CERTPILOT_MASTER_KEY_FILE" in str(info.value)


def test_load_master_key_on_a_directory_is_a_configuration_error(tmp_path):
    (tmp_path / "master.key").mkdir(mode=0o700)
    with pytest.raises(ConfigurationError):
        load_master_key(tmp_path / "master.key")
