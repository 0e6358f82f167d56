"""The hypothesis report: its verdict follows its numbers (constructed runs), and report.md renders with plots."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import optuna
import pandas as pd
import pytest
from rich.console import Console

from harness.config import DataConfig, OptimizerConfig, Origin, RunSpec, TrainingConfig
from harness.errors import HarnessError
from harness.reporting.figures import progress_plot, size_plot
from harness.reporting.hypothesis import (
    INCONCLUSIVE,
    MIN_RUNS,
    NOT_SUPPORTED,
    SUPPORTED,
    bootstrap_spearman,
    judge,
    spearman,
)
from harness.reporting.report import choose_budget, runs_frame, write_report
from harness.training import plots
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
    assert "3 epochs, protocol seed, sample 400, split seed 101" in text and "1 epoch, protocol" in text  # both
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


def add_ensemble(store, run_id, members, *, val_auc, dataset="/data"):
    """An ensemble as harness.ranking.ensemble.blend records it: the members' data, no training of its own."""
    data = DataConfig(protocol="seed", sample=400, seed=101)
    spec = {"architecture": "ensemble", "members": members, "by": "val_auc", "data": dataclasses.asdict(data)}
    store.start(run_id, architecture="ensemble", origin="ensemble", spec=spec, dataset=dataset)
    store.update(run_id, status="complete", val_auc=val_auc, val_accuracy=val_auc - 0.05, parameters=5_357_730,
                 epochs_run=3)  # fmt: skip


def section(text: str, heading: str) -> list[list[str]]:
    """The rows (cells) of the first Markdown table under `heading`."""
    lines = text.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    return table


def test_the_report_prints_counts_as_integers_and_names_the_ensemble_budget(workspace):
    add_ensemble(workspace.store(), "ens", ["t9", "t8"], val_auc=0.97)
    text = write_report(workspace).read_text()  # every run: an ensemble belongs to no study
    assert "None" not in text
    header, _rule, *rows = section(text, "## Best runs at this budget")
    assert len(rows) == 7  # two baselines, five trials
    for row in rows:
        cells = dict(zip(header, row, strict=True))
        for column in ("parameters", "depth", "width"):
            assert re.fullmatch(r"\d{1,3}(,\d{3})*", cells[column]), (column, cells[column])
    assert rows[1][:5] == ["seed_model2", "seed_model2", "1,846,817", "8", "256"]
    header, _rule, *rows = section(text, "## Budgets")
    ensemble = [row for row in rows if row[0].startswith("ensemble")]
    assert ensemble == [["ensemble (a blend of other runs, no epochs of its own; protocol seed, sample 400, "
                         "split seed 101)", "1", "1", "0"]]  # fmt: skip
    assert "Ensembles blend other runs' predictions" in text


def test_an_ensemble_never_sets_the_compared_budget(tmp_path):
    ws = Workspace(data=None, results=tmp_path / "results", console=Console(quiet=True))
    store = ws.store()
    add_run(store, "base2", architecture="seed_model2", origin="baseline", parameters=1_846_817, val_auc=0.80)
    add_ensemble(store, "ens", ["base2"], val_auc=0.81)
    frame = runs_frame(store.runs())
    assert choose_budget(frame) == frame.set_index("run_id").loc["base2", "budget"]


