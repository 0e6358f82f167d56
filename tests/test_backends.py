"""The matrix's promises: each environment runs its backend, baselines agree across backends, runs name theirs."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from rich.console import Console

from harness.backend import BACKENDS, environment, forget_traced_gradients, pick_backend
from harness.config import DataConfig, OptimizerConfig, RunSpec, TrainingConfig
from harness.data import load_dataset
from harness.data.feed import ImageBatches
from harness.errors import HarnessError
from harness.ranking.leaderboard import rank, render_text
from harness.registry import ARCHITECTURES, build_model
from harness.store.runs import RunStore
from harness.training.inference import predict_probabilities
from harness.training.runner import Runner
from harness.training.train import compile_model, fit, with_input_pipeline

pytestmark = pytest.mark.needs_backend

BACKEND = keras.config.backend()
BASELINES = ARCHITECTURES.names(baseline=True)
REFERENCE = Path(__file__).parent / "fixtures" / "backend_reference.json"
# Float32 convolutions sum in a different order on each backend (oneDNN, XLA, ATen): on CPU the baselines'
# probabilities were seen to differ by at most 2.5e-6. The bound leaves a factor of 40 for other CPUs and versions.
ATOL = 1e-4
SEED = 20240601
BATCH = 6


def reference_batch() -> np.ndarray:
    """Fixed uint8 images: the same bytes on every backend, Python and numpy (RandomState is a frozen stream)."""
    return np.random.RandomState(SEED).randint(0, 256, size=(BATCH, 96, 96, 3)).astype(np.uint8)


def deterministic_weights(model: keras.Model, seed: int = SEED) -> list[np.ndarray]:
    """Weights for every variable of `model`, from RandomState, scaled (He) so that no layer saturates."""
    weights = []
    for i, variable in enumerate(model.weights):
        rng = np.random.RandomState(seed + i)
        shape = tuple(variable.shape)
        if variable.name == "kernel":
            value = rng.standard_normal(shape) * np.sqrt(2.0 / int(np.prod(shape[:-1])))
        elif variable.name in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif variable.name == "alpha":  # PReLU slopes
            value = rng.uniform(0.1, 0.4, shape)
        else:  # bias, beta, moving_mean
            value = rng.standard_normal(shape) * 0.1
        weights.append(value.astype(np.float32))
    return weights


def baseline_probabilities(name: str) -> np.ndarray:
    """The harness's own prediction path (uint8 feed, in-model rescale, batched predict) with the fixed weights."""
    keras.backend.clear_session()
    model = with_input_pipeline(build_model(name))
    model.set_weights(deterministic_weights(model))
    return predict_probabilities(model, reference_batch(), np.arange(BATCH), batch_size=4)  # a full and a partial batch


def write_reference() -> None:
    """`KERAS_BACKEND=tensorflow python tests/test_backends.py` rewrites the reference, e.g. after a new baseline."""
    if BACKEND != "tensorflow":
        raise SystemExit("the reference is TensorFlow's: run with KERAS_BACKEND=tensorflow")
    probabilities = {name: [round(float(p), 8) for p in baseline_probabilities(name)] for name in BASELINES}
    rows = ",\n".join(f"    {json.dumps(name)}: {json.dumps(values)}" for name, values in probabilities.items())
    head = json.dumps({"backend": BACKEND, "keras": keras.__version__, "seed": SEED})[1:-1]
    REFERENCE.write_text(f'{{{head},\n  "probabilities": {{\n{rows}\n  }}\n}}\n')
    json.loads(REFERENCE.read_text())
    print(f"wrote {REFERENCE}")


def test_keras_runs_the_backend_this_environment_names():
    # tox sets KERAS_BACKEND per environment; a silent fallback to another backend would void the matrix.
    if "KERAS_BACKEND" in os.environ:
        assert os.environ["KERAS_BACKEND"] == BACKEND
    env = environment()
    assert env["backend"] == BACKEND
    assert env["backend_version"] == importlib.import_module(BACKENDS[BACKEND]).__version__


def test_the_reference_covers_every_registered_baseline():
    reference = json.loads(REFERENCE.read_text())
    assert reference["backend"] == "tensorflow" and reference["seed"] == SEED
    assert sorted(reference["probabilities"]) == BASELINES, "a baseline changed: regenerate (see write_reference)"


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_predictions_match_tensorflows_within_tolerance(name):
    expected = np.array(json.loads(REFERENCE.read_text())["probabilities"][name])
    got = baseline_probabilities(name)
    # The batch is discriminating: its predictions differ between images by far more than the tolerance.
    assert np.ptp(expected) > 100 * ATOL and np.all((expected > 0.01) & (expected < 0.99))
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL, err_msg=f"{name} on {BACKEND}")


