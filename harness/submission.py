"""Kaggle submissions: probabilities per test id, validated, then written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from harness.atomic import atomic_path
from harness.errors import HarnessError


def build_submission(ids: Sequence[str], probabilities: np.ndarray, expected_ids: Sequence[str]) -> pd.DataFrame:
    """An `id,label` frame in `expected_ids` order; refuses missing, extra or repeated ids, NaN, values off [0, 1]."""
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if len(ids) != len(probabilities):
        raise HarnessError(f"submission has {len(ids)} ids but {len(probabilities)} predictions")
    frame = pd.DataFrame({"id": list(ids), "label": probabilities})
    if frame["id"].duplicated().any():
        raise HarnessError(f"submission repeats id {frame.loc[frame['id'].duplicated(), 'id'].iloc[0]}")
    missing = set(expected_ids) - set(frame["id"])
    if missing:
        raise HarnessError(f"submission lacks {len(missing)} test ids, e.g. {sorted(missing)[0]}")
    extra = set(frame["id"]) - set(expected_ids)
    if extra:
        raise HarnessError(f"submission has {len(extra)} ids that are not test images, e.g. {sorted(extra)[0]}")
    bad = ~np.isfinite(frame["label"]) | (frame["label"] < 0) | (frame["label"] > 1)
    if bad.any():
        row = frame[bad].iloc[0]
        raise HarnessError(f"submission label for id {row['id']} is {row['label']}, not a probability in [0, 1]")
    return frame.set_index("id").loc[list(expected_ids)].reset_index()


class SubmissionWriteError(HarnessError, OSError):
    """A submission could not be written (a full disk, say): one line for the CLI, still an OSError for callers."""


def write_submission(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write atomically: a failure (a full disk, say) leaves any earlier file at `path` as it was."""
    try:
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6f")
    except OSError as exc:
        state = "the previous file is unchanged" if Path(path).exists() else "nothing was written"
        raise SubmissionWriteError(f"cannot write submission {path}: {exc.strerror or exc}; {state}") from None
    return Path(path)


def read_submission(path: str | Path, expected_ids: Sequence[str]) -> pd.DataFrame:
    """Read and re-validate a submission file."""
    try:
        frame = pd.read_csv(path, dtype={"id": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise HarnessError(f"cannot read submission {path}: {exc}") from None
    if list(frame.columns) != ["id", "label"]:
        raise HarnessError(f"submission {path} must have columns id,label, found {','.join(frame.columns)}")
    return build_submission(frame["id"].tolist(), frame["label"].to_numpy(), expected_ids)
