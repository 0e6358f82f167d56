"""A Kaggle folder before decoding: its CSVs, train/ and test/ listed once, and the fingerprint that names its cache."""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data.labels import (
    LABELS_CSV,
    PLAIN_ID,
    SUBMISSION_CSV,
    check_plain_id,
    read_labels,
    read_submission_ids,
    refuse_nul,
    refuse_symlink_out,
    shown,
)
from harness.errors import HarnessError
from harness.input_files import file_kind, kind_of

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
SYNTHETIC_MARKER = "HARNESS_SYNTHETIC"
# Bump when the cache's content or layout changes, so old caches are never read (2: SHA-256 pixel digests). It is
# part of the fingerprint, so a new format gets a new cache folder.
CACHE_FORMAT = 2


@dataclass(frozen=True, eq=False)
class Folder:
    """A validated Kaggle folder before any decoding: ids, labels, image paths and the cache's fingerprint."""

    root: Path
    train_ids: list[str]
    train_labels: np.ndarray
    train_paths: list[str]
    test_ids: list[str]
    test_paths: list[str]
    submission_ids: list[str]
    fingerprint: str


def survey(data_dir: str | Path) -> Folder:
    """Validate a Kaggle-layout folder (CSVs, ids, one image per id) and fingerprint it; nothing is decoded."""
    root = Path(data_dir)
    if not root.is_dir():
        raise HarnessError(f"data folder {root} does not exist or is not a folder")
    labels_csv = root / LABELS_CSV
    refuse_symlink_out(root, labels_csv)
    if not labels_csv.exists() and not labels_csv.is_symlink():
        raise HarnessError(f"{labels_csv} is missing: a Kaggle data folder holds train_labels.csv, train/ and test/")
    if (kind := kind_of(labels_csv)) is not None:
        raise HarnessError(f"{labels_csv} is {kind}; it must be a CSV file of id,label")
    labels_bytes = labels_csv.read_bytes()
    refuse_nul(labels_csv, labels_bytes)
    train_ids, train_labels = read_labels(labels_csv, labels_bytes)

    train_files = scan_folder(root, "train")
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
    test_files = scan_folder(root, "test")
    if not test_files:
        raise HarnessError(f"{root / 'test'} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    test_ids = sorted(test_files)

    submission_csv = root / SUBMISSION_CSV
    refuse_symlink_out(root, submission_csv)
    present = submission_csv.exists() or submission_csv.is_symlink()
    if present and (kind := kind_of(submission_csv)) is not None:  # never read as "absent": it fixes the row order
        raise HarnessError(f"{submission_csv} is {kind}; remove it or put Kaggle's sample_submission.csv there")
    submission_bytes = submission_csv.read_bytes() if present else None
    if submission_bytes is not None:
        refuse_nul(submission_csv, submission_bytes)
        submission_ids = read_submission_ids(submission_csv, test_ids, submission_bytes)
    else:
        submission_ids = test_ids

    train_paths = [train_files[i] for i in train_ids]
    test_paths = [test_files[i] for i in test_ids]
    return Folder(
        root=root,
        train_ids=train_ids,
        train_labels=train_labels,
        train_paths=train_paths,
        test_ids=test_ids,
        test_paths=test_paths,
        submission_ids=submission_ids,
        fingerprint=_fingerprint(labels_bytes, submission_bytes, train_paths, test_paths),
    )


def scan_folder(root: Path, name: str) -> dict[str, str]:
    """Map id -> image path by listing the folder once; other files are ignored. Paths stay strings: a Path per
    image costs more than everything else the listing does."""
    folder = root / name
    refuse_symlink_out(root, folder)
    if not folder.is_dir():
        raise HarnessError(f"{folder} is missing: a Kaggle data folder holds train_labels.csv, train/ and test/")
    # A file symlink may point anywhere inside the data folder (or the folder it sits in), nowhere else.
    allowed = (os.path.realpath(root), os.path.realpath(folder))
    found: dict[str, str] = {}
    extensions = frozenset(IMAGE_EXTENSIONS)
    plain = PLAIN_ID.fullmatch
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
                    # Never skipped: a test image dropped here would be a submission short of an id, silently.
                    raise HarnessError(f"{path} {_not_a_file(path)}; an image must be a regular file: remove it or"
                                       " put the image there")  # fmt: skip
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


def _not_a_file(path: str) -> str:
    """What an image-named entry is instead of a regular file, in words."""
    kind = file_kind(path)
    if kind in ("dangling", "missing"):
        return f"is a symlink to {os.path.realpath(path)}, which does not exist"
    return _IMAGE_WORDS.get(kind, "is not a regular file")


_IMAGE_WORDS = {
    "folder": "is a folder",
    "fifo": "is a FIFO (a named pipe), which would block the reader",
    "socket": "is a socket",
    "character": "is a device",
    "block": "is a device",
}


def _refuse_undecodable(path: str) -> None:
    """A file name that is not valid UTF-8 cannot be an id (ids are text, and go into UTF-8 CSVs)."""
    try:
        os.path.basename(path).encode()
    except UnicodeEncodeError:
        raise HarnessError(
            f"{shown(path, None)}: the file name is not valid UTF-8, so it cannot be an id; rename the file"
        ) from None


def _fingerprint(
    labels_bytes: bytes, submission_bytes: bytes | None, train_paths: list[str], test_paths: list[str]
) -> str:
    """The CSVs' bytes and every image's name, size and mtime: a changed file gives another cache."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"harness-cache-format={CACHE_FORMAT}\n".encode())
    h.update(b"labels\0" + labels_bytes + b"\0")
    h.update(b"submission\0" + (submission_bytes if submission_bytes is not None else b"<none>") + b"\0")
    basename = os.path.basename
    stat = os.stat
    for part, paths in (("train", train_paths), ("test", test_paths)):
        lines = []
        for path in sorted(paths):  # the order sorting them as Paths gives
            st = stat(path)
            lines.append(f"{part}/{basename(path)}\0{st.st_size}\0{st.st_mtime_ns}\n")
        h.update("".join(lines).encode())  # one update: the digest of one per line
    return h.hexdigest()
