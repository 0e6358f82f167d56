"""Kaggle layout: read and validate labels and images, decode each image once into a uint8 memory-mapped cache."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from harness.data.decode import IMAGE_SHAPE, decode_image
from harness.errors import HarnessError

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
LABELS_CSV = "train_labels.csv"
SUBMISSION_CSV = "sample_submission.csv"
SYNTHETIC_MARKER = "HARNESS_SYNTHETIC"
# An image is "near-blank" (near-uniform) when the pixel standard deviation of each of its channels is below this.
BLANK_STD = 2.0
# Bump when the cache's content or layout changes, so old caches are never read (2: SHA-256 pixel digests).
CACHE_FORMAT = 2
_DIGEST_SIZE = 16
_CHUNK = 256
_MIN_CHUNK = 16
_FLUSH_EVERY = 32 << 20  # bytes written between two background syncs of a cache file
_TMP_PREFIX = ".tmp-"
MAX_ID_LENGTH = 255  # ids are file names: no file system takes longer ones

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


@dataclass(frozen=True)
class QualityReport:
    """What a data check found. Blank and duplicate images are reported here, never dropped."""

    n_train: int
    n_test: int
    label_counts: dict[int, int]
    blank_train_ids: list[str]
    blank_test_ids: list[str]
    duplicate_groups: list[list[str]]
    cross_duplicates: list[tuple[str, str]]
    conflicting_duplicate_groups: list[list[str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        counts = ", ".join(f"label {k}: {v}" for k, v in sorted(self.label_counts.items()))
        n_dup = sum(len(g) for g in self.duplicate_groups)
        out = [
            f"train: {self.n_train} labelled images ({counts})",
            f"test: {self.n_test} images",
            f"near-blank images (every channel's pixel std < {BLANK_STD:g}): {len(self.blank_train_ids)} train"
            f"{_examples(self.blank_train_ids)}, {len(self.blank_test_ids)} test{_examples(self.blank_test_ids)}",
            f"exact duplicates in train: {len(self.duplicate_groups)} groups holding {n_dup} images "
            f"({n_dup - len(self.duplicate_groups)} redundant copies); the stratified split keeps groups on one side",
        ]
        if self.conflicting_duplicate_groups:
            out.append(
                f"duplicate groups with conflicting labels: {len(self.conflicting_duplicate_groups)}"
                f"{_examples([g[0] for g in self.conflicting_duplicate_groups])}"
            )
        out.append(f"train/test exact duplicates: {len(self.cross_duplicates)} pairs")
        out.append("nothing is dropped: blank and duplicate images stay in the data")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_train": self.n_train,
            "n_test": self.n_test,
            "label_counts": {str(k): v for k, v in self.label_counts.items()},
            "blank_train_ids": self.blank_train_ids,
            "blank_test_ids": self.blank_test_ids,
            "duplicate_groups": self.duplicate_groups,
            "cross_duplicates": [list(p) for p in self.cross_duplicates],
            "conflicting_duplicate_groups": self.conflicting_duplicate_groups,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> QualityReport:
        return cls(
            n_train=raw["n_train"],
            n_test=raw["n_test"],
            label_counts={int(k): v for k, v in raw["label_counts"].items()},
            blank_train_ids=list(raw["blank_train_ids"]),
            blank_test_ids=list(raw["blank_test_ids"]),
            duplicate_groups=[list(g) for g in raw["duplicate_groups"]],
            cross_duplicates=[(a, b) for a, b in raw["cross_duplicates"]],
            conflicting_duplicate_groups=[list(g) for g in raw["conflicting_duplicate_groups"]],
        )


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
    data_dir: str | Path, cache_dir: str | Path, progress: bool = True, workers: int | None = None
) -> Dataset:
    """Validate a Kaggle-layout folder and return its images, decoding them only when the cache is stale."""
    folder = _survey(data_dir)
    cache_root = _cache_root(cache_dir)
    final = cache_root / folder.fingerprint
    cached = _open_cache(final, folder.fingerprint, folder.train_ids, folder.test_ids)
    from_cache = cached is not None
    if cached is None:
        _build_cache(cache_root, final, folder, progress, workers or os.cpu_count() or 1)
        cached = _open_cache(final, folder.fingerprint, folder.train_ids, folder.test_ids)
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
    folder = _survey(data_dir)
    cache_root = _cache_root(cache_dir)
    final = cache_root / folder.fingerprint
    n_workers = workers or os.cpu_count() or 1
    content = _content_fingerprint(folder, n_workers)
    old = _open_cache(final, folder.fingerprint, folder.train_ids, folder.test_ids)
    n = len(folder.train_ids) + len(folder.test_ids)
    if old is not None and _cached_content(final) == content:
        return f"rehash: the cache matches the bytes of all {n:,} images; nothing to decode"
    _build_cache(cache_root, final, folder, progress, n_workers, content=content, replace=True)
    new = _open_cache(final, folder.fingerprint, folder.train_ids, folder.test_ids)
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
        f" the old cache held{_examples(changed)}"
    )


@dataclass(frozen=True, eq=False)
class _Folder:
    """A validated Kaggle folder before any decoding: ids, labels, image paths and the cache's fingerprint."""

    root: Path
    train_ids: list[str]
    train_labels: np.ndarray
    train_paths: list[str]
    test_ids: list[str]
    test_paths: list[str]
    submission_ids: list[str]
    fingerprint: str


