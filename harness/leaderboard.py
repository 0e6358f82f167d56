"""Rank runs by a validation metric; render as a rich table, CSV or Markdown; copy out the best submission."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from rich.console import JustifyMethod
from rich.table import Table
from sklearn.metrics import roc_auc_score

from harness.errors import HarnessError
from harness.store import RunRecord
from harness.submission import read_submission, write_submission

RANK_BY = ("val_accuracy", "val_auc")
FORMATS = ("table", "csv", "markdown")
COLUMNS = [
    "rank",
    "run",
    "architecture",
    "origin",
    "status",
    "val_accuracy",
    "val_auc",
    "parameters",
    "epochs",
    "seconds",
    "images_per_s",
    "backend",
    "submission",
]

HEADERS = {"val_accuracy": "val acc", "val_auc": "val AUC", "test_auc": "test AUC", "parameters": "params",
           "seconds": "time s", "images_per_s": "img/s"}  # fmt: skip


def _origin(record: RunRecord) -> str:
    if record.origin == "search" and record.study:
        return f"{record.tuner or 'search'}:{record.study}#{record.trial}"
    return record.origin


def rank(records: list[RunRecord], by: str = "val_accuracy") -> pd.DataFrame:
    """Complete runs first, best first by `by` (ties broken by the other metric); unfinished runs after, unranked."""
    if by not in RANK_BY:
        raise HarnessError(f"--by must be one of {', '.join(RANK_BY)}, got {by!r}")
    other = "val_auc" if by == "val_accuracy" else "val_accuracy"
    rows = [
        {
            "run": r.run_id,
            "architecture": r.architecture,
            "origin": _origin(r),
            "status": r.status,
            "val_accuracy": r.val_accuracy,
            "val_auc": r.val_auc,
            "val_accuracy_std": r.val_accuracy_std,
            "val_auc_std": r.val_auc_std,
            "parameters": r.parameters,
            "epochs": r.epochs_run,
            "seconds": r.seconds,
            "images_per_s": r.images_per_second,
            "backend": r.backend,
            "submission": r.submission if r.status == "complete" else None,
            "error": r.error,
            "dataset": r.dataset,
            "synthetic": r.synthetic,
            "created_at": r.created_at,
        }
        for r in records
    ]
    extra = ["val_accuracy_std", "val_auc_std", "error", "dataset", "synthetic", "created_at"]
    frame = pd.DataFrame(rows, columns=[*COLUMNS[1:], *extra])
    scored = frame["status"].eq("complete") & frame[by].notna()
    done = frame[scored].sort_values([by, other, "created_at"], ascending=[False, False, True], na_position="last")
    rest = frame[~scored].sort_values("created_at")
    done.insert(0, "rank", range(1, len(done) + 1))
    rest.insert(0, "rank", None)
    return pd.concat([done, rest], ignore_index=True)


def add_test_auc(frame: pd.DataFrame, labels_csv: str | Path) -> pd.DataFrame:
    """A `test_auc` column: each run's submission scored against known test labels (ROC AUC, as Kaggle does)."""
    try:
        truth = pd.read_csv(labels_csv, dtype={"id": str}).set_index("id")["label"]
    except (OSError, KeyError, ValueError, pd.errors.ParserError) as exc:
        raise HarnessError(f"--test-labels {labels_csv}: not an id,label CSV ({exc})") from None
    scores: list[float | None] = []
    for path in frame["submission"]:
        if not isinstance(path, str) or not Path(path).exists():
            scores.append(None)
            continue
        submission = pd.read_csv(path, dtype={"id": str}).set_index("id")["label"]
        missing = submission.index.difference(truth.index)
        if len(missing):
            raise HarnessError(f"--test-labels {labels_csv} has no label for test id {missing[0]}")
        scores.append(float(roc_auc_score(truth.loc[submission.index], submission)))
    return frame.assign(test_auc=scores)


def _cell(value: object, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column in ("val_accuracy", "val_auc", "test_auc"):
        return f"{float(value):.4f}"  # type: ignore[arg-type]
    if column == "parameters":
        return f"{int(value):,}"  # type: ignore[call-overload]
    if column in ("seconds", "images_per_s"):
        return f"{float(value):.1f}"  # type: ignore[arg-type]
    if column == "rank":
        return str(int(value))  # type: ignore[call-overload]
    if column == "submission":
        return Path(str(value)).name
    return str(value)


def _columns(frame: pd.DataFrame) -> list[str]:
    """The displayed columns: test AUC beside val AUC when test labels were given."""
    if "test_auc" not in frame:
        return COLUMNS
    at = COLUMNS.index("val_auc") + 1
    return [*COLUMNS[:at], "test_auc", *COLUMNS[at:]]


def _row_cells(row: pd.Series, columns: list[str]) -> list[str]:
    cells = [_cell(row[c], c) for c in columns]
    for metric in ("val_accuracy", "val_auc"):  # cross-validated runs show their spread over folds
        if pd.notna(row.get(f"{metric}_std")):
            cells[columns.index(metric)] += f" ± {row[f'{metric}_std']:.4f}"
    return cells


def render_table(frame: pd.DataFrame, title: str) -> Table:
    table = Table(title=title, header_style="bold")
    columns = _columns(frame)
    justify: JustifyMethod
    for column in columns:
        justify = "right" if column not in ("run", "architecture", "origin", "status", "backend") else "left"
        table.add_column(HEADERS.get(column, column), justify=justify, no_wrap=column in ("run", "submission"))
    for _, row in frame.iterrows():
        style = None if row["status"] == "complete" else "dim"
        table.add_row(*_row_cells(row, columns), style=style)
    return table


def render_text(frame: pd.DataFrame, fmt: str) -> str:
    columns = _columns(frame)
    out = frame[[*columns, "val_accuracy_std", "val_auc_std"]].copy()
    if fmt == "csv":
        return out.to_csv(index=False)
    if fmt == "markdown":
        header = "| " + " | ".join(columns) + " |"
        rule = "|" + "|".join("---" for _ in columns) + "|"
        lines = ["| " + " | ".join(_row_cells(row, columns)) + " |" for _, row in out.iterrows()]
        return "\n".join([header, rule, *lines]) + "\n"
    raise HarnessError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def write_best_submission(frame: pd.DataFrame, destination: Path) -> str | None:
    """Copy the top-ranked run's submission to `destination`, re-validated; returns that run's id."""
    ranked = frame[frame["rank"].notna() & frame["submission"].notna()]
    if ranked.empty:
        return None
    best = ranked.iloc[0]
    source = Path(best["submission"])
    if not source.exists():
        raise HarnessError(f"run {best['run']} has no submission file at {source}")
    ids = pd.read_csv(source, usecols=["id"], dtype={"id": str})["id"].tolist()
    write_submission(read_submission(source, ids), destination)
    return str(best["run"])
