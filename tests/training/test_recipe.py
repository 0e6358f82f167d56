"""The tunable training recipe: learning-rate schedules, weight decay, label smoothing and EMA reach Keras, a run
stores them, and a bad value is a one-line error that names its flag."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from harness.cli import main
from harness.config import DataConfig, OptimizerConfig, RunSpec, TrainingConfig
from harness.data.feed import ImageBatches
from harness.errors import ConfigError
from harness.registry import build_model
from harness.training.inference import predict_probabilities
from harness.training.metrics import binary_metrics
from harness.training.schedules import ConstantWithWarmup, CosineWithWarmup, OneCycle, learning_rate
from harness.training.train import compile_model, fit, with_input_pipeline

pytestmark = pytest.mark.needs_backend

TINY = {"widths": [4], "convs": [1], "dense": [8]}
PEAK = 1e-3


def rates(schedule, steps) -> list[float]:
    return [float(schedule(step)) for step in steps]


def test_cosine_warms_up_linearly_peaks_and_decays_to_zero():
    schedule = CosineWithWarmup(PEAK, total_steps=100, warmup_steps=10)
    first, last_warm, peak, middle, end, after = rates(schedule, [0, 9, 10, 55, 100, 150])
    assert first == pytest.approx(PEAK / 10)  # the first step already learns
    assert last_warm == pytest.approx(PEAK) and peak == pytest.approx(PEAK)
    assert middle == pytest.approx(PEAK / 2, rel=1e-4)  # half-way through the decay
    assert end == pytest.approx(0, abs=1e-12) and after == pytest.approx(0, abs=1e-12)
    assert np.all(np.diff(rates(schedule, range(10, 101))) <= 0)


def test_one_cycle_rises_from_a_25th_and_anneals_to_a_10000th():
    schedule = OneCycle(PEAK, total_steps=100, warmup_steps=30)
    first, peak, end = rates(schedule, [0, 29, 100])
    assert first == pytest.approx(PEAK / 25 + (PEAK - PEAK / 25) / 30)
    assert peak == pytest.approx(PEAK) and end == pytest.approx(PEAK / 1e4, rel=1e-3)
    assert rates(ConstantWithWarmup(PEAK, 100, 4), [0, 3, 99]) == pytest.approx([PEAK / 4, PEAK, PEAK])


def test_schedules_are_sized_from_the_steps_per_epoch_and_the_epochs():
    cosine = learning_rate(TrainingConfig(epochs=4, lr_schedule="cosine", warmup_epochs=1), PEAK, 10, 4)
    assert (cosine.total_steps, cosine.warmup_steps) == (40, 10)
    fraction = learning_rate(TrainingConfig(epochs=4, lr_schedule="cosine", warmup_fraction=0.25), PEAK, 10, 4)
    assert fraction.warmup_steps == 10
    one_cycle = learning_rate(TrainingConfig(epochs=2, lr_schedule="one-cycle"), PEAK, 5, 2)
    assert (type(one_cycle), one_cycle.total_steps, one_cycle.warmup_steps) == (OneCycle, 10, 3)  # rise: 30 %
    # The notebook's recipe stays a plain number: the seed baselines train exactly as before.
    assert learning_rate(TrainingConfig(), PEAK, 10, 4) == PEAK


def test_a_model_saved_with_its_scheduled_optimiser_loads_in_safe_mode(tmp_path: Path):
    model = with_input_pipeline(build_model("cnn", **TINY))
    compile_model(model, TrainingConfig(epochs=3, lr_schedule="cosine", warmup_epochs=1), steps_per_epoch=5)
    model.train_on_batch(np.zeros((2, 96, 96, 3), np.uint8), np.array([0.0, 1.0]))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    schedule = loaded.optimizer._learning_rate
    assert (
        isinstance(schedule, CosineWithWarmup) and schedule.get_config() == model.optimizer._learning_rate.get_config()
    )


class Recorder(keras.callbacks.Callback):
    """The optimiser's learning rate and the raw trainable weights at the end of each epoch (after validation)."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []
        self.raw: list[list[np.ndarray]] = []
        self.averages: list[list[np.ndarray]] = []

    def on_epoch_end(self, epoch, logs=None):
        self.rates.append(float(self.model.optimizer.learning_rate))
        self.raw.append([v.numpy() for v in self.model.trainable_variables])
        average = getattr(self.model.optimizer, "_model_variables_moving_average", None) or []
        self.averages.append([v.numpy() for v in average])


