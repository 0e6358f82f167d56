"""Progress reads anywhere: plain epoch lines off a terminal, live bars with the job's ETA on one, one val AUC."""

from __future__ import annotations

import io
import re

import keras
import numpy as np
import pandas as pd
from rich.console import Console

from harness.config import DataConfig, OptimizerConfig, RunSpec, TrainingConfig
from harness.data.feed import ImageBatches
from harness.terminal.consoles import make_console, make_consoles
from harness.terminal.progress import RunPlan, TrialClock
from harness.training.inference import predict_probabilities
from harness.training.metrics import binary_metrics
from harness.training.train import compile_model, fit

TINY = {"widths": [4], "convs": [1], "dense": [8]}
EPOCH_LINE = re.compile(
    r"^(?P<label>\S.*?)  epoch (?P<epoch>\d+)/(?P<epochs>\d+)  loss \d+\.\d{4}  val acc \d\.\d{4}  "
    r"val AUC (?P<auc>\d\.\d{4})  \d+\.\d s  eta \d+:\d\d(?P<overall>  \(all runs: run \d+/\d+, elapsed \d+:\d\d, "
    r"eta (\d+:\d\d|\?)\))?$"
)


def tiny_spec(epochs: int = 3) -> RunSpec:
    training = TrainingConfig(epochs=epochs, batch_size=8, optimizer=OptimizerConfig("adam", 1e-3))
    return RunSpec("cnn", TINY, training, DataConfig(protocol="stratified", seed=1), seed=1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_each_epoch_is_one_plain_line_with_every_field(runner):
    stream = io.StringIO()
    runner.console = Console(file=stream, width=80)  # not a terminal, and narrow: a wrapped line would show
    runner.progress = True  # live progress asked for, but there is no terminal to draw it on
    runner.overall = RunPlan([3, 3], [0.1, 0.2])
    runner.overall.start_run(0)
    record = runner.run(tiny_spec(epochs=3))
    assert record.status == "complete", record.error
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines  # one per epoch: no live display's leftovers, no wrapped halves
    matches = [EPOCH_LINE.match(line) for line in lines]
    assert all(matches), lines
    assert [m["epoch"] for m in matches] == ["1", "2", "3"] and {m["epochs"] for m in matches} == {"3"}
    assert all(m["label"] == "cnn" and m["overall"] for m in matches)
    assert max(len(line) for line in lines) > 80  # long enough to have been folded at 80 columns, and it was not
    assert "\x1b[" not in stream.getvalue()  # no terminal control codes in a log


def test_no_progress_still_prints_one_line_per_epoch_even_on_a_terminal(runner):
    stream = io.StringIO()
    runner.console = Console(file=stream, force_terminal=True, width=200)
    runner.progress = False  # --no-progress: no live bars, but the epochs are still reported
    runner.run(tiny_spec(epochs=2))
    lines = [line for line in stream.getvalue().splitlines() if line.strip()]
    assert len(lines) == 2 and all(EPOCH_LINE.match(re.sub(r"\x1b\[[0-9;]*m", "", line)) for line in lines), lines


def test_on_a_terminal_the_live_bars_show_this_fit_and_the_whole_job_with_etas(runner):
    stream = io.StringIO()
    runner.console = Console(file=stream, force_terminal=True, width=160)
    runner.progress = True
    plan = runner.overall = RunPlan([2, 4], [0.1, 0.3])
    plan.start_run(0)
    runner.run(tiny_spec(epochs=2))
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue())
    assert "all runs" in text and "run 1/2" in text  # the overall row
    assert re.search(r"cnn epochs .*\d/2 .*eta \d+:\d\d", text)  # this fit's own row, with its ETA
    assert re.search(r"all runs .*run 1/2 .*eta \d+:\d\d", text)  # the whole job's ETA, once a batch was timed
    assert len(re.findall(r"cnn  epoch \d/2  loss", text)) == 2  # each epoch is left behind as one line


def test_the_run_plan_estimates_later_models_from_the_measured_speed_and_their_cost():
    clock = FakeClock()
    plan = RunPlan([2, 4], [1.0, 2.0], clock=clock)
    assert plan.remaining() is None  # nothing measured yet
    plan.start_run(0)
    plan.fit_started()
    clock.now = 10.0
    plan.fit_progress(1.0, 10.0)  # 10 s for one epoch of a 1-GMAC model
    assert plan.remaining() == 1 * 10.0 + 4 * 20.0  # the rest of this model, then 4 epochs at twice the cost
    clock.now = 25.0
    plan.fit_progress(2.0, 20.0)
    plan.start_run(1)  # 5 s went to predicting and saving: counted once per run still to come
    plan.fit_started()
    assert plan.remaining() == 4 * 20.0 + 5.0
    clock.now = 55.0
    plan.fit_progress(1.0, 30.0)  # the second model is slower than its cost predicted: its own speed counts now
    assert plan.remaining() == 3 * 30.0 + 5.0
    assert plan.text() == "all runs: run 2/2, elapsed 0:55, eta 1:35"


