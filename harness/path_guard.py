"""Paths that come from the store, a spec.json, a checkpoint or a config file: checked against the folder they must
stay inside before anything is read, written or deleted there.

Two rules, one per kind of use:
- a stored path is *named* inside its folder: relative to it after `..` is resolved lexically, never absolute
  elsewhere (`lexically_inside`); a record that names another place is not followed at all;
- before a file is written or deleted, its *real* place, every symlink followed, is inside the results folder
  (`really_inside`). A run folder the user moved to another disk and linked back is read through the link, but
  nothing in it is changed or removed: harness changes no file outside the results folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.errors import HarnessError


def lexically_inside(folder: str | Path, path: str | Path) -> bool:
    """Whether `path`, with `.` and `..` resolved as text (no symlink followed), lies in `folder` or is it."""
    base = os.path.normpath(os.path.abspath(folder))
    target = os.path.normpath(os.path.abspath(path))
    return target == base or target.startswith(base.rstrip(os.sep) + os.sep)


def really_inside(folder: str | Path, path: str | Path) -> bool:
    """Whether `path`, every symlink followed (a missing tail is taken as it is written), lies in `folder`."""
    base = os.path.realpath(folder)
    target = os.path.realpath(path)
    return target == base or target.startswith(base.rstrip(os.sep) + os.sep)


def outside_reason(folder: str | Path, path: str | Path) -> str | None:
    """Why `path` may not be changed by harness (None: it may): where it really lies, and through which link."""
    if really_inside(folder, path):
        return None
    real = os.path.realpath(path)
    link = _first_link(Path(path), Path(folder))
    via = f" through the symlink {link}" if link is not None else ""
    return f"{path} lies outside the results folder {folder} (it is {real}{via})"


def _first_link(path: Path, folder: Path) -> Path | None:
    """The first symlink on the way from `folder` down to `path`, if any."""
    try:
        relative = Path(os.path.abspath(path)).relative_to(os.path.abspath(folder))
    except ValueError:
        return None
    current = Path(os.path.abspath(folder))
    for part in relative.parts:
        current = current / part
        if current.is_symlink():
            return current
    return None


def refuse_outside(folder: str | Path, path: str | Path, doing: str) -> Path:
    """`path`, or a one-line error when writing or deleting it would change a file outside `folder`."""
    reason = outside_reason(folder, path)
    if reason is not None:
        raise HarnessError(f"refusing to {doing}: {reason}; harness changes nothing outside the results folder")
    return Path(path)