def _survey(data_dir: str | Path) -> _Folder:
    root = Path(data_dir)
    if not root.is_dir():
        raise HarnessError(f"data folder {root} does not exist or is not a folder")
    labels_csv = root / LABELS_CSV
    _refuse_symlink_out(root, labels_csv)
    if not labels_csv.is_file():
        raise HarnessError(f"{labels_csv} is missing: a Kaggle data folder holds train_labels.csv, train/ and test/")
    labels_bytes = labels_csv.read_bytes()
    _refuse_nul(labels_csv, labels_bytes)
    train_ids, train_labels = _read_labels(labels_csv)

    train_files = _scan_folder(root, "train")
    missing = [i for i in train_ids if i not in train_files]
    if missing:
        stripped = missing[0].strip()
        hint = (
            f"; id {shown(stripped)}, without the spaces, has one"
            if stripped != missing[0] and stripped in train_files
            else ""
        )
        raise HarnessError(
            f"{root / 'train'}: image for id {shown(missing[0])} (listed in {LABELS_CSV}) is missing"
            f" ({len(missing)} of {len(train_ids)} listed images are missing){hint}"
        )
    test_files = _scan_folder(root, "test")
    if not test_files:
        raise HarnessError(f"{root / 'test'} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    test_ids = sorted(test_files)

    submission_csv = root / SUBMISSION_CSV
    _refuse_symlink_out(root, submission_csv)
    submission_bytes = submission_csv.read_bytes() if submission_csv.is_file() else None
    if submission_bytes is not None:
        _refuse_nul(submission_csv, submission_bytes)
    submission_ids = _read_submission_ids(submission_csv, test_ids) if submission_bytes is not None else test_ids

    train_paths = [train_files[i] for i in train_ids]
    test_paths = [test_files[i] for i in test_ids]
    return _Folder(
        root=root,
        train_ids=train_ids,
        train_labels=train_labels,
        train_paths=train_paths,
        test_ids=test_ids,
        test_paths=test_paths,
        submission_ids=submission_ids,
        fingerprint=_fingerprint(labels_bytes, submission_bytes, train_paths, test_paths),
    )


def _cache_root(cache_dir: str | Path) -> Path:
    cache_root = Path(cache_dir)
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HarnessError(f"cannot create the cache folder {cache_root}: {e.strerror or e}") from None
    return cache_root


# ----------------------------------------------------------------------------- validation


# Every plain id matches this: 1 to MAX_ID_LENGTH characters, no leading dot, no separator, NUL or control
# character. One C-level match per id; check_plain_id words the reason for anything it refuses.
_PLAIN_ID = re.compile(rf"[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]{{0,{MAX_ID_LENGTH - 1}}}")


def check_plain_id(value: str, where: str) -> None:
    """Refuse an id that is not a plain file name, before it is ever joined to a path."""
    if _PLAIN_ID.fullmatch(value):
        return
    reason: str
    if len(value) > MAX_ID_LENGTH:
        reason = f"it is {len(value):,} characters long; an id names a file, at most {MAX_ID_LENGTH}"
    elif not value:
        reason = "it is empty"
    elif "/" in value or "\\" in value:
        reason = "it contains a path separator"
    elif "\0" in value:
        reason = "it contains a NUL character"
    elif value.startswith("."):
        reason = "it starts with a dot" if value not in (".", "..") else "it is a relative path"
    else:
        reason = "it contains a control character"
    raise HarnessError(f"{where}: id {clip(value)!r} is not a plain file name ({reason})")


def clip(text: str, limit: int = 80) -> str:
    """`text`, or its start and its length when longer than `limit`: messages stay one short line."""
    return text if len(text) <= limit else f"{text[:limit]}...({len(text):,} characters)"


# A surrogate that stands for an undecodable byte of a file name (os.fsdecode's surrogateescape), as repr shows it.
_ESCAPED_BYTE = re.compile(r"(?<!\\)((?:\\\\)*)\\udc([89a-f][0-9a-f])")


def shown(text: str, limit: int | None = 80) -> str:
    """An id or name for a message: as it is when plain, else quoted with repr's escapes, so that what is wrong
    with it can be seen (whitespace at either end, a NUL, a control or other unprintable character, an undecodable
    byte of a file name, shown as \\xff). Clipped to `limit` characters (None: never, for paths)."""
    plain = bool(text) and text.isprintable() and text == text.strip()
    text = clip(text, limit) if limit is not None else text
    return text if plain else _ESCAPED_BYTE.sub(r"\1\\x\2", repr(text))


def _refuse_nul(path: Path, raw: bytes) -> None:
    """pandas ends a field at a NUL byte and drops the rest silently: refuse it, naming the line and the field."""
    at = raw.find(b"\0")
    if at < 0:
        return
    start, end = raw.rfind(b"\n", 0, at) + 1, raw.find(b"\n", at)
    line = raw[start : len(raw) if end < 0 else end].rstrip(b"\r").decode("utf-8", "backslashreplace")
    field = next(f for f in line.split(",") if "\0" in f)
    line_number = raw.count(b"\n", 0, at) + 1
    raise HarnessError(
        f"{path} line {line_number}: {shown(field)} holds a NUL byte, which would cut it short silently;"
        " ids and labels never hold one"
    )


def _refuse_symlink_out(root: Path, path: Path) -> None:
    """Refuse `path`, a file or folder of the data folder, when it is a symlink out of that folder or in a loop:
    the rule images follow holds for train_labels.csv, sample_submission.csv, train/ and test/ too."""
    if not os.path.islink(path):
        return
    real_root = os.path.realpath(root)
    try:
        target = os.path.realpath(path, strict=True)
    except FileNotFoundError:
        return  # a dangling link: the caller reports the file as missing
    except OSError as e:
        raise HarnessError(f"{path} is a symlink loop ({e.strerror or e}); refusing it") from None
    if os.path.commonpath([target, real_root]) != real_root:
        raise HarnessError(f"{path} is a symlink to {target}, outside the data folder {root}; refusing it")


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise HarnessError(f"{path} is empty: expected a header line id,label") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise HarnessError(f"{path} is not a readable CSV file ({_one_line(e)})") from None


def _read_labels(path: Path) -> tuple[list[str], np.ndarray]:
    df = _read_csv(path)
    columns = [str(c) for c in df.columns]
    for required in ("id", "label"):
        if required not in columns:
            found = clip(",".join(columns))
            raise HarnessError(
                f"{path}: missing column {required!r} (header must be exactly id,label; found {found!r})"
            )
    extra = [c for c in columns if c not in ("id", "label")]
    if extra:
        raise HarnessError(f"{path}: unexpected column {clip(extra[0])!r} (the header must be exactly id,label)")
    if df.empty:
        raise HarnessError(f"{path} has a header but no rows")
    ids = df["id"].tolist()
    # Checked before any id is joined to a folder: line numbers count the header as line 1.
    if not all(map(_PLAIN_ID.fullmatch, ids)):
        for line, value in enumerate(ids, start=2):
            check_plain_id(value, f"{path} line {line}")
    dup = df["id"].duplicated(keep=False)
    if dup.any():
        first = ids[int(np.flatnonzero(dup.to_numpy())[0])]
        lines = [str(i + 2) for i in np.flatnonzero((df["id"] == first).to_numpy())[:2]]
        raise HarnessError(f"{path}: id {shown(first)} is listed more than once (lines {' and '.join(lines)})")
    raw = df["label"]
    numeric = pd.to_numeric(raw.str.strip(), errors="coerce")
    bad = ~numeric.isin([0, 1]).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise HarnessError(f"{path} line {i + 2}: label {clip(raw.iloc[i])!r} for id {shown(ids[i])} is not 0 or 1")
    return ids, numeric.to_numpy().astype(np.uint8)


def _read_submission_ids(path: Path, test_ids: list[str]) -> list[str]:
    df = _read_csv(path)
    if "id" not in df.columns:
        raise HarnessError(f"{path}: missing column 'id' (found {clip(','.join(map(str, df.columns)))!r})")
    ids = df["id"].tolist()
    dup = df["id"].duplicated()
    if dup.any():
        raise HarnessError(f"{path}: id {shown(ids[int(np.flatnonzero(dup.to_numpy())[0])])} is listed more than once")
    listed, present = set(ids), set(test_ids)
    if listed != present:
        n_diff = len(listed ^ present)
        extra = sorted(listed - present)
        if extra:
            raise HarnessError(f"{path}: id {shown(extra[0])} has no image in test/ ({n_diff} ids differ from test/)")
        absent = sorted(present - listed)
        raise HarnessError(f"{path}: test image {shown(absent[0])} is not listed ({n_diff} ids differ from test/)")
    return ids


def _scan_folder(root: Path, name: str) -> dict[str, str]:
    """Map id -> image path by listing the folder once; other files are ignored. Paths stay strings: a Path per
    image costs more than everything else the listing does."""
    folder = root / name
    _refuse_symlink_out(root, folder)
    if not folder.is_dir():
        raise HarnessError(f"{folder} is missing: a Kaggle data folder holds train_labels.csv, train/ and test/")
    # A file symlink may point anywhere inside the data folder (or the folder it sits in), nowhere else.
    allowed = (os.path.realpath(root), os.path.realpath(folder))
    found: dict[str, str] = {}
    extensions = frozenset(IMAGE_EXTENSIONS)
    plain = _PLAIN_ID.fullmatch
    with os.scandir(folder) as entries:
        for entry in entries:
            file_name = entry.name
            # os.path.splitext, inlined: the extension starts at the last dot, unless only dots come before it.
            dot = file_name.rfind(".")
            if dot <= 0 or file_name[dot:].lower() not in extensions:
                continue
            stem = file_name[:dot]
            if stem[0] == "." and not stem.strip("."):
                continue
            path = entry.path
            if not file_name.isascii():  # Kaggle's names are: the check costs nothing for them
                _refuse_undecodable(path)
            try:
                if entry.is_symlink():
                    target = os.path.realpath(path)
                    if not any(os.path.commonpath([target, a]) == a for a in allowed):
                        raise HarnessError(
                            f"{path} is a symlink to {target}, outside the data folder {root}; refusing it"
                        )
                if not entry.is_file():
                    continue
            except OSError as e:
                loop = e.errno == errno.ELOOP
                what = "is a symlink loop" if loop else "cannot be read"
                raise HarnessError(f"{path} {what} ({e.strerror or e}){'; refusing it' if loop else ''}") from None
            if not plain(stem):
                check_plain_id(stem, path)
            if stem in found:
                other = os.path.basename(found[stem])
                raise HarnessError(f"{path}: id {shown(stem)} has two image files ({other} and {file_name})")
            found[stem] = path
    return found


def _refuse_undecodable(path: str) -> None:
    """A file name that is not valid UTF-8 cannot be an id (ids are text, and go into UTF-8 CSVs)."""
    try:
        os.path.basename(path).encode()
    except UnicodeEncodeError:
        raise HarnessError(
            f"{shown(path, None)}: the file name is not valid UTF-8, so it cannot be an id; rename the file"
        ) from None


# ----------------------------------------------------------------------------- cache


def _fingerprint(
    labels_bytes: bytes, submission_bytes: bytes | None, train_paths: list[str], test_paths: list[str]
) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"harness-cache-format={CACHE_FORMAT}\n".encode())
    h.update(b"labels\0" + labels_bytes + b"\0")
    h.update(b"submission\0" + (submission_bytes if submission_bytes is not None else b"<none>") + b"\0")
    stat, basename = os.stat, os.path.basename
    for part, paths in (("train", train_paths), ("test", test_paths)):
        lines = []
        for path in sorted(paths):  # the order sorting them as Paths gives
            st = stat(path)
            lines.append(f"{part}/{basename(path)}\0{st.st_size}\0{st.st_mtime_ns}\n")
        h.update("".join(lines).encode())  # one update: the digest of one per line
    return h.hexdigest()


