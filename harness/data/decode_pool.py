"""Decode many image files on threads straight into a new .npy file, synced to disk in the background as it fills."""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

import cv2
import numpy as np

from harness.data.decode import IMAGE_SHAPE, decode_image

DIGEST_SIZE = 16
CHUNK = 256
MIN_CHUNK = 16
FLUSH_EVERY = 32 << 20  # bytes written between two background syncs of a cache file
# The pixels start this far into the .npy file (its header is padded to it), so that every chunk's offset and size
# are whole blocks of the disk (a row is 27,648 bytes: 54 blocks of 512), as direct writes need.
PIXELS_AT = 4096


# More decode threads stop paying off: on a 16-core machine (6,500 images, best of 3) 1, 2, 4, 8 and 16 threads
# prepared 7,069, 10,428, 12,075, 9,643 and 8,797 images/s. Each image still holds the GIL for its Python share
# (indexing, hashing, the write), so beyond a few threads they queue for it and contend for the disk.
MAX_DEFAULT_WORKERS = 4


def default_workers() -> int:
    """Decode threads: one per CPU this process may run on (its affinity, not the machine's count), at most
    MAX_DEFAULT_WORKERS; `workers=` (the bench, tests) still asks for any number."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_DEFAULT_WORKERS))


def chunks(n: int, workers: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges of at most CHUNK images, smaller towards the end so that the threads finish together."""
    out, lo = [], 0
    while lo < n:
        size = min(CHUNK, max(MIN_CHUNK, (n - lo) // (2 * workers)))
        out.append((lo, min(lo + size, n)))
        lo += size
    return out


def decode_all(
    out_path: Path,
    paths: list[str],
    workers: int,
    advance: Callable[[str, int, int], None],
    part: str,
    direct: bool = False,
) -> tuple[np.ndarray, np.ndarray, Flusher]:
    """Decode `paths` in parallel into a new .npy file; return per-image digests, largest channel std, and the
    flusher still syncing the file (join it before relying on the file being on disk).

    Each chunk is decoded into a small buffer and written with pwrite, not through a writable memory map: mapped
    pages would count as the process's resident memory (6.5 GiB at Kaggle scale), written ones do not. `direct`
    writes past the page cache (O_DIRECT) where the file system allows it: the kernel then spends about a quarter
    of the time per image (no page to allocate, copy and write back), but the pixels are not left in memory, so
    only a caller that reads none of them (`harness data check`) asks for it.
    """
    row_bytes = int(np.prod(IMAGE_SHAPE))
    offset = _create_npy(out_path, len(paths))
    digests = np.zeros(len(paths), dtype=f"S{DIGEST_SIZE}")
    stds = np.zeros(len(paths), dtype=np.float32)
    fd = _open_for_pixels(out_path, direct)
    try:
        flusher = Flusher(fd)  # owns fd from here on
    except BaseException:
        os.close(fd)
        raise
    sha256, mean_std = hashlib.sha256, cv2.meanStdDev

    buffers = threading.local()

    def work(lo: int, hi: int) -> int:
        decode = decode_image  # looked up here, not at import: tests replace it
        # One buffer per thread, reused: a fresh 7 MB array per chunk costs a page fault per 4 KB.
        whole = getattr(buffers, "chunk", None)
        if whole is None:  # page-aligned (an anonymous map), as direct writes need
            whole = buffers.chunk = np.frombuffer(mmap.mmap(-1, CHUNK * row_bytes), np.uint8).reshape(
                CHUNK, *IMAGE_SHAPE
            )
        chunk = whole[: hi - lo]
        sums, sds = [], np.empty((hi - lo, IMAGE_SHAPE[2]))
        for k, path in enumerate(paths[lo:hi]):
            row = chunk[k]
            rgb = decode(path, row)
            if rgb is not row:
                row[...] = rgb
            # The decoders and hashlib release the GIL, so threads decode in parallel; SHA-256 runs on the CPU's
            # SHA unit.
            sums.append(sha256(rgb.data).digest()[:DIGEST_SIZE])
            sds[k] = mean_std(rgb)[1][:, 0]
        digests[lo:hi] = sums
        stds[lo:hi] = sds.max(axis=1)
        view, at = chunk.data.cast("B"), offset + lo * row_bytes
        while view:
            written = os.pwrite(fd, view, at)
            view, at = view[written:], at + written
        flusher.wrote(chunk.nbytes)
        return hi - lo

    workers = max(1, workers)
    try:
        advance(part, 0, len(paths))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending = {pool.submit(work, lo, hi) for lo, hi in chunks(len(paths), workers)}
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                for fut in done:
                    if fut.exception() is not None:
                        for other in pending:
                            other.cancel()
                        raise fut.exception()  # type: ignore[misc]
                    advance(part, fut.result(), len(paths))
    except BaseException:
        flusher.stop()
        raise
    flusher.close()
    return digests, stds, flusher


def _create_npy(path: Path, n: int) -> int:
    """Create a .npy file of n uint8 images (its pixels still holes) whose pixels start at PIXELS_AT; return that."""
    header = {"descr": "|u1", "fortran_order": False, "shape": (n, *IMAGE_SHAPE)}
    # Format 1.0: magic, version, a 2-byte header length, then the header padded with spaces and ended by \n.
    text = repr(header).encode("latin1").ljust(PIXELS_AT - 10 - 1) + b"\n"
    with open(path, "wb") as handle:
        handle.write(b"\x93NUMPY\x01\x00" + (PIXELS_AT - 10).to_bytes(2, "little") + text)
        handle.truncate(PIXELS_AT + n * int(np.prod(IMAGE_SHAPE)))
    return PIXELS_AT


def _open_for_pixels(path: Path, direct: bool) -> int:
    """A write-only fd for the pixels: O_DIRECT when asked and the file system takes it (tmpfs does not)."""
    if direct and hasattr(os, "O_DIRECT"):
        try:
            return os.open(path, os.O_WRONLY | os.O_DIRECT)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
    return os.open(path, os.O_WRONLY)


class Flusher:
    """Sends a file's written pages to disk while more are written, so the fsync before the rename finds little.

    A thread calls fdatasync after every FLUSH_EVERY bytes written: the disk works while the CPUs decode, instead of
    after them (at the end, 0.6 GB of dirty pages took 0.15-0.25 s to sync). It owns the fd and closes it after
    its last sync. Durability still comes from the fsync of each finished file before the rename, after `join`,
    which raises the error a sync met: a write error the kernel has reported once is not reported again.
    """

    def __init__(self, fd: int) -> None:
        self.fd, self.every = fd, FLUSH_EVERY
        self.unsynced = 0
        self.closed = False
        self.error: OSError | None = None
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="harness-cache-flush", daemon=True)
        self.thread.start()

    def wrote(self, n: int) -> None:
        with self.cond:
            self.unsynced += n
            if self.unsynced >= self.every:
                self.cond.notify()

    def close(self) -> None:
        """Stop after the sync under way, if any, without waiting for it."""
        with self.cond:
            self.closed = True
            self.cond.notify()

    def stop(self) -> None:
        """Stop and wait until the fd is closed, raising nothing: after a failed build, before its files go (an
        open fd would keep a deleted file's space taken)."""
        self.close()
        self.thread.join()

    def join(self) -> None:
        """Wait for the last sync; raise what went wrong in any."""
        self.close()
        self.thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            while True:
                with self.cond:
                    self.cond.wait_for(lambda: self.closed or self.unsynced >= self.every)
                    if self.closed:
                        return
                    self.unsynced = 0
                if self.error is None:  # after an error, only wait: the fd stays open while others write to it
                    try:
                        os.fdatasync(self.fd)
                    except OSError as e:
                        self.error = e
        finally:
            os.close(self.fd)
