"""Kaggle's CSV files and ids: read train_labels.csv and sample_submission.csv, refuse any id that is no plain name."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError, clip

LABELS_CSV = "train_labels.csv"
SUBMISSION_CSV = "sample_submission.csv"
MAX_ID_LENGTH = 255  # ids are file names: no file system takes longer ones

# Every plain id matches this: 1 to MAX_ID_LENGTH characters, no leading dot, no separator, NUL or control
# character. One C-level match per id; check_plain_id words the reason for anything it refuses.
PLAIN_ID = re.compile(rf"[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]{{0,{MAX_ID_LENGTH - 1}}}")


def check_plain_id(value: str, where: str) -> None:
    """Refuse an id that is not a plain file name, before it is ever joined to a path."""
    if PLAIN_ID.fullmatch(value):
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


# A surrogate that stands for an undecodable byte of a file name (os.fsdecode's surrogateescape), as repr shows it.
_ESCAPED_BYTE = re.compile(r"(?<!\\)((?:\\\\)*)\\udc([89a-f][0-9a-f])")


def shown(text: str, limit: int | None = 80) -> str:
    """An id or name for a message: as it is when plain, else quoted with repr's escapes, so that what is wrong
    with it can be seen (whitespace at either end, a NUL, a control or other unprintable character, an undecodable
    byte of a file name, shown as \\xff). Clipped to `limit` characters (None: never, for paths)."""
    plain = bool(text) and text.isprintable() and text == text.strip()
    text = clip(text, limit) if limit is not None else text
    return text if plain else _ESCAPED_BYTE.sub(r"\1\\x\2", repr(text))


def examples(ids: list[str], k: int = 3) -> str:
    """' (e.g. a, b, c, +N more)' for a message, or '' when there are none."""
    if not ids:
        return ""
    more = f", +{len(ids) - k} more" if len(ids) > k else ""
    return f" (e.g. {', '.join(map(shown, ids[:k]))}{more})"


def refuse_nul(path: Path, raw: bytes) -> None:
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


def refuse_symlink_out(root: Path, path: Path) -> None:
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


def read_labels(path: Path, raw: bytes | None = None) -> tuple[list[str], np.ndarray]:
    """train_labels.csv's ids and 0/1 labels, every id checked to be a plain file name; `raw`: its bytes, if read.

    A plain file (header id,label, one `id,0` or `id,1` a line, nothing quoted) is split as text. Anything else,
    and any fault, goes through pandas, so an unusual file meets the same rules and messages whichever way it came.
    """
    plain = _plain_rows(raw if raw is not None else _read_bytes(path), "id,label")
    if plain is not None:
        ids, labels = plain
        if (
            ids
            and all(map(PLAIN_ID.fullmatch, ids))
            and len(set(ids)) == len(ids)
            and all(v == "0" or v == "1" for v in labels)
        ):
            return ids, (np.array(labels) == "1").astype(np.uint8)
    return _read_labels_pandas(path)


def _read_labels_pandas(path: Path) -> tuple[list[str], np.ndarray]:
    import pandas as pd

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
    if not all(map(PLAIN_ID.fullmatch, ids)):
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


def read_submission_ids(path: Path, test_ids: list[str], raw: bytes | None = None) -> list[str]:
    """sample_submission.csv's ids, which must be test/'s ids exactly, each once; `raw`: its bytes, if read."""
    plain = _plain_rows(raw if raw is not None else _read_bytes(path), None)
    if plain is not None and len(set(plain[0])) == len(plain[0]):
        ids = plain[0]
    else:
        df = _read_csv(path)
        if "id" not in df.columns:
            raise HarnessError(f"{path}: missing column 'id' (found {clip(','.join(map(str, df.columns)))!r})")
        ids = df["id"].tolist()
        dup = df["id"].duplicated()
        if dup.any():
            raise HarnessError(
                f"{path}: id {shown(ids[int(np.flatnonzero(dup.to_numpy())[0])])} is listed more than once"
            )
    listed, present = set(ids), set(test_ids)
    if listed != present:
        n_diff = len(listed ^ present)
        extra = sorted(listed - present)
        if extra:
            raise HarnessError(f"{path}: id {shown(extra[0])} has no image in test/ ({n_diff} ids differ from test/)")
        absent = sorted(present - listed)
        raise HarnessError(f"{path}: test image {shown(absent[0])} is not listed ({n_diff} ids differ from test/)")
    return ids


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None  # pandas says what is wrong with it


def _plain_rows(raw: bytes | None, header: str | None) -> tuple[list[str], list[str]] | None:
    """(ids, the column after id) of a plain CSV file, or None for anything pandas must read.

    Plain: UTF-8 without a BOM, lines ending in \\n or \\r\\n, no quote, no blank line, at least one row, and every
    row as many fields as the header, which is `header` when given, else holds `id` first and once (pandas would
    rename a repeated column). Such a file is exactly what pandas reads with dtype=str and no NA conversion.
    """
    if not raw or b'"' in raw or raw.startswith(b"\xef\xbb\xbf"):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            return None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if len(lines) < 2:
        return None
    columns = lines[0].split(",")
    if (header is not None and lines[0] != header) or columns[0] != "id" or columns.count("id") != 1:
        return None
    rows = [line.split(",") for line in lines[1:]]
    width = len(columns)
    if any(len(row) != width for row in rows):  # a blank line too: one field, which a header of two never has
        return None
    if width == 1:
        return None  # a blank line would pass as a row: pandas skips it
    ids = [row[0] for row in rows]
    second = [row[1] for row in rows]
    return ids, second


def _read_csv(path: Path) -> Any:
    import pandas as pd  # only for files the plain reader leaves to it: pandas takes longer to import than to read

    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise HarnessError(f"{path} is empty: expected a header line id,label") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        detail = " ".join(str(e).split()) or type(e).__name__  # pandas' message, on one line
        raise HarnessError(f"{path} is not a readable CSV file ({detail})") from None
