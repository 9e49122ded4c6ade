"""Files that tests share with issuer scripts, which run sandboxed as another user.

A script reads or writes a path only when its profile grants it (`allow_read`,
`allow_write`) and the script user may reach it: pytest's temporary directories
are private to root, so a directory shared with scripts is opened up here (the
directory itself, and traverse-only permission on the way to it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


def share_with_scripts(directory: Path) -> str:
    """Let the script user traverse to `directory` and use it; returns it for a grant."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o1777)
    for parent in directory.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(parent, stat.S_IMODE(mode) | stat.S_IXOTH)
    return str(directory.resolve())


def grants_for(values: Iterable[str]) -> list[str]:
    """The directories of the absolute paths among profile parameter values, shared."""
    dirs = {Path(v).parent for v in values if v.startswith("/") and "\n" not in v}
    return sorted(share_with_scripts(d) for d in dirs)


@contextlib.contextmanager
def scripts_directory() -> Iterator[Path]:
    """A fresh directory under /tmp that sandboxed scripts may be granted, removed afterwards.

    Not under pytest's `tmp_path`: pytest sets its root (/tmp/pytest-of-USER) back to 0700
    whenever a session starts, so a run beside this one could take away the script user's
    way there in the middle of a test."""
    directory = Path(tempfile.mkdtemp(prefix="certpilot-scripts-"))
    try:
        os.chmod(directory, 0o1777)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
