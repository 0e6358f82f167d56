"""Files named as input are read only when they are regular files of a sane size: a FIFO would block the command
for ever, a device (/dev/zero) would never end, a folder has nothing to read, and a multi-gigabyte file named as a
config is a mistake; each is refused with one line that names the file and what it is."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from harness.errors import HarnessError

MB = 1 << 20


def file_kind(path: str | Path) -> str:
    """What `path` is, symlinks followed: 'file', 'folder', 'fifo', 'character' or 'block' (devices), 'socket',
    'other', or 'missing' ('dangling' when it is a symlink to nowhere). Any other OSError is raised. The one
    classifier that input checks, image checks and output writers share."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "dangling" if os.path.islink(path) else "missing"
    for kind, test in _KINDS:
        if test(mode):
            return kind
    return "other"


_KINDS = (
    ("file", stat.S_ISREG),
    ("folder", stat.S_ISDIR),
    ("fifo", stat.S_ISFIFO),
    ("character", stat.S_ISCHR),
    ("block", stat.S_ISBLK),
    ("socket", stat.S_ISSOCK),
)
_INPUT_WORDS = {
    "dangling": "missing (a symlink to nowhere)",
    "missing": "missing",
    "folder": "a folder",
    "fifo": "a FIFO (a named pipe), which would block the read",
    "character": "a device, not a file",
    "block": "a device, not a file",
    "socket": "a socket",
    "other": "not a regular file",
}


def kind_of(path: Path) -> str | None:
    """What `path` is when it is not a regular file ('a FIFO', 'a device', ...), None when it is one; a missing
    path is 'missing'."""
    try:
        kind = file_kind(path)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return None if kind == "file" else _INPUT_WORDS[kind]


def read_input(path: str | Path, what: str, limit: int = 16 * MB) -> bytes:
    """The bytes of the input file `path` (described as `what` in messages), or one line that says why not."""
    path = Path(path)
    kind = kind_of(path)
    if kind is not None:
        raise HarnessError(f"{what} {path} is {kind}")
    size = path.stat().st_size
    if size > limit:
        raise HarnessError(f"{what} {path} is {size:,} bytes; a {what} is at most {limit:,}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise HarnessError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
