"""A clocked search's endgame: cool the best trial down, then test-time augmentation and a greedy ensemble, each
kept only where validation shows a gain, and the submission written; every step sized to the time left.

The test labels are never read: every decision is made on the validation predictions the runs stored.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from harness.atomic import atomic_path, write_text
from harness.clock import Deadline
from harness.config import RunSpec
from harness.data.submission import build_submission, write_submission
from harness.dihedral import TTA_VIEWS
from harness.ranking.ensemble import greedy_blend
from harness.ranking.keeper import SubmissionKeeper
from harness.ranking.leaderboard import val_key
from harness.run_records import new_run_id, start_run
from harness.store.runs import RunRecord
from harness.training.inference import predict_probabilities
from harness.training.metrics import binary_metrics
from harness.training.portable import load_model_safely
from harness.training.runner import Runner
from harness.training.speed import PREDICT_OVER_TRAIN
from harness.tuning.clock_plan import cooldown_epochs

MIN_GAIN = 1e-4  # a validation gain below this is noise: the simpler submission stays
MAX_MEMBERS = 8  # the trials an ensemble is chosen from (the best by val AUC)


@dataclass
class Endgame:
    """What the endgame did, step by step: each line says the step, its validation effect and its seconds."""

    lines: list[str] = field(default_factory=list)
    final: RunRecord | None = None
    steps: list[tuple[str, float, float]] = field(default_factory=list)  # (step, val AUC before, after) kept

    def summary(self) -> str:
        """One line: what each kept step added on validation, and what was submitted."""
        added = ", ".join(f"{name} {after - before:+.4f}" for name, before, after in self.steps) or "nothing kept"
        final = self.final
        what = f"; submitted {final.run_id} (val AUC {final.val_auc:.4f})" if final and final.val_auc else ""
        return f"endgame on validation: {added}{what}"


def val_probabilities(record: RunRecord) -> pd.Series:
    frame = pd.read_csv(Path(record.artifacts or "") / "val_predictions.csv", dtype={"id": str})
    return frame.set_index("id")["probability"]


def run_endgame(
    runner: Runner,
    best: RunRecord,
    others: list[RunRecord],
    deadline: Deadline,
    keeper: SubmissionKeeper,
    say: Callable[[str], None],
    seconds_per_epoch: float,
    overhead: float,
) -> Endgame:
    """The steps of the module's docstring, on the best trial `best` and the study's other complete trials."""
    done = Endgame()

    def note(line: str) -> None:
        done.lines.append(line)
        say(f"endgame: {line}")

    best = _cool_down(runner, best, deadline, note, done.steps, seconds_per_epoch, overhead)
    split = runner.splits_for(RunSpec.from_dict(best.spec))[0]
    labels = np.asarray(runner.dataset.train.labels)[split.val]
    ids = list(np.asarray(runner.dataset.train.ids)[split.val])
    model_path = Path(best.artifacts or "") / "model.keras"
    # Prediction speed: a third of a training step per image, until the TTA pass below measures it.
    predict_ips = max(float(best.images_per_second or 0.0), 1.0) * PREDICT_OVER_TRAIN
    n_test = len(runner.dataset.test)

    # TTA: the most views whose validation and test predictions fit half the time left, kept if validation gains.
    plain = val_probabilities(best).loc[ids].to_numpy()
    base_auc = binary_metrics(labels, plain)["val_auc"]
    views, tta_probs, tta_auc = 1, plain, base_auc
    affordable = [v for v in TTA_VIEWS if v > 1 and (len(ids) + n_test) * v / predict_ips < deadline.left() * 0.5]
    if affordable:
        v = max(affordable)
        started = time.monotonic()
        probs = _predict(model_path, runner.dataset.train.images, split.val, v)
        seconds = time.monotonic() - started
        predict_ips = len(ids) * v / max(seconds, 1e-6)  # measured now (model loading included: on the safe side)
        auc = binary_metrics(labels, probs)["val_auc"]
        fits = n_test * v / predict_ips < deadline.left() * 0.5
        kept = auc > base_auc + MIN_GAIN and fits
        why = "kept" if kept else ("not kept" if fits else "not kept: its test predictions no longer fit")
        note(f"TTA {v} on validation: val AUC {base_auc:.4f} -> {auc:.4f} ({why}; {seconds:.0f} s)")
        if kept:
            done.steps.append((f"TTA {v}", base_auc, auc))
            views, tta_probs, tta_auc = v, probs, auc
    else:
        note(f"no TTA: even 2 views of {len(ids) + n_test:,} images would take more than half of the"
             f" {deadline.left():.0f} s left")  # fmt: skip

    # A greedy ensemble over the best trials' stored validation predictions (the best one with its TTA).
    pool = [best, *sorted(others, key=lambda r: -(r.val_auc or 0))[: MAX_MEMBERS - 1]]
    pool = [r for r in pool if (Path(r.artifacts or "") / "val_predictions.csv").is_file()]
    members_probs = [tta_probs, *(val_probabilities(r).reindex(ids).to_numpy() for r in pool[1:])]
    usable = [i for i, p in enumerate(members_probs) if np.isfinite(p).all()]
    greedy = greedy_blend(labels, [members_probs[i] for i in usable])
    chosen = {usable[i]: n for i, n in greedy.counts.items()}
    blend_auc = greedy.path[-1]
    use_blend = len(chosen) > 1 and blend_auc > tta_auc + MIN_GAIN
    test_cost = sum(n_test / predict_ips for i in chosen if i > 0 and not pool[i].submission)
    if use_blend and test_cost > deadline.left() * 0.5:
        note(f"ensemble of {len(chosen)} not used: its members' test predictions need ~{test_cost:.0f} s")
        use_blend = False
    if use_blend:
        done.steps.append((f"ensemble of {len(chosen)}", tta_auc, blend_auc))
    if len(chosen) > 1:
        note(f"greedy ensemble of {len(chosen)} trials on validation: val AUC {tta_auc:.4f} -> {blend_auc:.4f}"
             f" ({'kept' if use_blend else 'not kept'})")  # fmt: skip
    else:
        note(f"greedy ensemble: no other trial raised val AUC {tta_auc:.4f}; the best trial stands alone")

    # The submission: test predictions for what was chosen, recorded as a run of its own when it is not the best
    # trial as it is.
    if not use_blend and views == 1:
        done.final = _plain(runner, best)
    else:
        picked = chosen if use_blend else {0: 1}
        members = {i: (pool[i], views if i == 0 else 1) for i in picked}
        weights = {i: n / sum(picked.values()) for i, n in picked.items()}
        val_blend = sum(w * members_probs[i] for i, w in weights.items())
        done.final = _record_blend(runner, best, members, weights, np.asarray(val_blend), labels, ids)
    keeper.offer(done.final, val_key(done.final))
    return done


def _cool_down(
    runner: Runner,
    best: RunRecord,
    deadline: Deadline,
    note: Callable[[str], None],
    steps: list[tuple[str, float, float]],
    seconds_per_epoch: float,
    overhead: float,
) -> RunRecord:
    """The best trial's warmup-stable-decay cooldown, as more epochs of its own run, when they fit the clock."""
    spec = RunSpec.from_dict(best.spec)
    if spec.training.lr_schedule != "wsd":
        return best
    trained = int(best.epochs_run or 0)
    # The cooldown's share of the clock was reserved; what the clock holds now decides its length: the ideal fifth
    # of the run, or as many virtual epochs as fit once the predictions after it (a tenth of what is left) are kept.
    affordable = int((0.9 * deadline.left() - overhead) // max(seconds_per_epoch, 1e-9))
    extra = min(cooldown_epochs(trained), affordable)
    if extra < 1:
        cost = seconds_per_epoch + overhead
        note(f"no cooldown for {best.run_id}: one virtual epoch needs ~{cost:.0f} s, {deadline.left():.0f} s left")
        return best
    total = trained + extra
    training = dataclasses.replace(spec.training, epochs=total, schedule_epochs=total, cooldown_fraction=extra / total)
    started, before = time.monotonic(), best.val_auc
    record = runner.extend(best.run_id, dataclasses.replace(spec, training=training))
    if record.status != "complete":
        note(f"cooldown of {best.run_id} {record.status}: {record.error}; the trial as it was stands")
        return runner.store.get(best.run_id)
    steps.append(("cooldown", float(before or 0.0), float(record.val_auc or 0.0)))
    more = f"{extra} more virtual epoch{'s' if extra != 1 else ''}"
    note(f"cooldown of {best.run_id}: {more} decaying to 0, val AUC {before:.4f} -> {record.val_auc:.4f}"
         f" ({time.monotonic() - started:.0f} s)")  # fmt: skip
    return record


def _predict(model_path: Path, images: np.ndarray, indices: np.ndarray, views: int) -> np.ndarray:
    model = load_model_safely(model_path)
    try:
        return predict_probabilities(model, images, indices, tta=views)
    finally:
        del model
        keras.backend.clear_session()


def _plain(runner: Runner, best: RunRecord) -> RunRecord:
    if not best.submission or not Path(best.submission).is_file():
        return runner.predict_test_set(best.run_id)
    return best


def _record_blend(
    runner: Runner,
    best: RunRecord,
    members: dict[int, tuple[RunRecord, int]],
    weights: dict[int, float],
    val_probs: np.ndarray,
    labels: np.ndarray,
    ids: list[str],
) -> RunRecord:
    """The chosen blend (or the best trial with TTA) as a run of origin 'endgame', with its own predictions."""
    test = runner.dataset.test
    test_probs = np.zeros(len(test))
    for i, (record, views) in members.items():
        path = Path(record.artifacts or "") / "model.keras"
        if views > 1 or not record.submission:
            probs = _predict(path, test.images, np.arange(len(test)), views)
        else:
            frame = pd.read_csv(record.submission, dtype={"id": str}).set_index("id")["label"]
            probs = frame.loc[list(test.ids)].to_numpy()
        test_probs += weights[i] * probs
    only = next(iter(members.values()))
    name = f"{only[0].architecture}+tta{only[1]}" if len(members) == 1 else f"ensemble{len(members)}"
    run_id = new_run_id(name)
    folder = runner.results_dir / "runs" / run_id
    spec = {
        "architecture": name,
        "members": [{"run": r.run_id, "tta": v, "weight": round(weights[i], 6)} for i, (r, v) in members.items()],
        "data": best.spec.get("data"),
        "origin": "endgame",
    }
    start_run(runner.store, run_id, spec, dataset=best.dataset, synthetic=best.synthetic, artifacts=folder,
              n_train=best.n_train, n_val=len(ids), folds=best.folds)  # fmt: skip
    write_text(folder / "spec.json", json.dumps(spec, indent=2))
    with atomic_path(folder / "val_predictions.csv") as tmp:
        pd.DataFrame({"id": ids, "label": labels, "probability": val_probs}).to_csv(
            tmp, index=False, float_format="%.6f"
        )
    submission = build_submission(list(test.ids), test_probs, runner.dataset.submission_ids)
    written = write_submission(submission, folder / "submission.csv", runner.dataset.submission_ids)
    runner.store.update(
        run_id,
        status="complete",
        **binary_metrics(labels, val_probs),
        parameters=sum(r.parameters or 0 for r, _ in members.values()),
        seconds=sum(r.seconds or 0 for r, _ in members.values()),
        epochs_run=max(int(r.epochs_run or 0) for r, _ in members.values()),
        tta=max(v for _, v in members.values()),
        submission=str(written),
        study=best.study,
    )
    return runner.store.get(run_id)


def predict_reserve(n_val: int, n_test: int, train_images_per_second: float, deadline: Deadline) -> float:
    """The endgame's time without a cooldown: TTA 8 on validation and test, and an ensemble's test predictions, at
    a third of the training time per image; and the clock's 1% margin (at least 5 s)."""
    margin = max(0.01 * deadline.seconds, 5.0)
    if train_images_per_second <= 0:
        return margin + 0.05 * deadline.seconds
    seconds = ((n_val + n_test) * 8 + 3 * n_test) / (3 * train_images_per_second)
    return min(seconds + margin, 0.5 * deadline.seconds)
