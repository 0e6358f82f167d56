"""The decoded cache: a folder of .npy files named by the data folder's fingerprint, built aside, renamed into place."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data.decode import IMAGE_SHAPE
from harness.data.decode_pool import DIGEST_SIZE, decode_all
from harness.data.layout import CACHE_FORMAT, Folder
from harness.data.quality import QualityReport, quality_report
from harness.errors import HarnessError
from harness.terminal.decode_bar import DecodeBar

TMP_PREFIX = ".tmp-"  # a folder a build works in; `harness clean` removes those of ended builds
# What a cache holds besides its pixels and ids: .npy headers, digests and labels are counted, this is the rest
# (meta.json with the quality report) and the file system's rounding up to whole blocks.
_CACHE_SLACK = 64 << 10
# Slices of a prefetch: POSIX_FADV_WILLNEED reads at most the device's readahead window a call (one call over a
# whole 553 MB cache read 2% of it), so it is asked for in slices no larger than the smallest usual window.
PREFETCH_SLICE = 128 << 10

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Ids, decoded RGB images (a read-only memmap of the cache), labels (train only) and pixel digests."""

    ids: np.ndarray
    images: np.ndarray
    labels: np.ndarray | None
    digests: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def cache_root(cache_dir: str | Path) -> Path:
    """The folder caches go in, created when missing."""
    root = Path(cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HarnessError(f"cannot create the cache folder {root}: {e.strerror or e}") from None
    return root


def open_cache(final: Path, folder: Folder, prefetch: bool = False) -> tuple[ImageSet, ImageSet, QualityReport] | None:
    """Open a finished cache of `folder`, or return None when there is none or it does not match. `prefetch`: the
    caller reads the pixels, so the kernel reads what is not in memory in the background (see `start_prefetch`)."""
    try:
        meta = json.loads((final / "meta.json").read_text())
        if meta.get("fingerprint") != folder.fingerprint or meta.get("format") != CACHE_FORMAT:
            return None
        sets = []
        for part, ids in (("train", folder.train_ids), ("test", folder.test_ids)):
            cached_ids = np.load(final / f"{part}_ids.npy")
            images = np.load(final / f"{part}_images.npy", mmap_mode="r")
            digests = np.load(final / f"{part}_digests.npy")
            labels = np.load(final / "train_labels.npy") if part == "train" else None
            if cached_ids.tolist() != ids or images.shape != (len(ids), *IMAGE_SHAPE) or len(digests) != len(ids):
                return None
            sets.append(ImageSet(ids=cached_ids, images=images, labels=labels, digests=digests))
        if prefetch:
            start_prefetch([final / "train_images.npy", final / "test_images.npy"])
        return sets[0], sets[1], QualityReport.from_dict(meta["report"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def memory_available() -> int:
    """Bytes the page cache could hold for us now: MemAvailable (free plus reclaimable), else physical memory."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 1 << 62  # unknown: as if everything fits


def start_prefetch(paths: list[Path]) -> threading.Thread | None:
    """Read `paths` into the page cache on a background thread when they fit in memory; a no-op for pages already
    there. A cache evicted since it was written (or written past the page cache) then feeds its first epoch from
    memory sooner than from page faults at random offsets: 553 MB in 0.3-0.5 s; one epoch of the 20,000-image
    sample, shuffled, right after the open, 28,000 -> 37,000 images/s. A cache larger than memory is left alone:
    reading it all would evict its own first pages."""
    try:
        total = sum(p.stat().st_size for p in paths)
    except OSError:
        return None
    if not hasattr(os, "posix_fadvise") or total > memory_available():
        return None
    thread = threading.Thread(target=_prefetch, args=(paths,), name="harness-cache-prefetch", daemon=True)
    thread.start()
    return thread


def _prefetch(paths: list[Path]) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # a cache replaced meanwhile: nothing to warm
        try:
            size = os.fstat(fd).st_size
            for offset in range(0, size, PREFETCH_SLICE):  # the kernel queues the reads: each call returns at once
                os.posix_fadvise(fd, offset, PREFETCH_SLICE, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass  # only a hint: the reads then fault the pages in as before
        finally:
            os.close(fd)


def build_cache(
    root: Path,
    final: Path,
    folder: Folder,
    progress: bool,
    workers: int,
    content: str | None = None,
    replace: bool = False,
    page_cache: bool = True,
) -> None:
    """Decode everything into a temporary folder, then rename it into place: a half build never looks valid.

    The free space is checked first (the cache's size is known), and a disk that fills up all the same is one
    line, with nothing of the build left behind. `content`, a fingerprint of the files' bytes, is recorded;
    `replace` puts this build in place even over a valid cache of the same name (a rehash found it stale).
    `page_cache=False` writes the pixels past the page cache, for a caller that reads none (see decode_all).
    """
    remove_dead_builds(root)  # their space counts as free
    needed = _cache_bytes(folder)
    free = shutil.disk_usage(root).free
    if needed > free:
        raise HarnessError(
            f"{root}: not enough free space for the decoded cache: it needs {_size(needed)}"
            f" ({len(folder.train_ids) + len(folder.test_ids):,} images of 96x96x3 bytes, and their ids),"
            f" {_size(free)} are free; free some space or put the results folder on a larger disk (--results)"
        )
    try:
        _build_files(root, final, folder, progress, workers, content, replace, page_cache)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise HarnessError(
            f"{root}: the disk filled up while the decoded cache was built ({e.strerror or e}); it needs"
            f" {_size(needed)}, {_size(free)} were free when it started; nothing of it was kept"
        ) from None


def _cache_bytes(folder: Folder) -> int:
    """The bytes a cache of this folder takes on disk, before meta.json: pixels, ids (numpy's UTF-32), digests."""
    n_train, n = len(folder.train_ids), len(folder.train_ids) + len(folder.test_ids)
    # numpy stores each id array with the longest id's length, 4 bytes a character
    id_chars = max(map(len, folder.train_ids), default=1) * n_train
    id_chars += max(map(len, folder.test_ids), default=1) * (n - n_train)
    return n * (int(np.prod(IMAGE_SHAPE)) + DIGEST_SIZE) + 4 * id_chars + n_train + 6 * 128 + _CACHE_SLACK


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes"


def _build_files(
    root: Path,
    final: Path,
    folder: Folder,
    progress: bool,
    workers: int,
    content: str | None,
    replace: bool,
    page_cache: bool,
) -> None:
    fingerprint, train_ids, test_ids = folder.fingerprint, folder.train_ids, folder.test_ids
    # The host and pid in the name let a later build remove what a killed build left behind.
    prefix = f"{TMP_PREFIX}{fingerprint}-{socket.gethostname()}-{os.getpid()}-"
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    train_flush = None
    try:
        start = time.perf_counter()
        with DecodeBar(progress) as advance:
            train_digests, train_std, train_flush = decode_all(
                tmp / "train_images.npy", folder.train_paths, workers, advance, "train", not page_cache
            )
            test_digests, test_std, test_flush = decode_all(
                tmp / "test_images.npy", folder.test_paths, workers, advance, "test", not page_cache
            )
        seconds = time.perf_counter() - start
        n = len(train_ids) + len(test_ids)
        log.info("decoded %d images in %.1f s (%.0f images/s)", n, seconds, n / max(seconds, 1e-9))
        np.save(tmp / "train_ids.npy", np.asarray(train_ids, dtype=str))
        np.save(tmp / "test_ids.npy", np.asarray(test_ids, dtype=str))
        np.save(tmp / "train_labels.npy", folder.train_labels.astype(np.uint8))
        np.save(tmp / "train_digests.npy", train_digests)
        np.save(tmp / "test_digests.npy", test_digests)
        report = quality_report(
            train_ids, folder.train_labels, train_digests, train_std, test_ids, test_digests, test_std
        )
        meta = {
            "format": CACHE_FORMAT,
            "fingerprint": fingerprint,
            "n_train": len(train_ids),
            "n_test": len(test_ids),
            "decode_seconds": round(seconds, 3),
            "report": report.to_dict(),
        }
        if content is not None:
            meta["content"] = content
        (tmp / "meta.json").write_text(json.dumps(meta))
        train_flush.join()
        test_flush.join()
        for path in tmp.iterdir():  # on disk before the rename makes the cache visible
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        if not replace and final.exists() and open_cache(final, folder) is not None:
            return  # another process built the same cache meanwhile, and may be reading it: keep it, drop ours
        if final.exists():
            # A stale or broken cache under this name (a rename cannot replace a full folder). A process still
            # reading it keeps its memory maps: the files go only when it closes them.
            discard_folder(final)
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process finished the same cache first; its copy is as good as ours.
            if not (final / "meta.json").is_file():
                raise
    finally:
        if train_flush is not None:
            train_flush.stop()  # after a failure, its fd must be closed before the files go
        shutil.rmtree(tmp, ignore_errors=True)


def content_fingerprint(folder: Folder, workers: int) -> str:
    """A digest of every image file's bytes, in id order, on top of the name/size/mtime fingerprint."""
    paths = folder.train_paths + folder.test_paths

    def digest(path: str) -> bytes:
        try:
            with open(path, "rb") as handle:  # file_digest reads in chunks: bounded memory whatever the size
                return hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=16)).digest()
        except OSError as e:
            raise HarnessError(f"{path}: cannot read the file ({e.strerror or e})") from None

    h = hashlib.blake2b(folder.fingerprint.encode(), digest_size=16)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # hashlib releases the GIL
        for d in pool.map(digest, paths):
            h.update(d)
    return h.hexdigest()


def cached_content(final: Path) -> str | None:
    """The content fingerprint a cache recorded (by a rehash), if any."""
    try:
        return json.loads((final / "meta.json").read_text()).get("content")
    except (OSError, ValueError, AttributeError):
        return None


def dead_build_pid(entry: Path) -> int | None:
    """The pid of the build that left this temporary cache folder on this host, when that process has ended."""
    name = entry.name
    if not name.startswith(TMP_PREFIX) or f"-{socket.gethostname()}-" not in name:
        return None
    try:
        pid = int(name.rsplit("-", 2)[-2])
        os.kill(pid, 0)
    except ProcessLookupError:
        return pid
    except (ValueError, PermissionError, IndexError):
        return None
    return None


def discard_folder(path: Path) -> None:
    """Delete a folder after moving it aside: a half-deleted cache never looks like a cache."""
    aside = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}old-", dir=path.parent))
    os.replace(path, aside / "old")
    shutil.rmtree(aside, ignore_errors=True)


def remove_dead_builds(root: Path) -> None:
    """Delete temporary folders left by builds on this host whose process no longer exists."""
    for entry in root.glob(f"{TMP_PREFIX}*-{socket.gethostname()}-*-*"):
        if dead_build_pid(entry) is not None:
            shutil.rmtree(entry, ignore_errors=True)
