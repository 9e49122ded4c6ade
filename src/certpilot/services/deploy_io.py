"""The I/O of a deployment: the files written into DIR/<certificate>/ and the deploy
command run after them (see `services.deployment` for the whole story).

Files: each written to a temporary file created O_CREAT|O_EXCL|O_NOFOLLOW in its
directory, fsynced, renamed over the old one; the directories walked from `/` one
component at a time with O_NOFOLLOW, so a symlink anywhere on the way (or at a file's
own path) is refused, never followed. Command: argv from `shlex.split`, no shell, an
explicit environment, a timeout that kills its process group, the output's tail
bounded and scrubbed.
"""

from __future__ import annotations

import errno
import os
import secrets
import shlex
import signal
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from certpilot.issuers.capture import scrub

COMMAND_TIMEOUT_S = 60.0
OUTPUT_LIMIT_BYTES = 4096
DIR_MODE = 0o755
PUBLIC_MODE = 0o644
KEY_MODE = 0o600


# --- the files -------------------------------------------------------------------------


class DeployError(Exception):
    """A deployment that did not complete; the message is recorded and shown."""


@dataclass(frozen=True)
class Material:
    leaf_pem: str
    chain_pem: str
    key_pem: str | None
    key_uri: str | None

    def files(self) -> list[tuple[str, bytes, int]]:
        files = [("cert.pem", self.leaf_pem.encode(), PUBLIC_MODE),
                 ("chain.pem", self.chain_pem.encode(), PUBLIC_MODE),
                 ("fullchain.pem", (self.leaf_pem + self.chain_pem).encode(), PUBLIC_MODE)]
        if self.key_pem is not None:
            files.append(("key.pem", self.key_pem.encode(), KEY_MODE))
        if self.key_uri is not None:
            files.append(("key.pkcs11-uri", (self.key_uri + "\n").encode(), PUBLIC_MODE))
        return files


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(path: str, *, create_last: bool = False) -> int:
    """An fd of the directory `path`, walked from `/` without following any symlink;
    with `create_last` the last component is made (0755) when missing."""
    parts = [p for p in path.split("/") if p]
    fd = os.open("/", _DIR_FLAGS)
    walked = ""
    try:
        for i, part in enumerate(parts):
            walked += "/" + part
            if create_last and i == len(parts) - 1:
                try:
                    os.mkdir(part, DIR_MODE, dir_fd=fd)
                except FileExistsError:
                    pass  # a directory, or something planted: the open below tells which
                except OSError as exc:
                    raise DeployError(f"cannot create {walked}: {exc.strerror}") from None
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise DeployError(_refusal(fd, part, walked, exc)) from None
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _refusal(dir_fd: int, part: str, walked: str, exc: OSError) -> str:
    try:
        is_link = stat.S_ISLNK(os.stat(part, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        is_link = False
    if is_link or exc.errno == errno.ELOOP:
        return f"{walked} is a symbolic link: certpilot never follows one on the way to deployed files"
    if exc.errno == errno.ENOENT:
        return f"{walked} does not exist: create the deploy root first"
    if exc.errno == errno.ENOTDIR:
        return f"{walked} is not a directory"
    return f"cannot open {walked}: {exc.strerror}"


def write_files(root: str, name: str, material: Material, owner: tuple[int, int] | None) -> str:
    """Replace the files in `root/name/` (made when missing) atomically, one by one.
    Returns that directory. Raises DeployError (nothing is left half-written)."""
    directory = f"{root.rstrip('/')}/{name}"
    root_fd = _open_dir(root)
    try:
        os.close(_open_dir(directory, create_last=True))  # the walk again: `name` may not be a planted link
        dir_fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
    except OSError as exc:
        raise DeployError(_refusal(root_fd, name, directory, exc)) from None
    finally:
        os.close(root_fd)
    temps: list[tuple[str, str]] = []
    try:
        if owner is not None:
            os.fchown(dir_fd, *owner)
        for filename, data, mode in material.files():
            temp = f".{filename}.{secrets.token_hex(6)}.tmp"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                         dir_fd=dir_fd)
            temps.append((temp, filename))
            try:
                os.fchmod(fd, mode)  # whatever the umask
                if owner is not None:
                    os.fchown(fd, *owner)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        for _temp, filename in temps:  # refuse before anything is replaced
            try:
                st = os.stat(filename, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                raise DeployError(f"{directory}/{filename} is a symbolic link or not a regular file: "
                                  "certpilot never writes through one; remove it")
        for temp, filename in temps:
            os.rename(temp, filename, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        temps.clear()
        os.fsync(dir_fd)
        return directory
    except OSError as exc:
        raise DeployError(f"cannot write the files in {directory}: {exc.strerror or exc}") from None
    finally:
        for temp, _ in temps:
            try:
                os.unlink(temp, dir_fd=dir_fd)
            except OSError:
                pass
        os.close(dir_fd)


# --- the command -----------------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    error: str | None
    output: str


def run_command(command: str, *, certificate: str, revision: int, directory: str,
                hidden: Sequence[str], timeout_s: float = COMMAND_TIMEOUT_S) -> CommandResult:
    """Run the deploy command (no shell) in `directory`; its output's last
    OUTPUT_LIMIT_BYTES with every `hidden` value replaced by `***`."""
    argv = shlex.split(command)
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "LANG": "C.UTF-8",
        "CERTPILOT_CERTIFICATE": certificate,
        "CERTPILOT_REVISION": str(revision),
        "CERTPILOT_DEPLOY_DIR": directory,
    }
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, cwd=directory, close_fds=True, start_new_session=True)
        except OSError as exc:
            return CommandResult(f"the deploy command could not start: {exc.strerror or exc}", "")
        error = None
        try:
            status = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            error = f"the deploy command did not finish within {timeout_s:g} s and was killed"
        else:
            if status != 0:
                error = (f"the deploy command exited with status {status}" if status > 0
                         else f"the deploy command was killed by signal {-status}")
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - OUTPUT_LIMIT_BYTES - 1024))  # a margin: a secret cut at the edge is whole
        text = scrub(out.read().decode("utf-8", "replace"), hidden)
    text = text[-OUTPUT_LIMIT_BYTES:]
    if error is not None and text.strip():
        error += ": " + text.strip().splitlines()[-1][:500]
    return CommandResult(error, text)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
