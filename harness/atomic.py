"""Write files so that a reader sees the old version or the new one, never half of either."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def _create_beside(target: Path) -> Path:
    """A new empty file next to `target`, with the mode the umask gives (tempfile.mkstemp would give 0600)."""
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp{target.suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # another writer's temporary file: draw another name
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name beside {target}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_beside(target)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:  # flush to disk before the rename makes it visible
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Atomically replace `path` with `text`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def output_path(path: str | Path, *, named: bool = False) -> Iterator[Path]:
    """A temporary path to write an output to, put in place by the rule for what `path` already is.

    A regular file, or nothing: replaced atomically. A symlink: for a file the user named (`--out`), followed, as a
    shell redirection does: its target is replaced atomically and the link stays; for the harness's own files the
    link itself is replaced, so nothing outside the results folder changes. A FIFO or a character device
    (`--out /dev/stdout`): for a named output, the bytes are written straight through, never renamed over it (a
    FIFO with no reader is an error, not a hang); for the harness's own files it is refused. A folder, a socket or
    a block device is refused.
    """
    target = Path(path)
    kind = _kind(target)
    if kind == "stream" and named:
        with tempfile_beside_nothing() as tmp:
            yield tmp
            _write_through(tmp, target)
        return
    if kind in ("folder", "special") or (kind == "stream" and not named):
        what = {"folder": "a folder", "special": "a socket or block device"}.get(kind, "a FIFO or device")
        raise OutputRefused(f"{target} is {what}, not a file; refusing to write the output there")
    if named and target.is_symlink():
        target = Path(os.path.realpath(target))
    with atomic_path(target) as tmp:
        yield tmp


class OutputRefused(OSError):
    """An output path that is no place for a file (a folder, a socket, a FIFO among the harness's own files)."""


def _kind(path: Path) -> str:
    """'none', 'file', 'folder', 'stream' (a FIFO or a character device: written through) or 'special'."""
    from harness.input_files import file_kind

    try:
        kind = file_kind(path)  # follows symlinks: /dev/stdout is a link to /proc/self/fd/1
    except NotADirectoryError:
        return "none"
    if kind in ("missing", "dangling"):
        return "none"
    return {"file": "file", "folder": "folder", "fifo": "stream", "character": "stream"}.get(kind, "special")


@contextlib.contextmanager
def tempfile_beside_nothing() -> Iterator[Path]:
    """A temporary file in the system's temp folder (a stream's bytes are gathered there, then written at once)."""
    import tempfile

    fd, name = tempfile.mkstemp(prefix="harness-out-")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _write_through(source: Path, stream: Path) -> None:
    """Copy `source`'s bytes into a FIFO or character device without blocking on a FIFO that nobody reads."""
    import errno
    import stat

    flags = os.O_WRONLY | (os.O_NONBLOCK if stat.S_ISFIFO(stream.stat().st_mode) else 0)
    try:
        fd = os.open(stream, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise OutputRefused(f"{stream} is a FIFO that no process is reading; nothing was written") from None
        raise
    try:
        os.set_blocking(fd, True)  # opened without waiting; the writes may wait for the reader as a pipe's do
        data = source.read_bytes()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