def test_the_trial_clock_counts_the_study_and_paces_its_eta():
    clock, counted = FakeClock(), [4]
    trials = TrialClock(10, lambda: counted[0], clock=clock)
    assert trials.text() == "study: 4/10 trials done, elapsed 0:00, eta ?"
    clock.now = 60.0
    counted[0] = 6  # this process finished one trial and another worker one: two in a minute
    trials.trial_finished()
    assert trials.done == 6 and trials.remaining() == 4 * 30.0
    clock.now = 90.0
    assert trials.text() == "study: 6/10 trials done, elapsed 1:30, eta 1:30"


def test_the_epoch_val_auc_is_the_exact_one_the_record_gets():
    """Keras's AUC metric bins probabilities; a model whose outputs all fall in one bin scored 0.5 there, 1.0 exact."""
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    images = np.where(labels[:, None, None, None] == 1, 140, 120).astype(np.uint8) * np.ones((1, 8, 8, 3), np.uint8)
    images = (images + rng.integers(0, 3, images.shape)).astype(np.uint8)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(1, activation="sigmoid", kernel_initializer="ones", bias_initializer="zeros")
    outputs = dense(keras.layers.Dense(1, use_bias=False, kernel_initializer=keras.initializers.Constant(0.01))(pooled))
    model = keras.Model(inputs, outputs)  # every probability within 0.5 +- 0.002, ordered as the labels
    training = TrainingConfig(epochs=2, batch_size=10, optimizer=OptimizerConfig("sgd", 1e-9), precise_bn=0)
    compile_model(model, training)
    train = ImageBatches(images, np.arange(30), labels, 10, shuffle=True)
    val_index = np.arange(30, 40)
    stream = io.StringIO()
    from harness.terminal.progress import EpochLines

    result = fit(
        model,
        train,
        ImageBatches(images, val_index, labels, 10),
        training,
        [EpochLines("tiny", 2, Console(file=stream))],
    )
    probs = predict_probabilities(model, images, val_index)
    exact = binary_metrics(labels[val_index], probs)
    assert exact["val_auc"] == 1.0
    history: pd.DataFrame = result.history
    assert history["val_auc"].iloc[result.best_epoch - 1] == exact["val_auc"]  # the kept epoch's, as recorded
    assert history["val_accuracy"].iloc[result.best_epoch - 1] == exact["val_accuracy"]
    assert f"val AUC {exact['val_auc']:.4f}" in stream.getvalue().splitlines()[result.best_epoch - 1]


def test_a_run_shows_in_its_epoch_lines_the_val_auc_it_records(runner):
    stream = io.StringIO()
    runner.console = Console(file=stream, width=200)
    record = runner.run(tiny_spec(epochs=3))
    history = pd.read_csv(f"{record.artifacts}/history.csv")
    assert history["val_auc"].iloc[record.best_epoch - 1] == record.val_auc
    kept = EPOCH_LINE.match(stream.getvalue().splitlines()[record.best_epoch - 1])
    assert kept and kept["auc"] == f"{record.val_auc:.4f}"


def test_consoles_off_a_terminal_never_fold_a_line(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    stream = io.StringIO()
    console = make_console(file=stream)
    long_id = "wrote results/submission.csv from run 20261127-173747-seed_model1-54fda3 " + "x" * 150
    console.print(long_id)
    assert stream.getvalue() == long_id + "\n"
    assert console.width >= 200  # tables get room too
    out, err = make_consoles()  # pytest captures both streams: neither is a terminal here
    assert out.soft_wrap and err.soft_wrap and err.stderr and not out.stderr
    monkeypatch.setenv("COLUMNS", "100")
    assert make_console(file=io.StringIO()).width == 100  # an explicit width is honoured


def test_a_search_prints_one_line_per_epoch_and_per_trial_with_the_study_eta(make_kaggle, tmp_path):
    import optuna
    import search_fixtures as sf

    from harness.tuning.search import run_search
    from harness.workspace import Workspace

    stream = io.StringIO()
    with sf.registered():
        data = make_kaggle(n_train=40, n_test=8)
        workspace = Workspace(data=data, results=tmp_path / "results", console=Console(file=stream, width=80))
        run_search(workspace, sf.options(trials=2, epochs=2, progress=True, pruner=optuna.pruners.NopPruner()))
    lines = stream.getvalue().splitlines()
    epochs = [line for line in lines if re.match(r"^tiny-optuna #\d cnn  epoch ", line)]
    trials = [line for line in lines if re.match(r"^tiny-optuna #\d (complete|pruned|failed) ", line)]
    assert len(epochs) == 4 and all(
        line.startswith(("tiny-optuna #0 cnn  epoch", "tiny-optuna #1 cnn  epoch")) for line in epochs
    )
    assert all(
        re.search(r"val AUC \d\.\d{4}  \d+\.\d s  eta \d+:\d\d  \(study: \d/2 trials done, elapsed", line)
        for line in epochs
    )
    assert len(trials) == 2, lines
    assert re.search(r"study: 1/2 trials done, elapsed \d+:\d\d, eta \d+:\d\d$", trials[0])
    assert re.search(r"study: 2/2 trials done, elapsed \d+:\d\d, eta 0:00$", trials[1])