def recipe_spec() -> RunSpec:
    training = TrainingConfig(
        epochs=3,
        batch_size=8,
        optimizer=OptimizerConfig("adamw", 3e-3),
        lr_schedule="cosine",
        warmup_epochs=1,
        weight_decay=0.05,
        label_smoothing=0.1,
        ema=True,
        ema_momentum=0.9,
    )
    return RunSpec("cnn", arch_kwargs=TINY, training=training, data=DataConfig(protocol="stratified", seed=1), seed=1)


def test_a_tiny_cnn_trains_with_the_whole_recipe_and_its_spec_round_trips(runner):
    spec = recipe_spec()
    recorder = Recorder()
    record = runner.run(spec, callbacks=[recorder])
    assert record.status == "complete", record.error
    assert RunSpec.from_dict(json.loads(Path(record.artifacts, "spec.json").read_text())) == spec
    assert RunSpec.from_dict(record.spec) == spec
    # The cosine schedule over 3 epochs of 5 steps (34 training images, batch 8): the peak after warmup, then 0.
    assert recorder.rates[0] == pytest.approx(3e-3, rel=1e-5)
    assert recorder.rates[1] == pytest.approx(3e-3 * 0.5 * (1 + np.cos(np.pi * 5 / 10)), rel=1e-4)
    assert recorder.rates[2] == pytest.approx(0.0, abs=1e-9)
    # The saved model holds the moving average of the kept epoch, not the raw weights training went on from.
    saved = keras.models.load_model(Path(record.artifacts, "model.keras"))
    kept = record.best_epoch - 1
    trainable = [v.numpy() for v in saved.trainable_variables]
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(trainable, recorder.averages[kept], strict=True))
    assert any(not np.allclose(a, b) for a, b in zip(trainable, recorder.raw[kept], strict=True))


def test_validation_scores_the_moving_average_and_the_optimiser_gets_decay_and_smoothing():
    rng = np.random.default_rng(0)
    labels = np.arange(48) % 2
    images = rng.integers(0, 256, (48, 96, 96, 3), dtype=np.uint8)
    images[labels == 1] //= 2  # darker positives: learnable in a few steps
    keras.utils.set_random_seed(0)
    model = with_input_pipeline(build_model("cnn", **TINY))
    training = recipe_spec().training
    train = ImageBatches(images, np.arange(32), labels, 8, shuffle=True, seed=0)
    val = ImageBatches(images, np.arange(32, 48), labels, 8)
    compile_model(model, training, len(train))
    assert model.optimizer.weight_decay == pytest.approx(0.05) and model.loss.label_smoothing == pytest.approx(0.1)
    recorder = Recorder()
    result = fit(model, train, val, training, [recorder])
    kept = result.best_epoch - 1
    probs = predict_probabilities(model, images, val.indices, training.predict_batch_size)
    # The epoch's logged score is that of the weights kept, which are the average (BatchNorm statistics included).
    assert result.history["val_auc"][kept] == pytest.approx(binary_metrics(labels[32:], probs)["val_auc"])
    weights = [v.numpy() for v in model.trainable_variables]
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(weights, recorder.averages[kept], strict=True))


@pytest.mark.backend_free
@pytest.mark.parametrize(
    ("values", "flag"),
    [
        ({"lr_schedule": "linear"}, "--lr-schedule"),
        ({"warmup_fraction": 1.5}, "--warmup-fraction"),
        ({"warmup_epochs": 20}, "--warmup-epochs"),
        ({"weight_decay": -0.1}, "--weight-decay"),
        ({"label_smoothing": 0.7}, "--label-smoothing"),
        ({"ema_momentum": 1.0}, "--ema-momentum"),
        ({"freeze_epochs": 10}, "--freeze-epochs"),
        ({"finetune_lr": 0}, "--finetune-lr"),
        ({"warmup_epochs": 1, "warmup_fraction": 0.1}, "--warmup-fraction"),
    ],
)
def test_an_invalid_recipe_value_is_a_one_line_error_naming_its_flag(values, flag):
    with pytest.raises(ConfigError) as caught:
        TrainingConfig(**values)
    assert flag in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.backend_free
def test_a_bad_recipe_flag_exits_with_one_line_naming_it(tmp_path, capsys):
    code = main(["run", "cnn", "--label-smoothing", "0.7", "--results", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and "--label-smoothing" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
