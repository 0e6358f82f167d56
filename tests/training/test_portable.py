"""Portable models: a run's model.keras loads in a fresh interpreter with plain Keras; `harness export`."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.config import AugmentConfig, DataConfig, OptimizerConfig, RunSpec, TrainingConfig

pytestmark = pytest.mark.needs_backend

TINY = {"widths": [4], "convs": [1], "dense": [8]}
# --augment --hed 0.05 --crop random: every custom augmentation layer the harness has, and Keras's own.
AUGMENTED = AugmentConfig(dihedral=True, brightness=0.1, contrast=0.1, hue=0.02, hed=0.05, crop="random")

PLAIN_KERAS = """
import sys
import keras
import numpy as np
model = keras.saving.load_model(sys.argv[1])
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0).ravel())
assert not [name for name in sys.modules if name.split(".")[0] == "harness"], "harness was imported"
"""


def _spec(**training) -> RunSpec:
    return RunSpec(
        architecture="cnn",
        arch_kwargs=TINY,
        training=TrainingConfig(epochs=1, batch_size=8, optimizer=OptimizerConfig("adam", 1e-3), **training),
        data=DataConfig(protocol="stratified", seed=1),
        seed=1,
    )


def _val_images(runner, record) -> tuple[np.ndarray, np.ndarray]:
    """The validation images of `record` and the probabilities the harness predicted for them."""
    frame = pd.read_csv(Path(record.artifacts) / "val_predictions.csv")
    position = {name: i for i, name in enumerate(runner.dataset.train.ids)}
    images = runner.dataset.train.images[[position[name] for name in frame["id"]]]
    return np.asarray(images), frame["probability"].to_numpy()


@pytest.fixture
def augmented_run(runner):
    record = runner.run(_spec(augment=AUGMENTED))
    assert record.status == "complete", record.error
    return record


def test_an_augmented_runs_model_loads_in_plain_keras_and_predicts_the_harness_probabilities(
    runner, augmented_run, tmp_path
):
    images, harness_probs = _val_images(runner, augmented_run)
    np.save(tmp_path / "images.npy", images)
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend()}
    model = Path(augmented_run.artifacts) / "model.keras"
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_KERAS, str(model), str(tmp_path / "images.npy"), str(tmp_path / "p.npy")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # not the repository: nothing of harness on the path but the installed package
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.allclose(np.load(tmp_path / "p.npy"), harness_probs, atol=2e-6)  # the CSV keeps 6 decimals


def test_harness_load_model_loads_a_model_saved_with_its_training_graph(runner, tmp_path):
    runner.save_optimizer = True  # the compiled training graph, augmentation layers and all
    record = runner.run(_spec(augment=AUGMENTED))
    assert record.status == "complete", record.error
    import harness

    saved = Path(record.artifacts) / "model.keras"
    # The training graph is what every run saved before: plain Keras cannot load its harness layers.
    done = subprocess.run(
        [sys.executable, "-c", f"import keras; keras.saving.load_model({str(saved)!r})"],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": keras.backend.backend()},
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode != 0 and "harness>RandomDihedral" in done.stderr, done.stderr[-2000:]
    model = harness.load_model(saved)
    images, harness_probs = _val_images(runner, record)
    assert any(layer.name == "random_dihedral" for layer in model.layers)
    assert np.allclose(model.predict(images, verbose=0).ravel(), harness_probs, atol=2e-6)


def _argv(runner, *args: str) -> list[str]:
    return ["export", *args, "--results", str(runner.results_dir), "--storage", runner.store.url]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a SavedModel needs TensorFlow")
def test_export_savedmodel_serves_the_runs_probabilities(runner, augmented_run, tmp_path, capsys):
    import tensorflow as tf

    assert main(_argv(runner, augmented_run.run_id, "--out", str(tmp_path / "out"))) == 0, capsys.readouterr().err
    served = tf.saved_model.load(str(tmp_path / "out" / "savedmodel"))
    images, harness_probs = _val_images(runner, augmented_run)
    probs = served.serve(tf.constant(images, tf.float32)).numpy().ravel()
    assert np.allclose(probs, harness_probs, atol=2e-6)


def test_export_says_in_one_line_what_it_cannot_do(runner, augmented_run, capsys):
    assert main(_argv(runner, "no-such-run")) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err
    if importlib.util.find_spec("tf2onnx") is None and importlib.util.find_spec("onnx") is None:
        assert main(_argv(runner, augmented_run.run_id, "--format", "onnx")) == 2
        err = capsys.readouterr().err
        assert "--format onnx does not work" in err and len(err.strip().splitlines()) == 1, err
        assert not list(Path(augmented_run.artifacts).glob("export/*onnx*")), "no half-written artefact is left"
