"""`harness scale`: the verdict rule on every branch, the slope interval against a known answer, the design, and a
tiny study end to end that survives a killed worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cost import Cost
from harness.scaling.stats import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    SlopeFit,
    analyse,
    crossing,
    decide,
    seeds_to_settle,
    slope_interval,
)
from harness.scaling.study import Base, ScaleOptions, design, scaled
from harness.store.runs import RunStore, default_storage

pytestmark = [pytest.mark.needs_backend, pytest.mark.smoke]

EPS = 0.005


def study(means_by_size: dict[float, list[float]], budget: str = "2 epochs", gmacs_per_x: float = 0.1) -> pd.DataFrame:
    """A constructed study: each multiplier's seeds' AUCs; GMACs grow with the square of the width."""
    rows = []
    for m, values in means_by_size.items():
        for seed, auc in enumerate(values):
            rows.append({"budget": budget, "multiplier": m, "seed": seed, "parameters": int(1e6 * m),
                         "gmacs": gmacs_per_x * m * m, "epochs": 2, "val_auc": auc})  # fmt: skip
    return pd.DataFrame(rows)


def test_supported_when_the_interval_lies_above_zero_and_the_largest_beats_the_base():
    (v,) = analyse(study({0.5: [0.70, 0.71, 0.69], 1.0: [0.75, 0.76, 0.74], 2.0: [0.80, 0.81, 0.79]}), epsilon=EPS)
    assert v.verdict == SUPPORTED and v.fit.low > 0 and "largest size beats the base" in v.reason


def test_not_supported_when_the_interval_lies_below_zero():
    (v,) = analyse(study({0.5: [0.80, 0.81, 0.79], 1.0: [0.75, 0.76, 0.74], 2.0: [0.70, 0.71, 0.69]}), epsilon=EPS)
    assert v.verdict == NOT_SUPPORTED and v.fit.high < 0 and "below 0" in v.reason


def test_not_supported_when_the_interval_lies_within_epsilon():
    flat = {0.5: [0.8001, 0.8003, 0.7999], 1.0: [0.8002, 0.8000, 0.8001], 2.0: [0.8003, 0.8001, 0.8000]}
    (v,) = analyse(study(flat), epsilon=EPS)
    assert v.verdict == NOT_SUPPORTED and v.fit.low >= -EPS and v.fit.high <= EPS and "within" in v.reason


def test_not_supported_when_smaller_sizes_lose_but_the_largest_does_not_beat_the_base():
    verdict, reason = decide(SlopeFit(0.02, 0.01, 0.03, "BCa"), largest_mean=0.79, base_mean=0.80, epsilon=EPS)
    assert verdict == NOT_SUPPORTED and "does not beat the" in reason


def test_inconclusive_when_the_interval_straddles_zero_beyond_epsilon_and_says_how_many_seeds_would_settle_it():
    noisy = {0.5: [0.70, 0.80, 0.75], 1.0: [0.72, 0.82, 0.77], 2.0: [0.71, 0.83, 0.76]}
    (v,) = analyse(study(noisy), epsilon=EPS)
    assert v.verdict == INCONCLUSIVE and v.fit.low < 0 < v.fit.high and v.fit.high - v.fit.low > 2 * EPS
    assert v.seeds_needed is not None and v.seeds_needed > 3


def test_seeds_to_settle_follows_the_square_root_law():
    # Half-width 0.02 must fall to the slope's 0.01 (to exclude 0): four times the seeds.
    assert seeds_to_settle(SlopeFit(0.01, -0.01, 0.03, "BCa"), seeds=3, epsilon=0.005) == 12


def test_the_slope_interval_finds_a_known_slope():
    rng = np.random.default_rng(0)
    x = np.log2([0.025, 0.1, 0.4, 1.6])  # four doublings of GMACs apart, two each
    truth = 0.015
    groups = [0.7 + truth * xi + rng.normal(0, 0.004, size=40) for xi in x]
    fit = slope_interval(x, groups)
    assert fit.low < truth < fit.high and fit.high - fit.low < 0.006
    exact = slope_interval(x, [np.full(3, 0.7 + truth * xi) for xi in x])
    assert exact.slope == pytest.approx(truth) and exact.low == exact.high == pytest.approx(truth)


def test_the_crossing_between_budgets_is_reported():
    short = study({0.5: [0.80, 0.81, 0.79], 1.0: [0.75, 0.76, 0.74], 2.0: [0.70, 0.71, 0.69]}, budget="1 epochs")
    long = study({0.5: [0.70, 0.71, 0.69], 1.0: [0.75, 0.76, 0.74], 2.0: [0.80, 0.81, 0.79]}, budget="8 epochs")
    verdicts = analyse(pd.concat([long, short]), epsilon=EPS)
    assert [v.budget for v in verdicts] == ["1 epochs", "8 epochs"]
    assert crossing(verdicts) == "the largest size overtakes the base between 1 epochs and 8 epochs"


def fake_cost(name: str, widths=(32,), convs=(2,), **_) -> Cost:
    gmacs = sum(w * w * c for w, c in zip(widths, convs, strict=True)) / 1e5
    return Cost(parameters=int(gmacs * 1e6), gmacs=gmacs)


def test_the_design_varies_only_size_keeps_the_split_and_gives_equal_compute():
    from harness.config import DataConfig, TrainingConfig

    base = Base("b", {"widths": (8, 16), "convs": (2, 2), "dense": (8,)}, TrainingConfig(batch_size=10), DataConfig())
    options = ScaleOptions(multipliers=(0.5, 1, 2), seeds=2, epochs=(1,), compute_epochs=2)
    points = design(base, options, n_train=100, cost=fake_cost)
    assert [p.index for p in points] == list(range(len(points))) and len(points) == 3 * 2 * 2
    assert {p.seed for p in points} == {101, 102}  # weight seeds; the split's seed stays 101
    wide = next(p for p in points if p.multiplier == 2 and p.budget == "1 epochs")
    assert wide.kwargs["widths"] == [16, 32] and wide.kwargs["dense"] == (8,) and wide.kwargs["convs"] == (2, 2)
    compute = [p for p in points if p.budget.startswith("compute") and p.seed == 101]
    work = [p.cost.gmacs * p.epochs * (p.steps_per_epoch or 10) for p in compute]
    assert max(work) / min(work) < 1.1  # the same GMACs x images for every size, to rounding
    assert compute[0].epochs > compute[-1].epochs  # the small model gets more passes


def test_a_depth_multiplier_that_leaves_no_feature_map_is_a_one_line_error():
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="shrink a 96px input below 1x1"):
        scaled({"widths": (32, 64, 128, 256), "convs": (2, 2, 2, 2)}, "depth", 2.0)


def test_options_refuse_a_study_without_the_base_size_or_with_one_seed():
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="must include 1"):
        ScaleOptions(multipliers=(0.5, 2))
    with pytest.raises(HarnessError, match="--seeds must be at least 2"):
        ScaleOptions(seeds=1)


def _tiny_base_run(make_kaggle, results: Path) -> tuple[Path, str]:
    """A stored tiny `cnn` run to scale from, on a small synthetic folder."""
    from rich.console import Console

    from harness.config import DataConfig, OptimizerConfig, RunSpec, TrainingConfig
    from harness.data import load_dataset
    from harness.training.runner import Runner

    data = make_kaggle(n_train=40, n_test=8)
    dataset = load_dataset(data, results / "cache", progress=False)
    store = RunStore(default_storage(results))
    runner = Runner(dataset, store, results, progress=False, console=Console(quiet=True))
    spec = RunSpec(
        "cnn",
        arch_kwargs={"widths": [4], "convs": [1], "dense": [8]},
        training=TrainingConfig(epochs=1, batch_size=8, optimizer=OptimizerConfig("adam", 1e-3), precise_bn=0),
        data=DataConfig(protocol="stratified", seed=1),
        seed=1,
    )
    return data, runner.run(spec).run_id


@pytest.mark.slow  # a worker process is started and killed; 8 tiny points are trained
def test_a_tiny_study_end_to_end_survives_a_killed_worker_and_resumes(make_kaggle, tmp_path, capsys):
    from harness.cli import main

    results = tmp_path / "results"
    data, base = _tiny_base_run(make_kaggle, results)
    argv = ["scale", "--base", base, "--multipliers", "1,2", "--seeds", "2", "--epochs", "1",
            "--compute-epochs", "1", "--data", str(data), "--results", str(results), "--study", "tiny",
            "--no-progress"]  # fmt: skip
    store = RunStore(default_storage(results))
    # A worker killed (SIGKILL) in the middle of its second point.
    worker = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *argv],
        env={**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        runs = store.runs(study="tiny")
        if any(r.status == "complete" for r in runs) and any(r.status == "running" for r in runs):
            break
        assert worker.poll() is None, "the worker ended before it could be killed"
        time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    before = {r.run_id: r.status for r in store.runs(study="tiny")}
    assert "complete" in before.values() and "failed" in before.values()  # the killed point is reaped as failed

    assert main(argv) == 0
    out = capsys.readouterr().out
    runs = store.runs(study="tiny")
    complete = [r for r in runs if r.status == "complete"]
    assert sorted(r.trial for r in complete) == list(range(8))  # every point once: 2 sizes x 2 seeds x 2 budgets
    assert all(r.origin == "scale" and r.study == "tiny" for r in runs)
    retried = [r for r in runs if r.status == "failed"]
    assert len(retried) == 1 and any(r.run_id == retried[0].run_id.replace("-a1", "-a2") for r in complete)
    for run_id, status in before.items():  # what was done before the kill was not trained again
        if status == "complete":
            assert sum(r.trial == store.get(run_id).trial for r in complete) == 1
    assert "1 epochs:" in out and "compute 1:" in out and "report.md" in out
    report = (results / "scale-tiny" / "report.md").read_text()
    assert "## The rule" in report and "| 1 epochs | x2 |" in report
    assert (results / "scale-tiny" / "scaling.png").stat().st_size > 10_000
    # A rerun with other flags would mix two designs under one name.
    assert main([*argv[:-1], "--seeds", "3"]) == 2
    assert "designed with other flags" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kwargs",
    [
        {"widths": [8, 16], "convs": [2, 2], "dense": [16]},
        {"widths": [4, 8, 16], "convs": [1, 3, 1], "activation": "prelu", "padding": "same", "dense": []},
        {"widths": [8], "convs": [2], "batch_norm": False, "dense": [32, 8]},
    ],
)
def test_the_cnn_cost_function_is_what_the_built_model_measures(kwargs):
    from harness.cost import architecture_cost, model_cost
    from harness.registry import build_model

    own, measured = architecture_cost("cnn", **kwargs), model_cost(build_model("cnn", **kwargs))
    assert own.parameters == measured.parameters
    assert own.gmacs == pytest.approx(measured.gmacs, rel=1e-9)


def test_a_seed_model_without_a_cost_function_is_measured_from_its_built_model():
    from harness.cost import architecture_cost

    cost = architecture_cost("seed_model2")
    assert cost.parameters == 1_846_817 and cost.gmacs == pytest.approx(0.2848, rel=1e-3)


def test_points_done_running_elsewhere_or_out_of_attempts_are_not_run_again():
    import datetime as dt

    from harness.config import DataConfig, TrainingConfig
    from harness.scaling.study import pending
    from harness.store.runs import RunRecord

    base = Base("b", {"widths": (8,), "convs": (1,), "dense": (8,)}, TrainingConfig(), DataConfig())
    points = design(base, ScaleOptions(multipliers=(1, 2), seeds=2, epochs=(1,)), n_train=100, cost=fake_cost)
    now = dt.datetime.now()

    def record(trial: int, status: str, attempt: int = 1) -> RunRecord:
        return RunRecord(f"s-p{trial:03d}-a{attempt}", status, "cnn", "scale", {}, now, now, study="s", trial=trial)

    records = [
        record(0, "complete"),
        record(1, "running"),  # another worker has it
        record(2, "failed"),  # one failed attempt: tried again
        record(3, "failed"),
        record(3, "failed", attempt=2),  # out of attempts: left failed
    ]
    todo, skipped = pending(points, records)
    assert [p.index for p in todo] == [2] and skipped == 3
