"""The hypothesis report: its verdict follows its numbers (constructed runs), and report.md renders with plots."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pandas as pd
import pytest
from rich.console import Console

from harness.config import DataConfig, OptimizerConfig, Origin, RunSpec, TrainingConfig
from harness.errors import HarnessError
from harness.hypothesis import (
    INCONCLUSIVE,
    MIN_RUNS,
    NOT_SUPPORTED,
    SUPPORTED,
    bootstrap_spearman,
    judge,
    spearman,
)
from harness.report import choose_budget, runs_frame, write_report
from harness.workspace import Workspace


def runs(sizes, scores, baselines=(), status="complete") -> pd.DataFrame:
    """Search runs (size, score) plus baselines (size, score), as the report's frame has them."""
    rows = [
        {"run_id": f"t{i}", "label": f"s#{i}", "is_baseline": False, "parameters": p, "val_auc": v, "status": status}
        for i, (p, v) in enumerate(zip(sizes, scores, strict=True))
    ]
    rows += [
        {"run_id": f"b{i}", "label": f"seed{i}", "is_baseline": True, "parameters": p, "val_auc": v}
        | {"status": "complete"}
        for i, (p, v) in enumerate(baselines)
    ]
    return pd.DataFrame(rows)


SIZES = [1e5, 2e5, 4e5, 8e5, 1.6e6, 3.2e6, 6.4e6, 1.28e7, 2.56e7, 5.12e7]


def test_bigger_and_better_is_supported():
    evidence = judge(runs(SIZES, np.linspace(0.80, 0.95, 10), baselines=[(1e6, 0.85)]))
    assert evidence.verdict == SUPPORTED and evidence.correlation.low > 0
    assert evidence.best_larger["run_id"] == "t9" and evidence.best_baseline["run_id"] == "b0"
    assert evidence.sentence().startswith("Supported: larger networks scored higher (rho = +")


def test_bigger_and_worse_is_not_supported():
    evidence = judge(runs(SIZES, np.linspace(0.95, 0.80, 10), baselines=[(5e4, 0.90)]))
    assert evidence.verdict == NOT_SUPPORTED and evidence.correlation.high < 0
    assert "larger networks scored lower" in evidence.reason


def test_a_baseline_no_larger_model_beats_is_not_supported_even_with_a_positive_trend():
    evidence = judge(runs(SIZES, np.linspace(0.80, 0.95, 10), baselines=[(2e6, 0.99)]))
    assert evidence.correlation.low > 0  # bigger search models did better among themselves...
    assert evidence.verdict == NOT_SUPPORTED  # ...but none bigger than the best baseline beat it
    assert "no network larger than the best baseline, seed0 (2,000,000 parameters, val_auc 0.9900), beat it" in (
        evidence.reason
    )


def test_a_win_without_a_reliable_correlation_is_inconclusive():
    scores = [0.90, 0.80, 0.93, 0.82, 0.88, 0.81, 0.92, 0.79, 0.86, 0.84]
    evidence = judge(runs(SIZES, scores, baselines=[(1e6, 0.85)]))
    assert evidence.correlation.low < 0 < evidence.correlation.high
    assert evidence.verdict == INCONCLUSIVE and "the interval includes 0" in evidence.reason


@pytest.mark.parametrize(
    "frame, reason",
    [
        (runs(SIZES[:4], [0.8, 0.85, 0.9, 0.95], baselines=[(1e4, 0.7)]), f"the rule needs at least {MIN_RUNS}"),
        (runs(SIZES, np.linspace(0.80, 0.95, 10)), "no baseline ran at this budget"),
        (runs(SIZES, np.linspace(0.80, 0.95, 10), baselines=[(1e9, 0.7)]), "no model larger than the best baseline"),
        (runs(SIZES, np.linspace(0.8, 0.95, 10), baselines=[(1e6, 0.85)], status="failed"), "only 1 complete runs"),
    ],
    ids=["few runs", "no baseline", "nothing larger", "failed runs do not count"],
)
def test_missing_evidence_is_inconclusive(frame, reason):
    evidence = judge(frame)
    assert evidence.verdict == INCONCLUSIVE and reason in evidence.reason


def test_spearman_and_its_bootstrap_are_deterministic():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))
    x, y = np.arange(12), np.r_[np.arange(6), np.arange(6)]
    first, second = bootstrap_spearman(x, y), bootstrap_spearman(x, y)
    assert first == second and first.low <= first.rho <= first.high and first.used > 0.9 * first.resamples


