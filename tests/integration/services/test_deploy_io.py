"""The deploy command as a real process (no database): no shell, the environment it is
given and nothing else of the controller's, the output's bounded and scrubbed tail, a
timeout that kills the command's whole process group; and the files' refusal of a
FIFO or directory planted at a file's path."""

from __future__ import annotations

import os
import time
from pathlib import Path

from certpilot.services.deploy_io import OUTPUT_LIMIT_BYTES, DeployError, Material, run_command, write_files

SECRET = "hunter2-s3cr3t-value"


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "cmd.sh"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def test_no_shell_and_only_the_given_environment(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CERTPILOT_MASTER_KEY_FILE", "/must/not/leak")
    monkeypatch.setenv("CERTPILOT_DATABASE_URL", "postgresql://user:pw@db/x")
    cmd = script(tmp_path, 'env | sort; echo "args: $#: $1"')
    result = run_command(f"{cmd} 'a b; rm -rf /tmp/x' ", certificate="web1", revision=3, directory=str(tmp_path),
                         hidden=[])
    assert result.error is None, result
    env = dict(line.split("=", 1) for line in result.output.splitlines() if "=" in line and not line.startswith("args"))
    assert env["CERTPILOT_CERTIFICATE"] == "web1" and env["CERTPILOT_REVISION"] == "3"
    assert env["CERTPILOT_DEPLOY_DIR"] == str(tmp_path)
    assert not {k for k in env if k.startswith("CERTPILOT_")} - {
        "CERTPILOT_CERTIFICATE", "CERTPILOT_REVISION", "CERTPILOT_DEPLOY_DIR"}
    assert "args: 1: a b; rm -rf /tmp/x" in result.output, "one argument, never given to a shell"


def test_output_is_bounded_and_scrubbed_even_across_the_cut(tmp_path: Path) -> None:
    cmd = script(tmp_path, f'i=0; while [ $i -lt 20000 ]; do echo "line $i {SECRET}"; i=$((i+1)); done; '
                           f'printf "{SECRET[:8]}"; printf "{SECRET[8:]}"; echo; exit 2')
    result = run_command(str(cmd), certificate="web1", revision=1, directory=str(tmp_path), hidden=[SECRET])
    assert len(result.output.encode()) <= OUTPUT_LIMIT_BYTES
    assert SECRET not in result.output and SECRET[:8] not in result.output.replace("***", "")
    assert "line 19999 ***" in result.output
    assert result.error is not None and result.error.startswith("the deploy command exited with status 2")
    assert SECRET not in result.error


def test_a_command_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    cmd = script(tmp_path, f'sleep 300 & echo $! > {marker}; wait')
    result = run_command(str(cmd), certificate="web1", revision=1, directory=str(tmp_path), hidden=[],
                         timeout_s=1)
    assert result.error is not None and "did not finish within 1 s" in result.error
    child = int(marker.read_text())
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the command's background child outlived the timeout")


def test_a_command_that_cannot_start_is_an_error(tmp_path: Path) -> None:
    result = run_command(str(tmp_path / "gone"), certificate="web1", revision=1, directory=str(tmp_path), hidden=[])
    assert result.error is not None and result.error.startswith("the deploy command could not start")


def test_a_fifo_or_directory_at_a_file_path_is_refused(tmp_path: Path) -> None:
    material = Material("LEAF\n", "CHAIN\n", "KEY\n", None)
    (tmp_path / "web1").mkdir()
    os.mkfifo(tmp_path / "web1" / "chain.pem")
    try:
        write_files(str(tmp_path), "web1", material, None)
    except DeployError as exc:
        assert "chain.pem is a symbolic link or not a regular file" in str(exc)
    else:
        raise AssertionError("a FIFO was written through")
    assert sorted(p.name for p in (tmp_path / "web1").iterdir()) == ["chain.pem"], "nothing replaced, no temp left"

    os.unlink(tmp_path / "web1" / "chain.pem")
    assert write_files(str(tmp_path), "web1", material, None) == f"{tmp_path}/web1"
    assert (tmp_path / "web1" / "fullchain.pem").read_text() == "LEAF\nCHAIN\n"


def _pair(tag: str) -> Material:
    return Material(f"LEAF-{tag}\n", "CHAIN\n", f"KEY-{tag}\n", None)


def test_readers_see_the_old_set_or_the_new_one_never_a_mix(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Whatever step the deployment is at, DIR/web1/ holds one complete set: checked by
    reading cert.pem and key.pem (by path) before and after every rename it makes."""
    import certpilot.services.deploy_io as deploy_io

    (tmp_path / "web1").mkdir()
    (tmp_path / "web1" / "nginx-snippet.conf").write_text("ssl_protocols TLSv1.3;\n")
    write_files(str(tmp_path), "web1", _pair("A"), None)
    seen: list[tuple[str, str]] = []

    def look() -> None:
        cert = (tmp_path / "web1" / "cert.pem").read_text().strip().removeprefix("LEAF-")
        key = (tmp_path / "web1" / "key.pem").read_text().strip().removeprefix("KEY-")
        seen.append((cert, key))

    def watched(real):  # type: ignore[no-untyped-def]
        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            look()
            result = real(*args, **kwargs)
            look()
            return result
        return call

    monkeypatch.setattr(deploy_io.os, "rename", watched(os.rename))
    if hasattr(deploy_io, "_renameat2"):  # the one-step swap (renameat2 is not in the os module)
        monkeypatch.setattr(deploy_io, "_renameat2", watched(deploy_io._renameat2))
    write_files(str(tmp_path), "web1", _pair("B"), None)
    monkeypatch.undo()

    assert seen and all(cert == key for cert, key in seen), f"a reader saw a certificate beside another key: {seen}"
    assert seen[0] == ("A", "A") and seen[-1] == ("B", "B")
    assert (tmp_path / "web1" / "nginx-snippet.conf").read_text() == "ssl_protocols TLSv1.3;\n", "own files kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web1"], "the old set is removed, nothing staged is left"
    assert oct((tmp_path / "web1" / "key.pem").stat().st_mode & 0o777) == "0o600"


def test_what_a_crash_left_beside_the_directory_is_cleared(tmp_path: Path) -> None:
    (tmp_path / ".web1.new-0123456789ab").mkdir()
    (tmp_path / ".web1.new-0123456789ab" / "cert.pem").write_text("half\n")
    write_files(str(tmp_path), "web1", _pair("A"), None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web1"]
    assert sorted(p.name for p in (tmp_path / "web1").iterdir()) == ["cert.pem", "chain.pem", "fullchain.pem", "key.pem"]


def test_links_and_directories_of_the_operators_stay_where_they_are(tmp_path: Path) -> None:
    """The directory cannot be swapped without losing them: the files go in one by one."""
    (tmp_path / "dhparam.pem").write_text("DH\n")
    (tmp_path / "web1" / "extra").mkdir(parents=True)
    (tmp_path / "web1" / "dhparam.pem").symlink_to(tmp_path / "dhparam.pem")
    os.mkfifo(tmp_path / "web1" / "control")  # never opened: a FIFO would block a reader
    write_files(str(tmp_path), "web1", _pair("A"), None)
    write_files(str(tmp_path), "web1", _pair("B"), None)
    web1 = tmp_path / "web1"
    assert (web1 / "cert.pem").read_text() == "LEAF-B\n" and (web1 / "key.pem").read_text() == "KEY-B\n"
    assert (web1 / "dhparam.pem").is_symlink() and (web1 / "extra").is_dir() and (web1 / "control").is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dhparam.pem", "web1"], "nothing staged is left"


def test_another_certificates_staging_directory_is_not_touched(tmp_path: Path) -> None:
    """`www` clears what a crash of `www` left, not `www.new-a`'s deployment in progress."""
    (tmp_path / ".www.new-a.new-0123456789ab").mkdir()
    write_files(str(tmp_path), "www", _pair("A"), None)
    assert (tmp_path / ".www.new-a.new-0123456789ab").is_dir()
