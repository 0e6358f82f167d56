"""Labels of an external set (a holdout, such as the sample's test_labels.csv): each run's stored test predictions
scored on them, beside validation, and the gap between the two."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.metrics import roc_auc_score

from harness.data import clip, read_labels
from harness.data.submission import build_submission, parse_submission
from harness.errors import HarnessError


def read_test_labels(labels_csv: str | Path, flag: str = "--test-labels") -> pd.Series:
    """Known test labels (id,label; every id once, each label 0 or 1, both classes), or one line naming the file."""
    path = Path(labels_csv)
    if not path.is_file():
        raise HarnessError(f"{flag} {path}: {'not a regular file' if path.exists() else 'no such file'}")
    try:
        ids, labels = read_labels(path)  # the checks of train_labels.csv: columns, plain unique ids, labels 0/1
    except HarnessError as exc:
        raise HarnessError(f"{flag}: {exc}") from None
    except OSError as exc:
        raise HarnessError(f"{flag} {path}: cannot read it ({exc.strerror or exc})") from None
    if len(set(labels.tolist())) < 2:
        raise HarnessError(f"{flag} {path}: every label is {labels[0]}; an AUC needs both classes")
    return pd.Series(labels, index=pd.Index(ids, name="id"), name="label")


@dataclass(frozen=True)
class Holdout:
    """A labelled external set (say, the sample's test_labels.csv) read once; `flag` names it in errors."""

    path: Path
    labels: pd.Series
    flag: str = "--holdout"

    @classmethod
    def read(cls, labels_csv: str | Path, flag: str = "--holdout") -> Holdout:
        return cls(Path(labels_csv), read_test_labels(labels_csv, flag), flag)


def add_holdout(frame: pd.DataFrame, holdout: Holdout) -> pd.DataFrame:
    """Columns `holdout_auc` (each run's stored test predictions scored on the holdout's labels) and `gap`
    (val_auc - holdout_auc: how much validation flattered the run on images it never saw)."""
    scores = _submission_aucs(frame, holdout.labels, str(holdout.path), holdout.flag)
    held = pd.Series(scores, index=frame.index, dtype=float)
    return frame.assign(holdout_auc=held, gap=frame["val_auc"].astype(float) - held)


def _submission_aucs(frame: pd.DataFrame, truth: pd.Series, labels_csv: str, flag: str) -> list[float | None]:
    """ROC AUC of each run's submission on `truth`; None for a run without one."""
    scores: list[float | None] = []
    for run, path in zip(frame["run"], frame["submission"], strict=True):
        if not isinstance(path, str) or not Path(path).exists():
            scores.append(None)
            continue
        try:
            # Room for more rows than labels: a holdout missing some test ids gets the error naming the id below.
            submission = parse_submission(path, max_rows=2 * len(truth) + 100)
        except HarnessError as exc:
            raise HarnessError(f"run {run}: {exc}") from None
        unlabelled = submission.loc[~submission["id"].isin(truth.index), "id"]
        if len(unlabelled):
            raise HarnessError(f"{flag} {labels_csv} has no label for test id {clip(unlabelled.iloc[0])!r} (run {run})")
        absent = truth.index.difference(submission["id"])
        if len(absent):
            raise HarnessError(
                f"{flag} {labels_csv}: id {clip(absent[0])!r} is not in the test set of run {run}"
                f" ({len(absent)} of {len(truth)} labelled ids are not in its submission {path})"
            )
        ids, probabilities = submission["id"].tolist(), submission["label"].to_numpy()
        checked = build_submission(ids, probabilities, list(truth.index), f"run {run}: submission {path}")
        scores.append(float(roc_auc_score(truth.to_numpy(), checked["label"].to_numpy())))
    return scores


def holdout_note(frame: pd.DataFrame) -> str:
    """One line: how well validation AUC ranks the runs as the holdout does (Spearman), and the mean gap."""
    scored = frame[frame["rank"].notna()].dropna(subset=["val_auc", "holdout_auc"])
    if len(scored) < 3:
        return f"holdout: {len(scored)} ranked runs with both AUCs; a rank correlation needs 3 or more"
    rho = scored["val_auc"].rank().corr(scored["holdout_auc"].rank())  # Spearman: Pearson on ranks
    return (
        f"holdout: over {len(scored)} ranked runs, Spearman's rho between val AUC and holdout AUC is {rho:.3f};"
        f" mean gap val - holdout {scored['gap'].mean():+.4f}"
    )
