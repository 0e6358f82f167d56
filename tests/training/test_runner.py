"""A run records its metrics and artifacts; failures, NaN losses and Ctrl-C leave the store and files consistent."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from harness.config import DataConfig, OptimizerConfig, RunSpec, TrainingConfig
from harness.registry import ARCHITECTURES

pytestmark = [pytest.mark.needs_backend, pytest.mark.smoke]

TINY = {"widths": [4], "convs": [1], "dense": [8]}


def tiny_spec(architecture: str = "cnn", epochs: int = 2, **kwargs) -> RunSpec:
    return RunSpec(
        architecture=architecture,
        arch_kwargs=kwargs.pop("arch_kwargs", TINY if architecture == "cnn" else {}),
        training=TrainingConfig(epochs=epochs, batch_size=8, optimizer=OptimizerConfig("adam", 1e-3)),
        data=DataConfig(protocol="stratified", seed=1),
        seed=1,
    )


@pytest.fixture
def broken_architectures():
    """Two architectures that fail on purpose: one cannot be built, one produces a NaN loss."""

    def unbuildable(input_shape=(96, 96, 3)):
        raise RuntimeError("this architecture cannot be built")

    def nan_model(input_shape=(96, 96, 3)):
        return keras.Sequential(
            [
                keras.Input(shape=input_shape),
                keras.layers.Rescaling(scale=float("nan")),
                keras.layers.Flatten(),
                keras.layers.Dense(1, activation="sigmoid"),
            ]
        )

    with ARCHITECTURES.override():  # no other test sees these two
        ARCHITECTURES.register("unbuildable", test=True)(unbuildable)
        ARCHITECTURES.register("nan_model", test=True)(nan_model)
        yield


def test_a_complete_run_records_metrics_and_writes_every_artifact(runner):
    record = runner.run(tiny_spec())
    assert record.status == "complete", record.error
    assert 0 <= record.val_accuracy <= 1 and 0 <= record.val_auc <= 1 and record.val_loss > 0
    assert record.epochs_run == 2 and 1 <= record.best_epoch <= 2
    assert record.parameters == keras.models.load_model(f"{record.artifacts}/model.keras").count_params()
    assert record.images_per_second > 0 and record.seconds > 0
    assert record.n_train + record.n_val == 40
    assert record.environment["backend"] == keras.config.backend() == record.backend
    folder = record.artifacts
    for name in ("model.keras", "history.csv", "learning_curve.png", "roc.png", "val_predictions.csv", "spec.json"):
        assert (runner.results_dir / "runs" / record.run_id / name).exists(), name
    assert RunSpec.from_dict(json.loads(Path(folder, "spec.json").read_text())) == tiny_spec()
    history = pd.read_csv(f"{folder}/history.csv")
    assert list(history["epoch"]) == [1, 2] and {"val_auc", "val_accuracy", "val_loss"} <= set(history.columns)
    val = pd.read_csv(f"{folder}/val_predictions.csv")
    assert len(val) == record.n_val and val["probability"].between(0, 1).all()
    submission = pd.read_csv(record.submission)
    assert submission["id"].tolist() == runner.dataset.submission_ids
    assert submission["label"].between(0, 1).all() and submission["label"].nunique() > 2  # probabilities, not 0/1


def test_the_kept_weights_are_those_of_the_best_validation_epoch(runner):
    record = runner.run(tiny_spec(epochs=3))
    history = pd.read_csv(f"{record.artifacts}/history.csv")
    best = history["val_auc"] == history["val_auc"].max()
    assert record.best_epoch == int(history.loc[best, "epoch"].max())  # ties go to the later epoch
    # The saved model reproduces the recorded validation predictions, so it is the kept one.
    model = keras.models.load_model(f"{record.artifacts}/model.keras")
    val = pd.read_csv(f"{record.artifacts}/val_predictions.csv")
    index = {id_: i for i, id_ in enumerate(runner.dataset.train.ids)}
    images = runner.dataset.train.images[[index[i] for i in val["id"]]]
    assert np.allclose(model.predict(images, verbose=0).ravel(), val["probability"], atol=1e-4)


def test_failed_runs_are_recorded_and_the_next_run_goes_on(runner, broken_architectures):
    failed = runner.run(tiny_spec("unbuildable"))
    nan = runner.run(tiny_spec("nan_model"))
    good = runner.run(tiny_spec())
    assert failed.status == "failed" and "cannot be built" in failed.error
    assert nan.status == "failed" and "loss became nan" in nan.error
    assert good.status == "complete"
    statuses = {r.run_id: r.status for r in runner.store.runs()}
    assert statuses == {failed.run_id: "failed", nan.run_id: "failed", good.run_id: "complete"}
    assert not (runner.results_dir / "runs" / nan.run_id / "model.keras").exists()
    assert (runner.results_dir / "runs" / nan.run_id / "error.txt").read_text().startswith("Traceback")


class _CtrlC(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        raise KeyboardInterrupt


def test_ctrl_c_marks_the_run_interrupted_and_leaves_no_half_written_files(runner):
    with pytest.raises(KeyboardInterrupt):
        runner.run(tiny_spec(), callbacks=[_CtrlC()])
    (record,) = runner.store.runs()
    assert record.status == "interrupted"
    folder = runner.results_dir / "runs" / record.run_id
    assert sorted(p.name for p in folder.iterdir()) == ["spec.json"]
    assert runner.run(tiny_spec()).status == "complete"  # the store is still usable


def test_runs_of_a_killed_process_are_marked_failed(runner):
    runner.store.start("ghost", architecture="cnn", origin="baseline", spec={}, pid=2**22 + 12345)
    assert runner.store.reap_dead() == 1
    ghost = runner.store.get("ghost")
    assert ghost.status == "failed" and "ended without finishing" in ghost.error


def test_precise_bn_sets_population_statistics_from_training_batches_and_restores_momentum():
    from harness.data.feed import ImageBatches
    from harness.training.train import RecalibrateBatchNorm

    bn = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Sequential([keras.Input((96, 96, 3)), bn])
    rng = np.random.default_rng(0)
    images = np.clip(rng.normal(100, 2, size=(40, 96, 96, 3)), 0, 255).astype(np.uint8)
    callback = RecalibrateBatchNorm(ImageBatches(images, np.arange(40), np.zeros(40), batch_size=10), max_batches=3)
    callback.set_model(model)
    callback.on_test_begin()
    assert np.allclose(bn.moving_mean.numpy(), images[:30].mean(), atol=0.05)
    assert np.allclose(bn.moving_variance.numpy(), images[:30].var(), rtol=0.1)
    assert bn.momentum == 0.99 and callback.calls == 1
