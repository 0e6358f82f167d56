"""--tensorboard: Keras's TensorBoard callback writes each run's per-epoch scalars, read back from the event files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import build_parser, main
from harness.config import DataConfig, OptimizerConfig, RunSpec, TrainingConfig

pytestmark = pytest.mark.needs_backend

# Keras's TensorBoard callback writes with tf.summary, whose scalar writer is the tensorboard package's.
HAS_TF = all(importlib.util.find_spec(name) is not None for name in ("tensorflow", "tensorboard"))


def _spec(**training) -> RunSpec:
    return RunSpec(
        architecture="cnn",
        arch_kwargs={"widths": [4], "convs": [1], "dense": [8]},
        training=TrainingConfig(
            **{"epochs": 2, "batch_size": 8, "optimizer": OptimizerConfig("adam", 1e-3), **training}
        ),
        data=DataConfig(protocol="stratified", seed=1),
        seed=1,
    )


def _scalars(folder: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of every scalar summary in the event files under `folder` (TensorFlow's record reader)."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    found: dict[str, dict[int, float]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for raw in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(raw.numpy())
            for value in event.summary.value:
                number = tf.make_ndarray(value.tensor) if value.HasField("tensor") else value.simple_value
                found.setdefault(value.tag, {})[event.step] = float(number)
    return found


@pytest.mark.skipif(not HAS_TF, reason="Keras's TensorBoard callback writes with TensorFlow's summary writer")
def test_tensorboard_logs_hold_every_epochs_exact_scores(runner, tmp_path):
    record = runner.run(_spec(tensorboard=str(tmp_path / "tb")))
    assert record.status == "complete", record.error
    history = pd.read_csv(Path(record.artifacts) / "history.csv")
    logs = tmp_path / "tb" / record.run_id
    validation, train = _scalars(logs / "validation"), _scalars(logs / "train")
    assert sorted(validation["epoch_auc"]) == [0, 1] and sorted(train["epoch_loss"]) == [0, 1]
    # The validation curve is the exact AUC the run records (ExactValidation runs first), not Keras's binned one.
    assert np.allclose([validation["epoch_auc"][e] for e in (0, 1)], history["val_auc"], atol=1e-6)
    assert np.allclose([train["epoch_loss"][e] for e in (0, 1)], history["loss"], atol=1e-6)


@pytest.mark.skipif(not HAS_TF, reason="Keras's TensorBoard callback writes with TensorFlow's summary writer")
def test_tensorboard_flag_alone_logs_under_the_results_folder(runner):
    args = build_parser().parse_args(["run", "cnn", "--tensorboard"])
    assert args.tensorboard == ""  # the flag's value is optional
    record = runner.run(_spec(tensorboard="", epochs=1))
    assert record.status == "complete", record.error
    assert list((runner.results_dir / "tensorboard" / record.run_id / "validation").glob("events.out.tfevents.*"))


@pytest.mark.skipif(HAS_TF, reason="TensorFlow and tensorboard are installed here: the logs are written")
def test_tensorboard_without_tensorflow_is_one_line(tmp_path, capsys):
    assert main(["run", "cnn", "--results", str(tmp_path), "--tensorboard", str(tmp_path / "tb")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--tensorboard needs TensorFlow's summary writer" in err and len(err.splitlines()) == 1
