"""Writing exported files (certificates, chains, private keys) into a directory that
other local users may be able to write to, without ever following a symlink.

The directory is opened once with O_NOFOLLOW; each file is written to a fresh
temporary name created with O_CREAT|O_EXCL|O_NOFOLLOW (a name planted in advance
makes the open fail, it is never written through), then renamed over the target
inside that directory. A target that is a symlink or anything but a regular file
is refused, with a clear error, before anything is written.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

from certpilot.domain.errors import InvalidInput

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(out_dir: Path) -> int:
    try:
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        pass  # a non-directory (or a symlink to one): the open below says which
    try:
        return os.open(out_dir, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP or out_dir.is_symlink():
            raise InvalidInput(f"refusing to export into {out_dir}: it is a symbolic link; give the real "
                               "directory", field="out") from None
        if exc.errno == errno.ENOTDIR:
            raise InvalidInput(f"refusing to export into {out_dir}: it is not a directory", field="out") from None
        raise InvalidInput(f"cannot open {out_dir}: {exc.strerror}", field="out") from None


def _check_target(dir_fd: int, out_dir: Path, name: str) -> None:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise InvalidInput(f"refusing to write {out_dir / name}: it is a symbolic link (someone may be trying to "
                           "capture what certpilot writes there); remove it and export again", field="out")
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInput(f"refusing to write {out_dir / name}: it exists and is not a regular file", field="out")


def write_files(out_dir: Path, files: Sequence[tuple[str, bytes, int]]) -> tuple[Path, ...]:
    """Write each (file name, content, mode) into `out_dir` (created 0700 if missing),
    each replaced atomically; raises InvalidInput, writing nothing, if `out_dir` or a
    target is a symlink or not what it should be."""
    dir_fd = _open_dir(out_dir)
    try:
        for name, _, _ in files:
            if "/" in name or name in ("", ".", ".."):
                raise ValueError(f"not a file name: {name!r}")
            _check_target(dir_fd, out_dir, name)
        for name, data, mode in files:
            temp = f".{name}.{secrets.token_hex(8)}.tmp"
            fd = os.open(temp, _FILE_FLAGS, mode, dir_fd=dir_fd)
            try:
                with os.fdopen(fd, "wb") as f:
                    os.fchmod(f.fileno(), mode)  # whatever the umask made of it
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                _check_target(dir_fd, out_dir, name)
                os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)  # rename never follows a link
            except BaseException:
                try:
                    os.unlink(temp, dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
                raise
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return tuple(out_dir / name for name, _, _ in files)
