"""The decoded cache and the page cache: a cache opened for training is read into memory in the background."""

from __future__ import annotations

import ctypes
import mmap
import os
import time
from pathlib import Path

import numpy as np
import pytest

from harness.data import load_dataset

pytestmark = [
    pytest.mark.backend_free,
    pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="needs posix_fadvise (Linux)"),
]


def resident(path: Path) -> float:
    """The fraction of the file's pages in the page cache (mincore over a read-only map of it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vector = (ctypes.c_ubyte * pages)()
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ) as mapped:
        view = np.frombuffer(mapped, np.uint8)
        if libc.mincore(ctypes.c_void_p(view.ctypes.data), ctypes.c_size_t(size), vector) != 0:
            pytest.skip(f"mincore failed: {os.strerror(ctypes.get_errno())}")
        del view
    return sum(v & 1 for v in vector) / pages


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_a_cache_opened_for_training_is_read_back_into_memory(make_kaggle, cache_dir):
    data = make_kaggle(n_train=120, n_test=20)
    pixels = load_dataset(data, cache_dir, progress=False, page_cache=False).cache_path / "train_images.npy"
    evict(pixels)
    if resident(pixels) > 0.1:
        pytest.skip("this file system keeps the file in memory (tmpfs?): nothing to read back")
    load_dataset(data, cache_dir, progress=False)  # a run opens the cache: its first epoch will read every pixel
    deadline = time.monotonic() + 10
    while resident(pixels) < 0.99 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert resident(pixels) >= 0.99