def test_best_so_far_is_one_line_per_study_even_when_trials_skip_the_budget(tmp_path):
    ws = Workspace(data=None, results=tmp_path / "results", console=Console(quiet=True))
    store = ws.store()
    add_run(store, "base", architecture="seed_model2", origin="baseline", parameters=1_846_817, val_auc=0.80)
    # KerasTuner's Hyperband trains most trials for fewer epochs: only every third is at the compared budget.
    for i in range(9):
        add_run(store, f"kt{i}", architecture="cnn", study="kt", trial=i, epochs=3 if i % 3 == 1 else 1,
                parameters=10_000 + i, val_auc=0.7 + 0.01 * i)  # fmt: skip
    add_run(store, "lone0", architecture="cnn", study="lone", trial=0, parameters=9_000, val_auc=0.75)
    frame = runs_frame(store.runs())
    budget = frame.set_index("run_id").loc["base", "budget"]
    fig = progress_plot(frame, budget, 0.8, tmp_path / "best.png")
    assert (tmp_path / "best.png").stat().st_size > 1000
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    kt, lone = lines["kt: best so far"], lines["lone: best so far"]
    best = np.asarray(kt.get_ydata(), dtype=float)
    first = int(np.argmax(np.isfinite(best)))
    assert first == 1 and np.isfinite(best[first:]).all()  # unbroken from the first trial that counts
    assert list(best[first:]) == pytest.approx([0.71] * 3 + [0.74] * 3 + [0.77] * 2)
    assert kt.get_drawstyle() == "steps-post" and kt.get_linestyle() == "-"
    assert list(kt.get_markevery()) == [i % 3 == 1 for i in range(9)]  # markers on the trials that count
    assert len(lone.get_xdata()) == 1 and lone.get_marker() == "o"  # a single trial: a visible marker
    ticks = [t for t in fig.axes[0].get_xticks() if fig.axes[0].get_xlim()[0] <= t <= fig.axes[0].get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


@pytest.mark.parametrize("epochs", [1, 2, 7, 30])
def test_learning_curve_ticks_are_whole_epochs(tmp_path, epochs):
    steps = np.arange(1, epochs + 1)
    history = pd.DataFrame({"epoch": steps, "accuracy": 0.6 + 0.01 * steps, "val_accuracy": 0.55 + 0.01 * steps,
                            "auc": 0.7 + 0.005 * steps, "val_auc": 0.65 + 0.005 * steps,
                            "loss": 1 / steps, "val_loss": 1.1 / steps})  # fmt: skip
    fig = plots.learning_curve(history, "cnn (run)", tmp_path / "curve.png", best_epoch=epochs)
    assert (tmp_path / "curve.png").stat().st_size > 1000
    for ax in fig.axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert all(float(t).is_integer() for t in ticks), ticks
        assert (1 in ticks and epochs in ticks) or epochs > 10  # the first and last epoch are labelled when few
        assert low < 1 and high > epochs  # every point lies inside the axes, not on their edge


def test_the_roc_title_names_the_validation_set_and_its_size(tmp_path):
    labels = np.r_[np.zeros(170, int), np.ones(130, int)]
    probabilities = np.linspace(0, 1, 300)
    fig = plots.roc(labels, probabilities, "seed_model1 (run-1)", tmp_path / "roc.png")
    title = fig.axes[0].get_title()
    assert title.startswith("seed_model1 (run-1)") and "ROC on the validation set: 300 images, 130 tumour" in title
    assert (tmp_path / "roc.png").stat().st_size > 1000


def test_runs_outside_a_study_are_drawn_on_the_size_plot(workspace, tmp_path):
    store = workspace.store()
    add_run(
        store,
        "loose",
        architecture="cnn",
        origin="run",
        arch_kwargs={"widths": [8, 16], "convs": [1, 1]},
        parameters=50_000,
        val_auc=0.83,
    )  # fmt: skip -- `harness run cnn`: neither a baseline nor a trial
    frame = runs_frame(store.runs())
    budget = frame.set_index("run_id").loc["loose", "budget"]
    compared = frame[(frame["budget"] == budget) & (frame["status"] == "complete")]
    fig = size_plot(compared, tmp_path / "size.png", "sizes")
    for ax in fig.axes:
        points = {c.get_label(): c.get_offsets() for c in ax.collections}
        assert set(points) == {"trials: s", "other runs", "baselines"}
        assert len(points["other runs"]) == 1 and len(points["trials: s"]) == 10 and len(points["baselines"]) == 2
    assert [tuple(p) for p in fig.axes[0].collections[1].get_offsets()] == [(50_000, 0.83)]


def test_a_run_of_another_architecture_is_never_a_baseline_and_the_verdict_says_it_is_observational(tmp_path):
    ws = Workspace(data=None, results=tmp_path / "results", console=Console(quiet=True))
    store = ws.store()
    add_run(store, "base2", architecture="seed_model2", origin="baseline", parameters=1_846_817, val_auc=0.80)
    # An older harness recorded `harness run cnn` with origin "baseline": it must not count as one.
    add_run(store, "cnn-run", architecture="cnn", origin="baseline", parameters=5_000_000, val_auc=0.90)
    frame = runs_frame(store.runs()).set_index("run_id")
    assert bool(frame.loc["base2", "is_baseline"]) and not bool(frame.loc["cnn-run", "is_baseline"])
    text = write_report(ws).read_text()
    assert "observational" in text and "harness scale" in text