def _open_cache(
    final: Path, fingerprint: str, train_ids: list[str], test_ids: list[str]
) -> tuple[ImageSet, ImageSet, QualityReport] | None:
    """Open a finished cache, or return None when there is none or it does not match."""
    meta_path = final / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") != fingerprint or meta.get("format") != CACHE_FORMAT:
            return None
        sets = []
        for part, ids in (("train", train_ids), ("test", test_ids)):
            cached_ids = np.load(final / f"{part}_ids.npy")
            images = np.load(final / f"{part}_images.npy", mmap_mode="r")
            digests = np.load(final / f"{part}_digests.npy")
            labels = np.load(final / "train_labels.npy") if part == "train" else None
            if cached_ids.tolist() != ids or images.shape != (len(ids), *IMAGE_SHAPE) or len(digests) != len(ids):
                return None
            sets.append(ImageSet(ids=cached_ids, images=images, labels=labels, digests=digests))
        return sets[0], sets[1], QualityReport.from_dict(meta["report"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _build_cache(
    cache_root: Path,
    final: Path,
    folder: _Folder,
    progress: bool,
    workers: int,
    content: str | None = None,
    replace: bool = False,
) -> None:
    """Decode everything into a temporary folder, then rename it into place: a half build never looks valid.

    The free space is checked first (the cache's size is known), and a disk that fills up all the same is one
    line, with nothing of the build left behind. `content`, a fingerprint of the files' bytes, is recorded;
    `replace` puts this build in place even over a valid cache of the same name (a rehash found it stale).
    """
    _remove_dead_builds(cache_root)  # their space counts as free
    needed = _cache_bytes(folder)
    free = shutil.disk_usage(cache_root).free
    if needed > free:
        raise HarnessError(
            f"{cache_root}: not enough free space for the decoded cache: it needs {_size(needed)}"
            f" ({len(folder.train_ids) + len(folder.test_ids):,} images of 96x96x3 bytes, and their ids),"
            f" {_size(free)} are free; free some space or put the results folder on a larger disk (--results)"
        )
    try:
        _build_cache_files(cache_root, final, folder, progress, workers, content, replace)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise HarnessError(
            f"{cache_root}: the disk filled up while the decoded cache was built ({e.strerror or e}); it needs"
            f" {_size(needed)}, {_size(free)} were free when it started; nothing of it was kept"
        ) from None


# What a cache holds besides its pixels and ids: .npy headers, digests and labels are counted, this is the rest
# (meta.json with the quality report) and the file system's rounding up to whole blocks.
_CACHE_SLACK = 64 << 10


def _cache_bytes(folder: _Folder) -> int:
    """The bytes a cache of this folder takes on disk, before meta.json: pixels, ids (numpy's UTF-32), digests."""
    n_train, n = len(folder.train_ids), len(folder.train_ids) + len(folder.test_ids)
    # numpy stores each id array with the longest id's length, 4 bytes a character
    id_chars = max(map(len, folder.train_ids), default=1) * n_train
    id_chars += max(map(len, folder.test_ids), default=1) * (n - n_train)
    return n * (int(np.prod(IMAGE_SHAPE)) + _DIGEST_SIZE) + 4 * id_chars + n_train + 6 * 128 + _CACHE_SLACK


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n:,} bytes"


def _build_cache_files(
    cache_root: Path,
    final: Path,
    folder: _Folder,
    progress: bool,
    workers: int,
    content: str | None,
    replace: bool,
) -> None:
    fingerprint, train_ids, test_ids = folder.fingerprint, folder.train_ids, folder.test_ids
    # The host and pid in the name let a later build remove what a killed build left behind.
    prefix = f"{_TMP_PREFIX}{fingerprint}-{socket.gethostname()}-{os.getpid()}-"
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=cache_root))
    try:
        start = time.perf_counter()
        with _ProgressBar(progress) as advance:
            train_digests, train_std, train_flush = _decode_all(
                tmp / "train_images.npy", folder.train_paths, workers, advance, "train"
            )
            test_digests, test_std, test_flush = _decode_all(
                tmp / "test_images.npy", folder.test_paths, workers, advance, "test"
            )
        seconds = time.perf_counter() - start
        n = len(train_ids) + len(test_ids)
        log.info("decoded %d images in %.1f s (%.0f images/s)", n, seconds, n / max(seconds, 1e-9))
        np.save(tmp / "train_ids.npy", np.asarray(train_ids, dtype=str))
        np.save(tmp / "test_ids.npy", np.asarray(test_ids, dtype=str))
        np.save(tmp / "train_labels.npy", folder.train_labels.astype(np.uint8))
        np.save(tmp / "train_digests.npy", train_digests)
        np.save(tmp / "test_digests.npy", test_digests)
        report = _quality_report(
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
        if not replace and final.exists() and _open_cache(final, fingerprint, train_ids, test_ids) is not None:
            return  # another process built the same cache meanwhile, and may be reading it: keep it, drop ours
        if final.exists():
            # A stale or broken cache under this name: move it aside first (a rename cannot replace a full folder).
            # A process still reading it keeps its memory maps: the files go only when it closes them.
            aside = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}old-", dir=cache_root))
            os.replace(final, aside / "old")
            shutil.rmtree(aside, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process finished the same cache first; its copy is as good as ours.
            if not (final / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _content_fingerprint(folder: _Folder, workers: int) -> str:
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


def _cached_content(final: Path) -> str | None:
    try:
        return json.loads((final / "meta.json").read_text()).get("content")
    except (OSError, ValueError, AttributeError):
        return None


def _chunks(n: int, workers: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges of at most _CHUNK images, smaller towards the end so that the threads finish together."""
    out, lo = [], 0
    while lo < n:
        size = min(_CHUNK, max(_MIN_CHUNK, (n - lo) // (2 * workers)))
        out.append((lo, min(lo + size, n)))
        lo += size
    return out


def _remove_dead_builds(cache_root: Path) -> None:
    """Delete temporary folders left by builds on this host whose process no longer exists."""
    host = socket.gethostname()
    for entry in cache_root.glob(f"{_TMP_PREFIX}*-{host}-*-*"):
        try:
            pid = int(entry.name.rsplit("-", 2)[-2])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except (ValueError, PermissionError, IndexError):
            continue


def _decode_all(
    out_path: Path, paths: list[str], workers: int, advance: Callable[[str, int, int], None], part: str
) -> tuple[np.ndarray, np.ndarray, _Flusher]:
    """Decode `paths` in parallel into a new .npy file; return per-image digests, largest channel std, and the
    flusher still syncing the file (join it before relying on the file being on disk).

    Each chunk is decoded into a small buffer and written with pwrite, not through a writable memory map: mapped
    pages would count as the process's resident memory (6.5 GiB at Kaggle scale), written ones do not.
    """
    header = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.uint8, shape=(len(paths), *IMAGE_SHAPE))
    offset, row_bytes = header.offset, int(np.prod(IMAGE_SHAPE))
    del header  # the header and the file's size are written; the pixels go through `fd`
    digests = np.zeros(len(paths), dtype=f"S{_DIGEST_SIZE}")
    stds = np.zeros(len(paths), dtype=np.float32)
    fd = os.open(out_path, os.O_WRONLY)
    try:
        flusher = _Flusher(fd)  # owns fd from here on
    except BaseException:
        os.close(fd)
        raise
    sha256, mean_std = hashlib.sha256, cv2.meanStdDev

    buffers = threading.local()

    def work(lo: int, hi: int) -> int:
        decode = decode_image  # looked up here, not at import: tests replace it
        # One buffer per thread, reused: a fresh 7 MB array per chunk costs a page fault per 4 KB.
        whole = getattr(buffers, "chunk", None)
        if whole is None:
            whole = buffers.chunk = np.empty((_CHUNK, *IMAGE_SHAPE), dtype=np.uint8)
        chunk = whole[: hi - lo]
        sums, sds = [], np.empty((hi - lo, IMAGE_SHAPE[2]))
        for k, path in enumerate(paths[lo:hi]):
            row = chunk[k]
            rgb = decode(path, row)
            if rgb is not row:
                row[...] = rgb
            # The decoders and hashlib release the GIL, so threads decode in parallel; SHA-256 runs on the CPU's
            # SHA unit.
            sums.append(sha256(rgb.data).digest()[:_DIGEST_SIZE])
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
            pending = {pool.submit(work, lo, hi) for lo, hi in _chunks(len(paths), workers)}
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                for fut in done:
                    if fut.exception() is not None:
                        for other in pending:
                            other.cancel()
                        raise fut.exception()  # type: ignore[misc]
                    advance(part, fut.result(), len(paths))
    finally:
        flusher.close()
    return digests, stds, flusher


class _Flusher:
    """Sends a file's written pages to disk while more are written, so the fsync before the rename finds little.

    A thread calls fdatasync after every _FLUSH_EVERY bytes written: the disk works while the CPUs decode, instead of
    after them (at the end, 0.6 GB of dirty pages took 0.15-0.25 s to sync). It owns the fd and closes it after
    its last sync. Durability still comes from the fsync of each finished file before the rename, after `join`,
    which raises the error a sync met: a write error the kernel has reported once is not reported again.
    """

    def __init__(self, fd: int) -> None:
        self.fd, self.every = fd, _FLUSH_EVERY
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


class _ProgressBar:
    """A rich progress bar with images/s on stderr, or a no-op; used as `with ... as advance`."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tasks: dict[str, Any] = {}
        self.bar: Any = None

    def __enter__(self) -> Callable[[str, int, int], None]:
        if not self.enabled:
            return lambda part, n, total: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("decoding {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} images/s"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self.bar.__enter__()
        return self._advance

    def _advance(self, part: str, n: int, total: int) -> None:
        if part not in self.tasks:
            self.tasks[part] = self.bar.add_task(part, total=total, rate="-")
        task_id = self.tasks[part]
        self.bar.advance(task_id, n)
        task = self.bar.tasks[task_id]
        elapsed = task.elapsed or 0.0
        if elapsed > 0:
            self.bar.update(task_id, rate=f"{task.completed / elapsed:,.0f}")

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


# ----------------------------------------------------------------------------- quality report


def _quality_report(
    train_ids: list[str],
    train_labels: np.ndarray,
    train_digests: np.ndarray,
    train_std: np.ndarray,
    test_ids: list[str],
    test_digests: np.ndarray,
    test_std: np.ndarray,
) -> QualityReport:
    groups: dict[bytes, list[int]] = defaultdict(list)
    for i, d in enumerate(train_digests.tolist()):
        groups[d].append(i)
    duplicate_groups = [idx for idx in groups.values() if len(idx) > 1]
    cross = [(train_ids[i], test_ids[j]) for j, d in enumerate(test_digests.tolist()) if d in groups for i in groups[d]]
    return QualityReport(
        n_train=len(train_ids),
        n_test=len(test_ids),
        label_counts={0: int((train_labels == 0).sum()), 1: int((train_labels == 1).sum())},
        blank_train_ids=_ids_where(train_ids, train_std < BLANK_STD),
        blank_test_ids=_ids_where(test_ids, test_std < BLANK_STD),
        duplicate_groups=[[train_ids[i] for i in g] for g in duplicate_groups],
        cross_duplicates=cross,
        conflicting_duplicate_groups=[
            [train_ids[i] for i in g] for g in duplicate_groups if len({int(train_labels[i]) for i in g}) > 1
        ],
    )


def _ids_where(ids: list[str], mask: np.ndarray) -> list[str]:
    return [ids[i] for i in np.flatnonzero(mask)]


def _examples(ids: Iterable[str], k: int = 3) -> str:
    ids = list(ids)
    if not ids:
        return ""
    more = f", +{len(ids) - k} more" if len(ids) > k else ""
    return f" (e.g. {', '.join(map(shown, ids[:k]))}{more})"


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
