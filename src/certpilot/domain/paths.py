"""Whether a path reaches a guarded one (certpilot's data dir, master key, database).

One rule, used where a profile's grants are checked (services.profiles) and
where a script host's paths are chosen (issuers.sandbox): a path reaches a
guarded path when it is it, lies inside it or contains it, compared both as
given and with symlinks resolved.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath


def path_forms(path: str | Path) -> list[PurePosixPath]:
    """The path as given (made absolute), then with its symlinks resolved as far as they exist."""
    forms = [PurePosixPath(os.path.abspath(path))]
    try:
        resolved = PurePosixPath(os.path.realpath(path))
    except (OSError, ValueError):
        return forms  # not resolvable: the path as given is still checked
    return forms if resolved == forms[0] else [*forms, resolved]


def guard(protected: Sequence[tuple[str, str | Path]]) -> list[tuple[str, PurePosixPath]]:
    """(what, path) pairs as (what, form) pairs, each path in all its forms; give them most specific first."""
    return [(what, form) for what, path in protected if path for form in path_forms(path)]


def reach(path: str | Path, guarded: Sequence[tuple[str, PurePosixPath]]) -> str | None:
    """How `path` reaches a guarded path, in words; None when it does not.
    `guarded` comes from `guard()`, ordered most specific first."""
    forms = path_forms(path)
    for what, guarded_path in guarded:
        if guarded_path in forms:
            return f"is certpilot's {what} ({guarded_path})"
        if any(form.is_relative_to(guarded_path) for form in forms):
            return f"lies inside certpilot's {what} ({guarded_path})"
    for what, guarded_path in reversed(guarded):
        if any(guarded_path.is_relative_to(form) for form in forms):
            return f"contains certpilot's {what} ({guarded_path})"
    return None
