"""Kaggle submissions: probabilities per test id, validated against the test set, then written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from harness.atomic import output_path
from harness.data import MAX_ID_LENGTH, SUBMISSION_CSV, clip, read_submission_ids, scan_folder
from harness.errors import HarnessError, one_line

# A submission row is an id, a comma, a number and a line end: a file longer than this per expected row is not
# a submission, and is refused before pandas reads it (bounded memory).
MAX_BYTES_PER_ROW = MAX_ID_LENGTH + 64


def expected_test_ids(data_dir: str | Path | None) -> list[str]:
    """The test ids of a Kaggle folder in submission order (sample_submission.csv's when present), decoding nothing."""
    if not data_dir:
        raise HarnessError("no data folder is recorded, so the test set is unknown")
    root = Path(data_dir)
    if not root.is_dir():
        raise HarnessError(f"data folder {root} does not exist or is not a folder")
    test_ids = sorted(scan_folder(root, "test"))
    if not test_ids:
        raise HarnessError(f"{root / 'test'} holds no images")
    sample = root / SUBMISSION_CSV
    return read_submission_ids(sample, test_ids) if sample.is_file() else test_ids


def build_submission(
    ids: Sequence[str], probabilities: np.ndarray, expected_ids: Sequence[str], source: str = "submission"
) -> pd.DataFrame:
    """An `id,label` frame in `expected_ids` order; refuses missing, extra or repeated ids, NaN, values off [0, 1].

    `probabilities` holds one value per id: shape (N,) or (N, 1). Anything wider is refused, never flattened.
    """
    try:
        values = np.asarray(probabilities, dtype=np.float64)
    except (TypeError, ValueError):
        raise HarnessError(f"{source}: the labels are not numbers") from None
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise HarnessError(f"{source}: needs one probability per id, got an array of shape {values.shape}")
    if len(ids) != len(values):
        raise HarnessError(f"{source} has {len(ids)} ids but {len(values)} predictions")
    frame = pd.DataFrame({"id": list(ids), "label": values})
    if frame["id"].duplicated().any():
        raise HarnessError(f"{source} repeats id {clip(str(frame.loc[frame['id'].duplicated(), 'id'].iloc[0]))!r}")
    missing = set(expected_ids) - set(frame["id"])
    if missing:
        raise HarnessError(
            f"{source} lacks {len(missing)} test ids of {len(expected_ids)}, e.g. {clip(sorted(missing)[0])!r}"
        )
    extra = set(frame["id"]) - set(expected_ids)
    if extra:
        raise HarnessError(
            f"{source} has {len(extra)} ids that are not test images, e.g. {clip(str(sorted(extra)[0]))!r}"
        )
    bad = ~np.isfinite(frame["label"]) | (frame["label"] < 0) | (frame["label"] > 1)
    if bad.any():
        row = frame[bad].iloc[0]
        raise HarnessError(f"{source}: label for id {row['id']} is {row['label']}, not a probability in [0, 1]")
    return frame.set_index("id").loc[list(expected_ids)].reset_index()


class SubmissionWriteError(HarnessError, OSError):
    """A submission could not be written (a full disk, say): one line for the CLI, still an OSError for callers."""


def write_submission(
    frame: pd.DataFrame, path: str | Path, expected_ids: Sequence[str], *, named: bool = False
) -> Path:
    """The one way a submission file is written: checked against the test set's ids (every id once, in
    `expected_ids` order, a finite probability in [0, 1]), then written atomically, so that a refusal or a
    failure (a full disk, say) leaves any earlier file at `path` as it was. `named`: the user named `path`
    (--out), so a symlink is followed and a FIFO or /dev/stdout is written through (harness.atomic.output_path)."""
    if list(frame.columns) != ["id", "label"]:
        raise HarnessError(f"submission for {path} must have columns id,label, not {','.join(map(str, frame.columns))}")
    checked = build_submission(frame["id"].tolist(), frame["label"].to_numpy(), expected_ids, f"submission for {path}")
    try:
        with output_path(path, named=named) as tmp:
            checked.to_csv(tmp, index=False, float_format="%.6f")
    except OSError as exc:
        state = "the previous file is unchanged" if Path(path).exists() else "nothing was written"
        raise SubmissionWriteError(f"cannot write submission {path}: {exc.strerror or exc}; {state}") from None
    return Path(path)


def parse_submission(path: str | Path, max_rows: int) -> pd.DataFrame:
    """An `id,label` file as written by the harness, as (str id, float label) rows, refused with one line when it is
    not one: missing, not a regular file, empty, larger than `max_rows` rows can be, cut off, not UTF-8 CSV, other
    columns, or a label that is not a number. Ids are not checked against any test set here."""
    path = Path(path)
    name = f"submission {path}"
    if not path.exists():
        raise HarnessError(f"{name} does not exist")
    if not path.is_file():
        raise HarnessError(f"{name} is not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise HarnessError(f"{name} is empty (0 bytes)")
    limit = (max_rows + 1) * MAX_BYTES_PER_ROW
    if size > limit:
        raise HarnessError(f"{name} is {size:,} bytes, more than {max_rows:,} rows can take ({limit:,} bytes at most)")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise HarnessError(f"{name} is not a UTF-8 id,label CSV file ({clip(one_line(exc), 200)})") from None
    if [str(c) for c in frame.columns] != ["id", "label"]:
        raise HarnessError(f"{name} must have columns id,label, found {clip(','.join(map(str, frame.columns)))!r}")
    with open(path, "rb") as handle:
        handle.seek(-1, 2)
        if handle.read(1) != b"\n":  # every CSV the harness writes ends with a line end: this one was cut off
            raise HarnessError(f"{name} does not end with a line end: it was cut off (truncated)")
    if frame.empty:
        raise HarnessError(f"{name} has a header but no rows")
    labels = pd.to_numeric(frame["label"].str.strip(), errors="coerce")
    bad = labels.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise HarnessError(
            f"{name} line {i + 2}: label {clip(frame['label'].iloc[i])!r} for id {clip(frame['id'].iloc[i])!r}"
            " is not a number"
        )
    return pd.DataFrame({"id": frame["id"], "label": labels.to_numpy(dtype=np.float64)})


def read_submission(path: str | Path, expected_ids: Sequence[str]) -> pd.DataFrame:
    """Read a submission file and validate it against the test set: every id of `expected_ids` exactly once, a
    finite probability in [0, 1]; returned in `expected_ids` order."""
    frame = parse_submission(path, max_rows=len(expected_ids))
    return build_submission(frame["id"].tolist(), frame["label"].to_numpy(), expected_ids, f"submission {path}")
