"""Files that tests share with issuer scripts, which run sandboxed as another user.

A script reads or writes a path only when its profile grants it (`allow_read`,
`allow_write`) and the script user may reach it: pytest's temporary directories
are private to root, so a directory shared with scripts is opened up here (the
directory itself, and traverse-only permission on the way to it).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
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
