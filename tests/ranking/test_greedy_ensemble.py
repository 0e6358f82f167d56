"""A blend chosen on validation: greedy forward selection keeps the members that raise val AUC and leaves out one
that does not (Caruana et al. 2004), so an ensemble never scores below its best member on validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.config import DataConfig, OptimizerConfig, RunSpec, TrainingConfig
from harness.ranking.ensemble import blend, greedy_blend

pytestmark = pytest.mark.needs_backend


def test_greedy_selection_keeps_what_helps_and_never_loses_to_the_best_member():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 600)
    good = np.clip(labels * 0.30 + rng.random(600) * 0.70, 0, 1)
    other = np.clip(labels * 0.25 + rng.random(600) * 0.75, 0, 1)  # weaker, but its errors are its own
    noise = rng.random(600)  # a model at chance
    chosen = greedy_blend(labels, [noise, good, other])
    assert 0 not in chosen.counts and 1 in chosen.counts and 2 in chosen.counts
    assert chosen.path == sorted(chosen.path)  # each pick raised val AUC
    assert chosen.path[-1] > chosen.path[0]
    assert abs(sum(chosen.weights.values()) - 1) < 1e-9


def test_a_run_at_chance_on_validation_is_left_out_of_the_blend_and_named(runner):
    training = TrainingConfig(epochs=1, batch_size=8, optimizer=OptimizerConfig("adam", 1e-3))
    spec = RunSpec("cnn", {"widths": [4], "convs": [1], "dense": [8]}, training, DataConfig("stratified", seed=1), 1)
    good = runner.run(spec)
    bad = runner.run(RunSpec(**{**spec.__dict__, "seed": 2}))
    path = f"{bad.artifacts}/val_predictions.csv"
    frame = pd.read_csv(path)
    frame["probability"] = 1 - frame["label"] * 0.9  # worse than chance: every positive scored below the negatives
    frame.to_csv(path, index=False)
    left_out: list[str] = []
    blended = blend(runner.store, runner.results_dir, [good, bad], "val_auc", left_out=left_out)
    assert blended.spec["members"] == [good.run_id] and len(left_out) == 1 and bad.run_id in left_out[0]
    assert blended.val_auc == pytest.approx(good.val_auc)
