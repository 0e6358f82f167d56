"""Files named as input are read only when they are regular files of a sane size: a FIFO would block the command
for ever, a device (/dev/zero) would never end, a folder has nothing to read, and a multi-gigabyte file named as a
config is a mistake; each is refused with one line that names the file and what it is."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from harness.errors import HarnessError

MB = 1 << 20


def kind_of(path: Path) -> str | None:
    """What `path` is when it is not a regular file ('a FIFO', 'a device', ...), None when it is one; a missing
    path is 'missing'."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing (a symlink to nowhere)" if os.path.islink(path) else "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (a named pipe), which would block the read"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a file"
    return "a socket" if stat.S_ISSOCK(mode) else "not a regular file"


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
