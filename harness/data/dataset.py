"""A data folder, loaded: validate it, open its cache or decode it once, and rehash it when asked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data.cache import (
    ImageSet,
    build_cache,
    cache_root,
    cached_content,
    content_fingerprint,
    open_cache,
)
from harness.data.decode_pool import default_workers
from harness.data.labels import examples, shown
from harness.data.layout import SYNTHETIC_MARKER, survey
from harness.data.quality import QualityReport
from harness.errors import HarnessError


@dataclass(frozen=True, eq=False)
class Dataset:
    """A validated Kaggle folder, decoded: train and test images, submission order and a quality report."""

    root: Path
    train: ImageSet
    test: ImageSet
    submission_ids: list[str]
    synthetic: bool
    report: QualityReport
    fingerprint: str
    # True when every array came from an existing cache and nothing was decoded.
    from_cache: bool
    cache_path: Path

    def duplicate_group_of_train(self) -> np.ndarray:
        """An int group per train image; images with identical pixels share a group."""
        return np.unique(self.train.digests, return_inverse=True)[1].astype(np.int64).reshape(-1)


def load_dataset(
    data_dir: str | Path,
    cache_dir: str | Path,
    progress: bool = True,
    workers: int | None = None,
    page_cache: bool = True,
) -> Dataset:
    """Validate a Kaggle-layout folder and return its images, decoding them only when the cache is stale.

    A cache built here stays in the page cache, so the first epoch reads memory; `page_cache=False` writes it past
    the page cache (O_DIRECT, a quarter of the kernel's time per image), for a caller that reads no pixel.
    """
    folder = survey(data_dir)
    root = cache_root(cache_dir)
    final = root / folder.fingerprint
    cached = open_cache(final, folder, prefetch=page_cache)  # page_cache=False: the caller reads no pixel
    from_cache = cached is not None
    if cached is None:
        build_cache(root, final, folder, progress, workers or default_workers(), page_cache=page_cache)
        cached = open_cache(final, folder, prefetch=page_cache)
        if cached is None:
            raise HarnessError(f"cache {final} could not be read back after building it")
    train, test, report = cached
    return Dataset(
        root=folder.root,
        train=train,
        test=test,
        submission_ids=list(folder.submission_ids),
        synthetic=(folder.root / SYNTHETIC_MARKER).is_file(),
        report=report,
        fingerprint=folder.fingerprint,
        from_cache=from_cache,
        cache_path=final,
    )


def rehash_cache(data_dir: str | Path, cache_dir: str | Path, progress: bool = True, workers: int | None = None) -> str:
    """Check the cache against a fingerprint of every image's bytes, and rebuild it when they differ; say what it did.

    The cache is keyed by names, sizes and mtimes: a file replaced by another of the same name, size and mtime
    would keep its stale pixels. Hashing every byte (`harness data check --rehash`) catches that, at the cost of
    reading the whole folder once more.
    """
    folder = survey(data_dir)
    root = cache_root(cache_dir)
    final = root / folder.fingerprint
    n_workers = workers or default_workers()
    content = content_fingerprint(folder, n_workers)
    old = open_cache(final, folder)
    n = len(folder.train_ids) + len(folder.test_ids)
    if old is not None and cached_content(final) == content:
        return f"rehash: the cache matches the bytes of all {n:,} images; nothing to decode"
    build_cache(root, final, folder, progress, n_workers, content=content, replace=True)
    new = open_cache(final, folder)
    if new is None:
        raise HarnessError(f"cache {final} could not be read back after building it")
    if old is None:
        return f"rehash: built the cache from {n:,} images and recorded their content fingerprint"
    changed = [
        f"{part} {shown(i)}"
        for part, before, after in (("train", old[0], new[0]), ("test", old[1], new[1]))
        for i, a, b in zip(after.ids.tolist(), before.digests.tolist(), after.digests.tolist(), strict=True)
        if a != b
    ]
    return (
        f"rehash: rebuilt the cache from the files' bytes; {len(changed)} of {n:,} images had other pixels than"
        f" the old cache held{examples(changed)}"
    )
