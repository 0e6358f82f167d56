"""Rank runs by a validation metric among those scored on the same validation images; render as a table that fits
the terminal, CSV or Markdown; copy out the best submission. (Just over 350 lines: ranking and rendering share
the frame's columns; picking the submission to write is ranking.board_pick.)"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.config import DataConfig
from harness.data import clip
from harness.data.submission import expected_test_ids, read_submission, write_submission
from harness.errors import HarnessError
from harness.ranking.holdout import Holdout, add_holdout, read_test_labels  # noqa: F401 (re-exported)
from harness.store.runs import RunRecord, RunStore
from harness.terminal.tables import Column, FittedTable, pick_columns

RANK_BY = ("val_accuracy", "val_auc", "holdout_auc")
DEFAULT_BY = "val_accuracy"  # the card asks for validation accuracy; val AUC breaks ties
FORMATS = ("table", "csv", "markdown")
COLUMNS = [
    "rank",
    "run",
    "architecture",
    "origin",
    "status",
    "val_set",
    "val_accuracy",
    "val_auc",
    "parameters",
    "epochs",
    "seconds",
    "images_per_s",
    "backend",
    "submission",
]

HEADERS = {"val_accuracy": "val acc", "val_auc": "val AUC", "holdout_auc": "holdout AUC",
           "gap": "val-holdout", "parameters": "params", "seconds": "time s", "images_per_s": "img/s",
           "val_set": "sample · val"}  # fmt: skip
_NUMBERS = ("rank", "val_accuracy", "val_auc", "holdout_auc", "gap", "parameters", "epochs", "seconds",
            "images_per_s")  # fmt: skip
# Scores on known labels of an external set (--holdout, or its older name --test-labels), shown beside val AUC.
_HELD = ("holdout_auc", "gap")


_DATA_DEFAULTS = dataclasses.asdict(DataConfig())


def _origin(record: RunRecord) -> str:
    if record.origin == "search" and record.study:
        return f"{record.tuner or 'search'}:{record.study}#{record.trial}"
    return record.origin


def val_key(record: RunRecord) -> str:
    """Which validation images a run was scored on: the same data folder, data protocol and number of images.

    Runs share a validation set only when dataset, protocol, sample, seed, folds and validation fraction match
    (the spec's `data`) and they validated as many images (an ensemble blends its members' shared images).
    """
    data = (record.spec or {}).get("data")
    if isinstance(data, dict):  # a setting at its default is the same split as a record written before it existed
        data = {k: v for k, v in data.items() if _DATA_DEFAULTS.get(k, object()) != v}
    raw = json.dumps([record.dataset, data, record.n_val], sort_keys=True, default=str)
    return hashlib.blake2b(raw.encode(), digest_size=4).hexdigest()


def _val_label(record: RunRecord, long: bool = False) -> str:
    """The validation set in words: "2000 · 300" (sample · validation images), or "sample 2000 · val 300"."""
    data = (record.spec or {}).get("data") or {}
    if not data and record.n_val is None:
        return "-"
    sample = data.get("sample")
    size = f"{sample:,}" if sample else "all"
    n_val = f"{record.n_val:,}" if record.n_val is not None else "?"
    parts = [f"sample {size}", f"val {n_val}"] if long else [size, n_val]
    if data.get("protocol", "seed") != "seed":
        parts.append(str(data["protocol"]))
    if (data.get("folds") or 1) > 1:
        parts.append(f"{data['folds']} folds")
    if data.get("seed", 101) != 101:
        parts.append(f"seed {data['seed']}")
    return " · ".join(parts)


def rank(records: list[RunRecord], by: str = DEFAULT_BY, holdout: Holdout | None = None) -> pd.DataFrame:
    """Complete runs first, best first by `by` (ties broken by the other metric); unfinished runs after, unranked.

    With `holdout`, each run's submission is scored on its labels (columns holdout_auc and gap), which `by` may
    rank by. Every run is ranked together here, whatever its validation set: see `comparable` for the honest ranking.
    """
    if by not in RANK_BY:
        raise HarnessError(f"--by must be one of {', '.join(RANK_BY)}, got {by!r}")
    if by == "holdout_auc" and holdout is None:
        raise HarnessError("--by holdout_auc needs --holdout CSV (labels of an external set to score submissions on)")
    other = "val_auc" if by != "val_auc" else "val_accuracy"
    rows = [
        {
            "run": r.run_id,
            "architecture": r.architecture,
            "origin": _origin(r),
            "status": r.status,
            "val_set": _val_label(r),
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
            "val_key": val_key(r),
            "val_set_long": _val_label(r, long=True),
        }
        for r in records
    ]
    extra = ["val_accuracy_std", "val_auc_std", "error", "dataset", "synthetic", "created_at", "val_key"]
    frame = pd.DataFrame(rows, columns=[*COLUMNS[1:], *extra, "val_set_long"])
    # Two different validation sets described alike (another data folder, another validation fraction): tell
    # them apart by their key.
    keys_per_label = frame.groupby("val_set")["val_key"].transform("nunique")
    for column in ("val_set", "val_set_long"):
        frame[column] = frame[column].where(keys_per_label <= 1, frame[column] + " #" + frame["val_key"].str[:4])
    if holdout is not None:
        frame = add_holdout(frame, holdout)
    scored = frame["status"].eq("complete") & frame[by].notna()
    done = frame[scored].sort_values([by, other, "created_at"], ascending=[False, False, True], na_position="last")
    rest = frame[~scored].sort_values("created_at")
    done.insert(0, "rank", range(1, len(done) + 1))
    rest.insert(0, "rank", None)
    return pd.concat([done, rest], ignore_index=True)


@dataclass(frozen=True)
class Board:
    """A ranking that compares like with like: `frame` holds the runs shown, `left_out` those on other validation
    sets (scores on other images do not compare), `by` the metric."""

    frame: pd.DataFrame
    left_out: pd.DataFrame
    by: str

    def notes(self) -> list[str]:
        """What the ranking holds and what it left out, and why: one line each."""
        ranked = self.frame[self.frame["rank"].notna()]
        lines = []
        if not self.left_out.empty and not ranked.empty:
            label = ranked.iloc[0]["val_set_long"]
            groups = self.left_out.groupby("val_set_long", sort=False).size().sort_values(ascending=False)
            shown = ", ".join(f"{name}: {n}" for name, n in groups.head(3).items())
            more = f", {len(groups) - 3} more sets" if len(groups) > 3 else ""
            lines.append(
                f"ranked: the runs validated on the best run's validation set ({label}); left out "
                f"{len(self.left_out)} on other validation sets ({shown}{more}), whose scores do not compare: "
                "--all ranks them together"
            )
        elif self.frame["val_key"].nunique() > 1:
            lines.append(
                f"--all: runs on {self.frame['val_key'].nunique()} validation sets ranked together; scores on "
                "different images do not compare directly (see the 'sample · val' column)"
            )
        return lines


def comparable(frame: pd.DataFrame, by: str = DEFAULT_BY, mix: bool = False) -> Board:
    """Keep the runs validated on the same images as the best run (ranked 1, 2, ...); `mix` keeps every run."""
    ranked = frame[frame["rank"].notna()]
    if mix or ranked.empty:
        return Board(frame, frame.iloc[0:0], by)
    same = frame["val_key"].eq(ranked.iloc[0]["val_key"])
    kept = frame[same].reset_index(drop=True)
    scored = kept["rank"].notna()
    kept.loc[scored, "rank"] = range(1, int(scored.sum()) + 1)
    return Board(kept, frame[~same].reset_index(drop=True), by)


def study_runs(store: RunStore, study: str | None) -> list[RunRecord]:
    """Every run, or those of one study; an unknown study is a one-line error that lists the known ones."""
    records = store.runs(study=study)
    if study is None or records:
        return records
    known = sorted({r.study for r in store.runs() if r.study})
    listed = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
    raise HarnessError(
        f"--study {clip(study)!r}: no such study; "
        + (f"known studies: {listed}" if known else "the store has no studies yet ('harness search' starts one)")
    )


def _cell(value: object, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column in ("val_accuracy", "val_auc", "holdout_auc"):
        return f"{float(value):.4f}"  # type: ignore[arg-type]
    if column == "gap":
        return f"{float(value):+.4f}"  # type: ignore[arg-type]
    if column == "parameters":
        return f"{int(value):,}"  # type: ignore[call-overload]
    if column in ("seconds", "images_per_s"):
        return f"{float(value):.1f}"  # type: ignore[arg-type]
    if column in ("rank", "epochs"):
        return str(int(value))  # type: ignore[call-overload]
    if column == "submission":
        return Path(str(value)).name
    return str(value)


def _compact_count(value: object) -> str:
    """36,350,881 -> 36.35M: a narrow terminal still shows the whole (rounded) number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    n = int(value)  # type: ignore[call-overload]
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M"
    return f"{n / 1e3:.1f}K" if n >= 10_000 else str(n)


