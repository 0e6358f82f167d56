"""Which file a leaderboard writes its pick to, and the lines that say what changed: the whole board's pick goes to
results/submission.csv, a view's (one study, every set, every dataset, another metric) to a file of its own unless
asked (--submit); a pick by accuracy that AUC would not make is named, as is a change of the validation set ranked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from harness.atomic import write_text
from harness.errors import HarnessError
from harness.ranking.keeper import HISTORY, SubmissionKeeper
from harness.ranking.leaderboard import DEFAULT_BY, RANK_BY, val_key, write_best_submission
from harness.store.runs import RunStore

ENV_BY = "HARNESS_RANK_BY"  # choose the ranking metric once: e.g. val_auc, Kaggle's own metric
BOARD = "board.json"  # the validation set the whole board last ranked


def default_by() -> str:
    """--by's default: $HARNESS_RANK_BY, else val_accuracy (what the task card asks for)."""
    chosen = os.environ.get(ENV_BY) or DEFAULT_BY
    if chosen not in RANK_BY:
        raise HarnessError(f"{ENV_BY} must be one of {', '.join(RANK_BY)}, got {chosen!r}")
    return chosen


def view_name(study: str | None, by: str, every_set: bool, every_dataset: bool) -> str | None:
    """The name of a view of the board (None: the whole board as configured)."""
    parts = [f"study-{study}"] if study else []
    parts += ["all-sets"] if every_set else []
    parts += ["all-data"] if every_dataset else []
    parts += [f"by-{by}"] if by != default_by() else []
    return "-".join(parts) or None


def target_for(results: Path, view: str | None, submit: bool) -> Path:
    if view is None or submit:
        return results / "submission.csv"
    return results / f"submission-{view}.csv"


def auc_hint(frame: pd.DataFrame, by: str) -> str | None:
    """When the pick by accuracy is not the pick by AUC (Kaggle's score), one line that names both and the command."""
    ranked = frame[frame["rank"].notna()]
    if by != "val_accuracy" or len(ranked) < 2 or ranked["val_auc"].isna().all():
        return None
    top, auc_best = ranked.iloc[0], ranked.loc[ranked["val_auc"].astype(float).idxmax()]
    if top["run"] == auc_best["run"]:
        return None
    return (
        f"the pick by val AUC, Kaggle's metric, differs: {auc_best['run']} ({auc_best['architecture']}, val AUC"
        f" {auc_best['val_auc']:.4f} against {top['val_auc']:.4f}); `harness leaderboard --by val_auc --submit`"
        f" submits it (or set {ENV_BY}=val_auc once)"
    )


def board_change(results: Path, frame: pd.DataFrame, left_out: pd.DataFrame) -> str | None:
    """When the whole board now ranks another validation set than it did (a newer run is best on its own set),
    one line that names the set now hidden; the set ranked is remembered for next time."""
    ranked = frame[frame["rank"].notna()]
    if ranked.empty:
        return None
    now = {"val_key": str(ranked.iloc[0]["val_key"]), "label": str(ranked.iloc[0]["val_set_long"])}
    path = results / HISTORY / BOARD
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError):
        before = None
    write_text(path, json.dumps(now))
    if not before or before.get("val_key") == now["val_key"] or left_out.empty:
        return None
    hidden = left_out[left_out["val_key"] == before["val_key"]]
    if hidden.empty:
        return None
    return (
        f"the board now ranks the runs validated on {now['label']} (its best run is there); the {len(hidden)} runs"
        f" on {before['label']}, ranked last time, are hidden now: --all shows them"
    )


def submit_pick(store: RunStore, results: Path, frame: pd.DataFrame, target: Path, keeper_say: list[str]) -> str | None:
    """Write the board's best run's submission to `target` (validated, the old file kept); the run's id."""
    ranked = frame[frame["rank"].notna() & frame["submission"].notna()]
    if ranked.empty:
        return None
    best = str(ranked.iloc[0]["run"])
    keeper = SubmissionKeeper(results, keeper_say.append, target=target)
    record = store.get(best)
    key = val_key(record)
    now = keeper.current()
    source = Path(str(ranked.iloc[0]["submission"]))
    if keeper.holds(best, source):
        keeper_say.append(f"{target} already holds run {best}'s submission")
        return best
    with keeper._locked():
        if now is not None:
            why = f"replaces {now.text()}"
        else:
            why = "replacing a file of unknown origin" if target.exists() else "no earlier submission"
        previous = keeper.prepare()
        write_best_submission(frame, target)
        keeper.written(record, key, previous, why, source)
    return best
