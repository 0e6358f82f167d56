"""The fast path a GPU needs, checked on the CPU: the compiled training step gives the eager step's losses, the
augmentation runs inside the model (the feed stays uint8), and no callback makes the loop wait for the device."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from harness.clock import Deadline
from harness.config import AugmentConfig, OptimizerConfig, TrainingConfig
from harness.data.feed import ImageBatches
from harness.terminal.progress import epoch_progress
from harness.training.callbacks import DeadlineStop, StopOnNonFiniteLoss
from harness.training.train import build_core, compile_model, jit_compile_for, with_input_pipeline

pytestmark = pytest.mark.needs_backend

BACKEND = keras.backend.backend()


def tiny(jit: str, seed: int = 7) -> keras.Model:
    keras.utils.set_random_seed(seed)
    core = build_core("cnn", "float32", widths=[4], convs=[1], dense=[8], dropout=0.0)
    training = TrainingConfig(epochs=1, batch_size=8, optimizer=OptimizerConfig("sgd", 1e-2), jit_compile=jit)
    return compile_model(with_input_pipeline(core, AugmentConfig(), seed), training, 4)


def losses(model: keras.Model) -> list[float]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 96, 96, 3), dtype=np.uint8)
    y = (np.arange(32) % 2).astype(np.float32)
    return [float(model.train_on_batch(x[i : i + 8], y[i : i + 8])[0]) for i in range(0, 32, 8)]


@pytest.mark.skipif(BACKEND == "torch", reason="torch.compile on a CPU compiles for minutes: the device check runs it")
def test_the_compiled_step_gives_the_eager_steps_losses():
    compiled = tiny("on")
    eager = tiny("off")
    if BACKEND == "jax":  # JAX always traces with jit: its eager reference is run_eagerly
        eager.compile(optimizer=eager.optimizer, loss=eager.loss, run_eagerly=True)
    assert compiled.jit_compile is True
    np.testing.assert_allclose(losses(compiled), losses(eager), rtol=1e-4, atol=1e-5)


def test_auto_compiles_on_an_accelerator_only():
    assert jit_compile_for("on") is True and jit_compile_for("off") is False
    # This machine has no accelerator: auto leaves Keras' own choice (no XLA on a CPU), and eager on PyTorch.
    assert jit_compile_for("auto") == (False if BACKEND == "torch" else "auto")


def test_augmentation_runs_inside_the_model_and_the_feed_stays_uint8():
    core = build_core("cnn", "float32", widths=[4], convs=[1], dense=[8])
    model = with_input_pipeline(core, AugmentConfig(dihedral=True, hed=0.05), seed=1)
    names = [layer.__class__.__name__ for layer in model.layers]
    assert "RandomDihedral" in names and "RandomHEDJitter" in names
    images = np.zeros((16, 96, 96, 3), np.uint8)
    x, _ = ImageBatches(images, np.arange(16), np.zeros(16), batch_size=8, shuffle=True)[0]
    assert x.dtype == np.uint8  # host to device: bytes; the model rescales and augments on the device


def test_no_batch_callback_makes_the_training_loop_wait_for_the_device():
    """Keras dispatches batch-end callbacks on a helper thread only when every one is async-safe: one that is not
    reads the loss on the loop's thread, a host synchronisation per batch."""
    from rich.console import Console

    model = tiny("off")
    callbacks = [
        StopOnNonFiniteLoss(),
        DeadlineStop(Deadline(60), images_after=100),
        epoch_progress("tiny", 1, Console(quiet=True), live=False),
    ]
    dispatch = keras.callbacks.CallbackList(callbacks, model=model)
    if not keras.src.backend.IS_THREAD_SAFE:
        pytest.skip(f"the {BACKEND} backend dispatches no callback asynchronously")
    assert dispatch._async_train is True
