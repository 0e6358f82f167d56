"""Blend the top runs: average their validation and test probabilities, record the blend as a run of its own."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.atomic import atomic_path, write_text
from harness.data.submission import build_submission, expected_test_ids, write_submission
from harness.errors import HarnessError, one_line
from harness.ranking.leaderboard import DEFAULT_BY, RANK_BY, rank
from harness.run_records import new_run_id, start_run
from harness.store.runs import RunRecord, RunStore
from harness.training import plots
from harness.training.metrics import binary_metrics


@dataclass(frozen=True)
class Selection:
    """The runs to blend, and one line for each run (or kind of run) passed over, saying why."""

    members: list[RunRecord]
    skipped: list[str]


def select_members(records: list[RunRecord], top: int, by: str = DEFAULT_BY) -> Selection:
    """The best `top` complete, non-ensemble runs that share the best one's validation set (the same images:
    blending needs them, and a blend of other images would not compare with its members)."""
    if top < 1:
        raise HarnessError(f"--top must be at least 1, got {top}")
    if by not in RANK_BY:
        raise HarnessError(f"--by must be one of {', '.join(RANK_BY)}, got {by!r}")
    candidates = [r for r in records if r.origin != "ensemble" and r.status == "complete" and r.submission]
    if not candidates:
        raise HarnessError("no complete runs to blend: train some first ('harness run baselines')")
    by_id = {r.run_id: r for r in candidates}
    frame = rank(candidates, by)
    best = frame.iloc[0]
    same = frame["val_key"].eq(best["val_key"])
    members = [by_id[run] for run in frame.loc[same, "run"].head(top)]
    last = int(frame.index[frame["run"] == members[-1].run_id][0])
    skipped = []
    # Runs that ranked among the members but were validated on other images: named, one line each.
    passed = frame[~same & (frame.index < last)]
    for _, row in passed.head(5).iterrows():
        skipped.append(
            f"skipped {row['run']} ({row['architecture']}, {by} {row[by]:.4f}): validated on {row['val_set_long']},"
            f" not on the best run's {best['val_set_long']}"
        )
    others = int((~same).sum()) - min(len(passed), 5)
    if others:
        more = "more " if skipped else ""
        skipped.append(f"skipped {others} {more}runs validated on other sets than the best run's")
    if len(members) < top:
        skipped.append(f"only {len(members)} runs share the best run's validation set ({best['val_set_long']})")
    ensembles = sum(r.origin == "ensemble" and r.status == "complete" for r in records)
    if ensembles:
        skipped.append(f"skipped {ensembles} ensembles: a blend is not blended again")
    unfinished = sum(r.status != "complete" for r in records)
    if unfinished:
        skipped.append(f"skipped {unfinished} runs that did not complete (failed, pruned, interrupted or running)")
    return Selection(members, skipped)


def choose_members(records: list[RunRecord], top: int, by: str = DEFAULT_BY) -> list[RunRecord]:
    """The runs `select_members` picks."""
    return select_members(records, top, by).members


def _read_member(record: RunRecord) -> tuple[pd.DataFrame, pd.DataFrame]:
    folder = Path(record.artifacts or "")
    try:
        val = pd.read_csv(folder / "val_predictions.csv", dtype={"id": str})
        test = pd.read_csv(record.submission or folder / "submission.csv", dtype={"id": str})
    except (OSError, ValueError) as exc:  # missing, a folder, empty, not UTF-8, not CSV (pandas raises ValueErrors)
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_line(exc)
        raise HarnessError(f"run {record.run_id}: cannot read its predictions ({detail})") from None
    if not {"id", "probability", "label"} <= set(val.columns) or not {"id", "label"} <= set(test.columns):
        raise HarnessError(f"run {record.run_id}: its val_predictions.csv or submission.csv lacks its columns")
    return val.set_index("id"), test.set_index("id")


def blend(
    store: RunStore,
    results_dir: Path,
    members: list[RunRecord],
    by: str,
    greedy: bool = True,
    left_out: list[str] | None = None,
) -> RunRecord:
    """Blend the members' probabilities (validation and test) and store the blend with origin 'ensemble'.

    greedy: the members are chosen and weighted on validation (greedy_blend: a member that does not raise the
    blend's val AUC is left out, and named in `left_out`); else the plain mean of all of them."""
    frames = [_read_member(m) for m in members]
    val_ids = frames[0][0].index
    test_ids = frames[0][1].index
    for member, (val, test) in zip(members, frames, strict=True):
        if set(val.index) != set(val_ids) or set(test.index) != set(test_ids):
            raise HarnessError(f"run {member.run_id} was validated or tested on other images than {members[0].run_id}")
    labels = frames[0][0].loc[val_ids, "label"].to_numpy()
    vals = [val.loc[val_ids, "probability"].to_numpy() for val, _ in frames]
    tests = [test.loc[test_ids, "label"].to_numpy() for _, test in frames]
    weights = {i: 1 / len(members) for i in range(len(members))}
    if greedy and len(members) > 1:
        weights = greedy_blend(labels, vals).weights
        for i, member in enumerate(members):
            if i not in weights and left_out is not None:
                left_out.append(
                    f"left out {member.run_id} ({member.architecture}, val AUC {member.val_auc:.4f}): adding it"
                    " never raised the blend's val AUC (greedy selection on validation, Caruana et al. 2004)"
                )
    chosen = sorted(weights)
    val_probs = sum(weights[i] * vals[i] for i in chosen)
    test_probs = sum(weights[i] * tests[i] for i in chosen)
    shares = {members[i].run_id: round(weights[i], 6) for i in chosen}
    members = [members[i] for i in chosen]

    run_id = new_run_id(f"ensemble{len(members)}")
    folder = Path(results_dir) / "runs" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    member_ids = [m.run_id for m in members]
    spec = {"architecture": "ensemble", "members": member_ids, "weights": shares, "by": by,
            "data": members[0].spec.get("data")}  # fmt: skip
    start_run(
        store,
        run_id,
        {**spec, "origin": "ensemble"},
        dataset=members[0].dataset,
        synthetic=members[0].synthetic,
        hyperparameters={"members": member_ids, "by": by},
        artifacts=folder,
        n_train=members[0].n_train,
        n_val=len(val_ids),
        folds=members[0].folds,
    )
    try:
        write_text(folder / "spec.json", json.dumps(spec, indent=2))
        with atomic_path(folder / "val_predictions.csv") as tmp:
            pd.DataFrame({"id": val_ids, "label": labels, "probability": val_probs}).to_csv(
                tmp, index=False, float_format="%.6f"
            )
        plots.roc(labels, val_probs, f"ensemble of {len(members)} ({run_id})", folder / "roc.png")
        submission = build_submission(list(test_ids), test_probs, list(test_ids))
        write_submission(submission, folder / "submission.csv", expected_test_ids(members[0].dataset))
    except BaseException as exc:
        store.update(run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    store.update(
        run_id,
        status="complete",
        **binary_metrics(labels, val_probs),
        parameters=sum(m.parameters or 0 for m in members),
        seconds=sum(m.seconds or 0 for m in members),
        epochs_run=max((m.epochs_run or 0) for m in members),
        tta=members[0].tta,
        submission=str(folder / "submission.csv"),
    )
    return store.get(run_id)


@dataclass(frozen=True)
class Greedy:
    """A blend chosen on validation: member index -> how many times it was picked, and the blend's val AUC after each
    pick (Caruana et al. 2004: forward selection with replacement, so a weight is a count)."""

    counts: dict[int, int]
    path: list[float]

    @property
    def weights(self) -> dict[int, float]:
        total = sum(self.counts.values())
        return {i: n / total for i, n in self.counts.items()}

    def blend(self, probabilities: list[np.ndarray]) -> np.ndarray:
        return sum(w * probabilities[i] for i, w in self.weights.items())  # type: ignore[return-value]


def greedy_blend(labels: np.ndarray, probabilities: list[np.ndarray], rounds: int = 10) -> Greedy:
    """Start from the best single member by val AUC; add (again, possibly) the member that raises the blend's val AUC
    most; stop when none raises it or after `rounds` picks. A member that never helps is never in the blend."""
    from sklearn.metrics import roc_auc_score

    def auc(p: np.ndarray) -> float:
        return float(roc_auc_score(labels, p))

    singles = [auc(p) for p in probabilities]
    first = int(np.argmax(singles))
    counts = {first: 1}
    total = probabilities[first].astype(np.float64)
    path = [singles[first]]
    for _ in range(rounds - 1):
        n = sum(counts.values())
        trials = [auc((total + p) / (n + 1)) for p in probabilities]
        pick = int(np.argmax(trials))
        if trials[pick] <= path[-1] + 1e-6:
            break
        counts[pick] = counts.get(pick, 0) + 1
        total = total + probabilities[pick]
        path.append(trials[pick])
    return Greedy(counts, path)