def _columns(frame: pd.DataFrame) -> list[str]:
    """The displayed columns: holdout AUC and the gap beside val AUC when --holdout labels were given."""
    held = [c for c in _HELD if c in frame]
    at = COLUMNS.index("val_auc") + 1
    return [*COLUMNS[:at], *held, *COLUMNS[at:]]


def choose_columns(text: str | None, frame: pd.DataFrame) -> list[str] | None:
    """`--columns a,b,c` checked against the columns this leaderboard has; None when not given."""
    if text is None:
        return None
    for column in ("holdout_auc", "gap"):
        if column in text.split(",") and column not in frame:
            raise HarnessError(f"--columns {column} needs --holdout CSV (labels of an external set)")
    return pick_columns(text, _columns(frame))


def markdown_cell(text: str) -> str:
    """A table cell as Markdown reads it: a '|' would end the cell, a line end the row, so both are escaped."""
    return " ".join(str(text).replace("\\", "\\\\").replace("|", "\\|").splitlines())


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet opening the CSV would run as a formula


def csv_cell(value: object) -> object:
    """A text cell as a spreadsheet reads it: one that starts like a formula (a study or note named '=cmd|...') is
    prefixed with a quote, so it stays text (OWASP's CSV-injection rule); numbers and other text are unchanged."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def _row_cells(row: pd.Series, columns: list[str]) -> list[str]:
    cells = [_cell(row[c], c) for c in columns]
    for metric in ("val_accuracy", "val_auc"):  # cross-validated runs show their spread over folds
        if metric in columns and pd.notna(row.get(f"{metric}_std")):
            cells[columns.index(metric)] += f" ± {row[f'{metric}_std']:.4f}"
    return cells


def _short_ids(runs: pd.Series) -> list[str]:
    """The random tail of each run id (`...-seed_model1-54fda3` -> `54fda3`); full ids if two tails collide."""
    tails = [str(run).rsplit("-", 1)[-1] for run in runs]
    return tails if len(set(tails)) == len(tails) else [str(run) for run in runs]


def render_table(
    frame: pd.DataFrame, title: str, by: str = DEFAULT_BY, columns: list[str] | None = None
) -> FittedTable:
    """A table sized to the console it is printed on (see harness.terminal.tables): the essential columns always, more
    as the width allows; `columns` fixes the choice instead."""
    cells = {key: [_row_cells(row, [key])[0] for _, row in frame.iterrows()] for key in _columns(frame)}
    shown = [key for key in ("val_accuracy", "val_auc", *_HELD) if key in frame]
    means = {key: [_cell(value, key) for value in frame[key]] for key in shown}

    def column(key: str, values: list[str] | None = None) -> Column:
        justify = "right" if key in _NUMBERS else "left"
        return Column(key, HEADERS.get(key, key), values if values is not None else cells[key], justify)

    styles = [None if status == "complete" else "dim" for status in frame["status"]]
    if columns:
        return FittedTable(title, columns, [column(key) for key in columns], len(columns), styles)
    other = "val_auc" if by != "val_auc" else "val_accuracy"
    mixed = frame["val_key"].nunique() > 1
    unfinished = bool(frame["status"].ne("complete").any())
    compact = [_compact_count(value) for value in frame["parameters"]]
    # By priority: the first three always; then each if it still fits; a key seen before is a wider variant.
    # Cross-validated runs' spread over folds ("± 0.0123") comes in when there is room.
    steps = [column("rank"), column("run", _short_ids(frame["run"])), column(by, means[by]), column("architecture")]
    steps += [column(other, means[other])]
    steps += [column("holdout_auc")] if "holdout_auc" in frame and by != "holdout_auc" else []
    steps += [column("parameters", compact)]
    steps += [column("val_set")] if mixed else []  # runs on several validation sets: the column that says so
    steps += [column("gap")] if "gap" in frame else []  # val AUC - holdout AUC: both are shown already
    steps += [column("parameters"), column("val_set"), column(by), column(other)]
    steps += [column("status")] if unfinished else []
    steps += [column(key) for key in ("origin", "run", "epochs", "seconds", "images_per_s", "backend", "status")]
    steps += [column("submission")]
    return FittedTable(title, _columns(frame), steps, 3, styles)


def render_text(frame: pd.DataFrame, fmt: str, columns: list[str] | None = None) -> str:
    """CSV (raw values) or Markdown (formatted) of every row; `columns` picks the columns."""
    shown = columns or _columns(frame)
    out = frame[[*shown, "val_accuracy_std", "val_auc_std"]].copy() if columns is None else frame[shown].copy()
    if fmt == "csv":
        text_columns = out.select_dtypes(include="object").columns
        out[text_columns] = out[text_columns].map(csv_cell)
        return out.to_csv(index=False)
    if fmt == "markdown":
        header = "| " + " | ".join(shown) + " |"
        rule = "|" + "|".join("---" for _ in shown) + "|"
        lines = ["| " + " | ".join(map(markdown_cell, _row_cells(row, shown))) + " |" for _, row in frame.iterrows()]
        return "\n".join([header, rule, *lines]) + "\n"
    raise HarnessError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def write_best_submission(
    frame: pd.DataFrame, destination: Path, expected_ids: Sequence[str] | None = None
) -> str | None:
    """Copy the top-ranked run's submission to `destination`; returns that run's id.

    The file is checked against the test set first: `expected_ids` (submission order), or by default the test ids
    of the data folder the run was trained on. Every test id exactly once, a finite probability in [0, 1]; it is
    written in sample_submission order. Anything else is refused with one line, and `destination` is unchanged.
    """
    ranked = frame[frame["rank"].notna() & frame["submission"].notna()]
    if ranked.empty:
        return None
    best = ranked.iloc[0]
    source = Path(best["submission"])
    if not source.exists():
        raise HarnessError(f"run {best['run']} has no submission file at {source}")
    kept = f"{destination} is unchanged" if destination.exists() else f"{destination} was not written"
    if expected_ids is None:
        try:
            expected_ids = expected_test_ids(best.get("dataset"))
        except HarnessError as exc:
            raise HarnessError(
                f"run {best['run']}: its submission cannot be checked against its test set ({exc}); {kept}"
                " (--no-submission skips writing it)"
            ) from None
    try:
        checked = read_submission(source, expected_ids)
    except HarnessError as exc:
        raise HarnessError(f"run {best['run']}: {exc}; {kept}") from None
    write_submission(checked, destination, expected_ids)
    return str(best["run"])
