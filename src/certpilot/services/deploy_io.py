"""The I/O of a deployment: the files written into DIR/<certificate>/ and the deploy
command run after them (see `services.deployment` for the whole story).

Files: written into a new directory beside DIR/<certificate>/ (each created
O_CREAT|O_EXCL|O_NOFOLLOW, fsynced) that is then swapped with the old one in one
renameat2(RENAME_EXCHANGE), so a reader sees the old set or the new one, never a mix;
the directories walked from `/` one component at a time with O_NOFOLLOW, so a symlink
anywhere on the way (or at a file's own path) is refused, never followed. Command: argv from `shlex.split`, no shell, an
explicit environment, a timeout that kills its process group, the output's tail
bounded and scrubbed.
"""

from __future__ import annotations

import errno
import os
import re
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


_KNOWN_FILES = ("cert.pem", "chain.pem", "fullchain.pem", "key.pem", "key.pkcs11-uri")
_STAGING_MARK = ".new-"  # `.NAME.new-XXXX` beside NAME: a deployment being written (or one a crash left)
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def _renameat2(dir_fd: int, old: str, new: str, flags: int) -> None:
    """renameat2(2) within one directory; OSError as os.rename raises it."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(dir_fd, os.fsencode(old), dir_fd, os.fsencode(new), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), new)


def _remove_entry(dir_fd: int, entry: str) -> None:
    """Remove `entry` of the directory `dir_fd` and, if it is a directory, the plain
    entries in it; never following a symlink (unlink removes the link itself)."""
    try:
        st = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(entry, dir_fd=dir_fd)
        return
    fd = os.open(entry, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        for child in os.listdir(fd):
            if not stat.S_ISDIR(os.stat(child, dir_fd=fd, follow_symlinks=False).st_mode):
                os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(entry, dir_fd=dir_fd)


def _copy_regular(src_fd: int, dst_fd: int, filename: str) -> None:
    """Copy a regular file (mode, and owner when root) between two open directories, never through a link."""
    src = os.open(filename, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=src_fd)
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            return
        chunks = []
        while chunk := os.read(src, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(src)
    owner = (st.st_uid, st.st_gid) if os.geteuid() == 0 else None
    _write_new(dst_fd, filename, b"".join(chunks), stat.S_IMODE(st.st_mode), owner)


def write_files(root: str, name: str, material: Material, owner: tuple[int, int] | None) -> str:
    """Replace `root/name/` with a directory holding the new files, in one step.

    The files are written into a new directory beside it (`.NAME.new-XXXX`, each file
    O_CREAT|O_EXCL|O_NOFOLLOW, fsynced), then that directory and `root/name` are swapped
    with renameat2(RENAME_EXCHANGE): at every moment `root/name/` holds either the old
    set or the new one, never a new certificate beside an old key. Plain files of the
    operator's own in `root/name/` are carried over; where it also holds links,
    directories or FIFOs of theirs, it stays in place and each file is renamed into it
    instead (each atomic, the set not). A symlink or other non-file at a
    certificate file's path, or at `root/name` itself, is refused before anything is
    replaced. Where the file system cannot exchange (EINVAL), the files are renamed into
    place one by one. Returns the directory; raises DeployError (nothing half-written).
    """
    directory = f"{root.rstrip('/')}/{name}"
    root_fd = _open_dir(root)
    staging = f".{name}{_STAGING_MARK}{secrets.token_hex(6)}"
    try:
        leftover = re.compile(re.escape(f".{name}{_STAGING_MARK}") + "[0-9a-f]{12}")
        for entry in os.listdir(root_fd):  # what a crashed deployment of this certificate left
            if leftover.fullmatch(entry):
                try:
                    _remove_entry(root_fd, entry)
                except OSError:
                    pass  # a directory of the operator's inside: left for them
        current_fd, others_plain = _current_dir(root_fd, name, directory)
        files = material.files()
        try:
            os.mkdir(staging, DIR_MODE, dir_fd=root_fd)
            new_fd = os.open(staging, _DIR_FLAGS, dir_fd=root_fd)
            try:
                os.fchmod(new_fd, DIR_MODE)
                if owner is not None:
                    os.fchown(new_fd, *owner)
                for filename, data, mode in files:
                    _write_new(new_fd, filename, data, mode, owner)
                if current_fd is not None and others_plain:
                    for entry in os.listdir(current_fd):
                        if entry not in _KNOWN_FILES:
                            _copy_regular(current_fd, new_fd, entry)
                os.fsync(new_fd)
            finally:
                os.close(new_fd)
            if current_fd is not None and not others_plain:
                # links, directories or FIFOs of the operator's live here: the directory stays, and
                # each file is renamed into it (each atomic, the set not)
                _rename_one_by_one(root_fd, staging, current_fd, files)
            elif current_fd is None:
                try:
                    _renameat2(root_fd, staging, name, RENAME_NOREPLACE)
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                        raise
                    os.rename(staging, name, src_dir_fd=root_fd, dst_dir_fd=root_fd)  # never onto a link: ENOTDIR
            else:
                try:
                    _renameat2(root_fd, staging, name, RENAME_EXCHANGE)
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                        raise
                    _rename_one_by_one(root_fd, staging, current_fd, files)
        finally:
            if current_fd is not None:
                os.close(current_fd)
        os.fsync(root_fd)
        return directory
    except OSError as exc:
        raise DeployError(f"cannot write the files in {directory}: {exc.strerror or exc}") from None
    finally:
        try:
            _remove_entry(root_fd, staging)  # after a swap: the old set; after a failure: the new one
        except OSError:
            pass
        os.close(root_fd)


def _current_dir(root_fd: int, name: str, directory: str) -> tuple[int | None, bool]:
    """The open directory `root/name` (None when there is none yet), and whether every
    entry in it besides certpilot's files is a plain file (which a swap can carry over).
    DeployError for a link or non-directory there, or for a link or non-file at one of
    certpilot's file paths in it."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=root_fd)
    except FileNotFoundError:
        return None, True
    except OSError as exc:
        raise DeployError(_refusal(root_fd, name, directory, exc)) from None
    others_plain = True
    try:
        for entry in os.listdir(fd):
            plain = stat.S_ISREG(os.stat(entry, dir_fd=fd, follow_symlinks=False).st_mode)
            if entry in _KNOWN_FILES and not plain:
                raise DeployError(f"{directory}/{entry} is a symbolic link or not a regular file: "
                                  "certpilot never writes through one; remove it")
            others_plain = others_plain and plain
    except BaseException:
        os.close(fd)
        raise
    return fd, others_plain


def _write_new(dir_fd: int, filename: str, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    fd = os.open(filename, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
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


def _rename_one_by_one(root_fd: int, staging: str, current_fd: int, files: list[tuple[str, bytes, int]]) -> None:
    """Each new file renamed over the old one (each atomic, the set not): where the directory
    cannot be swapped (no RENAME_EXCHANGE, or entries of the operator's that are not plain files)."""
    new_fd = os.open(staging, _DIR_FLAGS, dir_fd=root_fd)
    try:
        for filename, _, _ in files:
            os.rename(filename, filename, src_dir_fd=new_fd, dst_dir_fd=current_fd)
        os.fsync(current_fd)
    finally:
        os.close(new_fd)


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