def test_the_run_record_and_the_leaderboard_name_the_backend(make_kaggle, tmp_path):
    dataset = load_dataset(make_kaggle(n_train=24, n_test=4), tmp_path / "cache", progress=False)
    url = f"sqlite:///{tmp_path / 'harness.db'}"
    runner = Runner(dataset, RunStore(url), tmp_path / "results", progress=False, console=Console(quiet=True))
    spec = RunSpec(
        architecture="cnn",
        arch_kwargs={"widths": [4], "convs": [1], "dense": [8]},
        training=TrainingConfig(epochs=1, batch_size=8, optimizer=OptimizerConfig("adam", 1e-3)),
        data=DataConfig(protocol="stratified", seed=1),
        seed=1,
    )
    record = runner.run(spec)
    assert record.status == "complete", record.error
    (stored,) = RunStore(url).runs()  # read back through a new connection
    assert stored.backend == stored.environment["backend"] == BACKEND
    frame = rank([stored])
    assert frame.loc[0, "backend"] == BACKEND
    assert f",{BACKEND}," in render_text(frame, "csv")


def test_tensorflow_only_clean_up_runs_on_tensorflow_and_nowhere_else():
    model = compile_model(with_input_pipeline(build_model("cnn", widths=[2], convs=[1], dense=[4])), TrainingConfig())
    model.fit(np.zeros((4, 96, 96, 3), np.uint8), np.zeros(4, np.float32), epochs=1, verbose=0)
    del model
    keras.backend.clear_session()
    released = forget_traced_gradients()  # the gradient functions a traced TensorFlow train step registered
    assert released > 0 if BACKEND == "tensorflow" else released == 0


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TensorFlow is this environment's backend")
def test_the_harness_fits_predicts_and_tunes_without_importing_tensorflow(tmp_path):
    """TensorFlow-only code sits in harness/backend.py behind a backend check; on JAX and PyTorch it never runs.

    The tox environments of those backends do not install TensorFlow at all; where it is installed (a developer's
    venv), this shows that nothing imported it.
    """
    for package in ("harness", "harness.architectures", "harness.search_spaces"):
        for info in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}."):
            if not info.name.endswith("__main__"):  # `python -m` entry points run the command when imported
                importlib.import_module(info.name)
    import keras_tuner

    images = np.random.default_rng(0).integers(0, 256, (16, 96, 96, 3), dtype=np.uint8)
    labels = np.arange(16) % 2

    def hypermodel(hp):
        model = build_model("cnn", widths=[hp.Choice("width", [2, 4])], convs=[1], dense=[4])
        return compile_model(with_input_pipeline(model), TrainingConfig())

    tuner = keras_tuner.RandomSearch(hypermodel, objective="val_loss", max_trials=1, directory=str(tmp_path))
    tuner.search(images, labels.astype("float32"), validation_split=0.25, epochs=1, verbose=0)
    model = hypermodel(keras_tuner.HyperParameters())
    train = ImageBatches(images, np.arange(12), labels, batch_size=4, shuffle=True)
    fit(model, train, ImageBatches(images, np.arange(12, 16), labels, batch_size=4), TrainingConfig(epochs=1))
    assert predict_probabilities(model, images, np.arange(16), batch_size=8, tta=2).shape == (16,)
    assert environment()["backend"] == BACKEND
    assert "tensorflow" not in sys.modules


INSTALLED = [name for name, module in BACKENDS.items() if importlib.util.find_spec(module) is not None]


def test_an_installed_backend_stands_in_for_a_missing_default():
    assert pick_backend(None, None, ["tensorflow", "jax"]) is None  # Keras' default, TensorFlow, is there
    assert pick_backend(None, None, ["torch"]) == "torch"
    assert pick_backend(None, "jax", ["jax", "torch"]) is None  # keras.json's choice is there
    assert pick_backend(None, "tensorflow", ["jax", "torch"]) == "jax"
    assert pick_backend("torch", None, ["torch"]) is None  # an explicit request is Keras' to carry out
    with pytest.raises(
        HarnessError, match=r'KERAS_BACKEND=jax, but jax is not installed: pip install "harness\[jax\]"'
    ):
        pick_backend("jax", None, ["torch"])
    with pytest.raises(HarnessError, match="no Keras backend is installed"):
        pick_backend(None, None, [])


def _python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    clean.update(KERAS_HOME=str(tmp_path / "keras-home"), **env)  # no keras.json: Keras' default applies
    return subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, timeout=300)


def test_without_keras_backend_set_the_harness_starts_on_an_installed_backend(tmp_path):
    done = _python(
        "from harness.backend import quiet_start, backend_name; quiet_start(); print(backend_name())", tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == ("tensorflow" if "tensorflow" in INSTALLED else INSTALLED[0])


@pytest.mark.skipif(len(INSTALLED) == len(BACKENDS), reason="every backend is installed here")
def test_asking_for_a_backend_that_is_not_installed_is_a_one_line_error(tmp_path):
    missing = next(name for name in BACKENDS if name not in INSTALLED)
    done = _python(
        "import sys; from harness.cli import main; sys.exit(main(['list']))", tmp_path, KERAS_BACKEND=missing
    )
    assert done.returncode == 2
    assert f"KERAS_BACKEND={missing}, but {missing} is not installed" in done.stderr
    assert "Traceback" not in done.stderr


if __name__ == "__main__":
    write_reference()