def add_run(store, run_id, *, architecture, arch_kwargs=None, origin="search", study=None, trial=None, epochs=3,
            parameters=None, val_auc=None, status="complete", dataset="/data"):  # fmt: skip
    spec = RunSpec(
        architecture,
        arch_kwargs or {},
        TrainingConfig(epochs=epochs, optimizer=OptimizerConfig("adam", 1e-3)),
        DataConfig(protocol="seed", sample=400, seed=101),
        origin=Origin(kind=origin, study=study, trial=trial, tuner="optuna" if study else None),
    )
    store.start(run_id, architecture=architecture, origin=origin, study=study, trial=trial,
                tuner="optuna" if study else None, spec=spec.to_dict(), dataset=dataset)  # fmt: skip
    values = {"val_auc": val_auc, "val_accuracy": val_auc - 0.05} if val_auc else {}
    store.update(run_id, status=status, parameters=parameters, epochs_run=epochs, **values)


@pytest.fixture
def workspace(tmp_path):
    ws = Workspace(data=None, results=tmp_path / "results", console=Console(quiet=True))
    store = ws.store()
    add_run(store, "base2", architecture="seed_model2", origin="baseline", parameters=1_846_817, val_auc=0.80)
    add_run(store, "base3", architecture="seed_model3", origin="baseline", parameters=3_510_913, val_auc=0.85)
    for i in range(10):
        widths = [16 * 2**i // 4 or 4, 32 * 2**i // 4 or 8]
        kwargs = {"widths": widths, "convs": [1 + i % 3] * 2}
        add_run(store, f"t{i}", architecture="cnn", arch_kwargs=kwargs, study="s", trial=i,
                parameters=int(SIZES[i]), val_auc=0.78 + 0.015 * i)  # fmt: skip
    add_run(store, "p", architecture="cnn", study="s", trial=10, status="pruned", epochs=3)
    add_run(
        store,
        "other",
        architecture="cnn",
        arch_kwargs={"widths": [8], "convs": [1]},
        study="s",
        trial=11,
        epochs=1,
        parameters=10_000,
        val_auc=0.99,
    )  # fmt: skip -- another budget: never compared
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name="s", storage=ws.storage_url, direction="maximize")
    for i in range(8):
        trial = study.ask({"blocks": optuna.distributions.IntDistribution(2, 6),
                           "learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)})  # fmt: skip
        study.tell(trial, 0.7 + 0.02 * trial.params["blocks"] + 0.001 * i)
    return ws


def test_the_report_renders_and_states_the_verdict_its_numbers_give(workspace):
    path = write_report(workspace, study="s")
    assert path == workspace.results / "report-s" / "report.md"
    text = path.read_text()
    for image in ("size_vs_metric.png", "best_so_far.png", "importances-s.png"):
        assert (path.parent / image).stat().st_size > 1000 and f"]({image})" in text
    frame = runs_frame(workspace.store().runs())
    budget = choose_budget(frame)
    compared = frame[(frame["budget"] == budget) & (frame["status"] == "complete")]
    assert sorted(compared["run_id"]) == sorted(["base2", "base3", *(f"t{i}" for i in range(10))])
    evidence = judge(compared)
    assert evidence.verdict == SUPPORTED and f"**{evidence.sentence()}**" in text
    assert "3 epochs, protocol seed, sample 400, split seed 101" in text and "1 epochs" in text  # both budgets
    assert "fANOVA over 8 complete trials" in text and "| blocks |" in text
    depth_width = compared.set_index("run_id")[["depth", "width"]]
    assert tuple(depth_width.loc["base2"]) == (8, 256) and tuple(depth_width.loc["base3"]) == (15, 128)
    assert tuple(depth_width.loc["t0"]) == (2, 8)


def test_the_report_without_a_study_and_its_errors(workspace, tmp_path):
    assert write_report(workspace).parent.name == "report"
    with pytest.raises(HarnessError, match="no runs of study 'nope'; studies: s"):
        write_report(workspace, study="nope")
    empty = Workspace(data=None, results=tmp_path / "empty", console=Console(quiet=True))
    with pytest.raises(HarnessError, match="no runs in the store yet"):
        write_report(empty)
