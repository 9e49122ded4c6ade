"""Paths given by users, checked by one rule: absolute, plain, and never reaching what
certpilot guards (its data dir, master key, database).

`checked_path` validates a path a user gives (a profile's `--allow-read`/`--allow-write`
grants in services.profiles, a `--deploy-root` in services.deployment); `reach` is the
rule underneath, also used where a script host's paths are chosen (issuers.sandbox): a
path reaches a guarded path when it is it, lies inside it or contains it, compared both
as given and with symlinks resolved.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from certpilot.domain.errors import InvalidInput

MAX_PATH_CHARS = 4096


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


def checked_path(path: object, *, field: str, subject: str, guarded: Sequence[tuple[str, PurePosixPath]],
                 because: str) -> str:
    """`path` as an absolute, normalised POSIX path that reaches none of `guarded` (from `guard()`).

    Refused (InvalidInput with `field`) when it is not text, holds a NUL or non-UTF-8
    text, is longer than MAX_PATH_CHARS, is relative or has a `..` component, or reaches
    a guarded path. Each message starts with `subject` (what the caller calls the path,
    e.g. "allow_read path"); a guarded path's refusal ends with `because`.
    """
    if not isinstance(path, str):
        raise InvalidInput(f"{field} takes paths (text), got {type(path).__name__}", field=field)
    if "\x00" in path:
        raise InvalidInput(f"{subject} {path!r} contains a NUL character", field=field)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{subject} {path!r} is not valid UTF-8 text", field=field) from None
    if len(path) > MAX_PATH_CHARS:
        raise InvalidInput(f"{subject} is too long: paths are at most {MAX_PATH_CHARS} characters", field=field)
    if not path.startswith("/"):
        raise InvalidInput(f"{subject} {path!r} is not absolute: give it from the root, like /srv/certs",
                           field=field)
    if ".." in path.split("/"):
        raise InvalidInput(f"{subject} {path!r} has a '..' component: give the path without it", field=field)
    normal = "/" + posixpath.normpath(path).lstrip("/")  # normpath keeps a leading "//"
    how = reach(normal, guarded)
    if how is not None:
        raise InvalidInput(f"{subject} {normal!r} {how}: {because}", field=field)
    return normal
