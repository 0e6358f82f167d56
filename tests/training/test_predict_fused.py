"""`harness predict` on TensorFlow fuses the element-wise ops oneDNN leaves unfused (PReLU) with XLA: the same
probabilities, from XLA-compiled clusters between oneDNN's convolutions."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest

from harness.data import load_dataset

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow-only fusion")


def prelu_model() -> keras.Model:
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [
            keras.Input((96, 96, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(4, 3),
            keras.layers.PReLU(alpha_initializer=keras.initializers.RandomUniform(-0.5, 1.5)),
            keras.layers.Conv2D(4, 3),
            keras.layers.PReLU(alpha_initializer=keras.initializers.RandomUniform(-0.5, 1.5)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )


def test_harness_predict_fuses_prelu_with_xla_and_predicts_the_same_probabilities(make_kaggle, tmp_path):
    root = make_kaggle(n_train=10, n_test=12)
    model = prelu_model()
    model.save(tmp_path / "model.keras")
    out = tmp_path / "sub.csv"
    command = [sys.executable, "-m", "harness.cli", "predict", str(tmp_path / "model.keras"), "--data", str(root)]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "0"}
    env.pop("TF_XLA_FLAGS", None)
    done = subprocess.run(
        [*command, "--results", str(tmp_path / "r"), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Compiled cluster using XLA" in done.stderr  # TensorFlow's one line on its first XLA cluster
    dataset = load_dataset(root, tmp_path / "cache", progress=False)
    position = {id_: i for i, id_ in enumerate(dataset.test.ids.tolist())}
    frame = pd.read_csv(out)
    plain = model.predict(dataset.test.images[[position[i] for i in frame["id"]]], verbose=0).ravel()
    assert np.allclose(frame["label"], plain, atol=1e-6)  # the CSV keeps 6 decimals
