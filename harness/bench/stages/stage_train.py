"""The train stage: the seed's `fit` on flow_from_directory against the harness's `fit` on its uint8 cache, same
model and batch, then the harness with each knob (mixed_bfloat16, XLA, batch 256)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.bench.clocks import BatchClock
from harness.bench.options import SEED_BATCH, TARGETS
from harness.bench.table import Row
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.bench.stages.state import Bench
    from harness.data import Dataset

KNOBS = (  # label, precision, jit_compile, batch size (None: the model's own)
    ("mixed_bfloat16", "mixed_bfloat16", False, None),
    ("XLA (jit_compile)", "float32", True, None),
    ("batch 256", "float32", False, 256),
)


def run(bench: Bench) -> None:
    from harness.config import DataConfig
    from harness.data.splits import make_split

    dataset = bench.fixtures.dataset(bench.fixtures.main)
    split = make_split(dataset, DataConfig())
    for model_name in bench.options.models:
        _train_model(bench, model_name, dataset, split.train, split.val)


def _train_model(bench: Bench, name: str, dataset: Dataset, train_index: np.ndarray, val_index: np.ndarray) -> None:
    """Seed and harness fits alternate, `steps` batches each; the rate is the median over all their batches."""
    import keras

    from harness.bench.seed_way import compile_like_notebook, train_generator
    from harness.data.feed import ImageBatches
    from harness.training.train import build_core, compile_model, fit, make_optimizer, with_input_pipeline

    options = bench.options
    training = _training_config(name)
    batch = training.batch_size
    steps = options.steps
    needed = max(steps, options.warmup) * batch
    if needed > len(train_index):
        raise HarnessError(
            f"train: {steps} steps of {batch} need {needed} training images; the split has {len(train_index)}"
            " (lower --steps or raise --sample)"
        )
    images, labels = dataset.train.images, dataset.train.labels
    val = ImageBatches(images, val_index[:batch], labels, batch)

    def harness_way(model: keras.Model, batch_size: int) -> tuple[Callable[[], None], BatchClock]:
        clock = BatchClock()
        config = _one_epoch(training, batch_size)

        def once(n_batches: int) -> None:
            index = train_index[: n_batches * batch_size]
            fit(model, ImageBatches(images, index, labels, batch_size, True, 101), val, config, [clock.callback()])

        once(options.warmup)
        clock.seconds.clear()
        return lambda: once(max(2, steps * SEED_BATCH // batch_size)), clock

    bench.console.print(f"  {name}: the seed's fit and the harness's, {options.repeats} x {steps} batches each")
    seed_model = compile_like_notebook(build_core(name), make_optimizer(training.optimizer))
    generator = train_generator(bench.fixtures.seed_prepared(bench.fixtures.main).train_dir, batch)
    seed_clock = BatchClock()
    seed_callbacks = [seed_clock.callback()]

    def seed_step(n_steps: int = steps) -> None:
        seed_model.fit(generator, epochs=1, steps_per_epoch=n_steps, verbose=0, callbacks=seed_callbacks)

    seed_step(options.warmup)
    seed_clock.seconds.clear()
    ours_step, ours_clock = harness_way(compile_model(with_input_pipeline(build_core(name)), training), batch)
    ratios = []  # per repeat: their spread is the noise a "no slower" verdict must be read against
    for _ in range(options.repeats):
        seed_from, ours_from = len(seed_clock.seconds), len(ours_clock.seconds)
        seed_step()
        ours_step()
        ratios.append(ours_clock.rate(batch, since=ours_from) / seed_clock.rate(batch, since=seed_from))
    seed_rate = seed_clock.rate(batch)
    ours_rate = ours_clock.rate(batch)

    def record(what: str, images: int, rate: float, **more: Any) -> None:
        bench.result.rows.append(Row("train", f"{name}{what}", images, seed=seed_rate, harness=rate, **more))

    bench.train_rates[name] = (ours_rate, f"float32, batch {batch}")
    note = "median batch time; tracing and validation left out"
    if len(ratios) > 1:
        note += f"; per repeat {min(ratios):.2f}x to {max(ratios):.2f}x"
    what = f", batch {batch}: fit on flow_from_directory vs harness fit"
    record(what, options.repeats * steps * batch, ours_rate, target=TARGETS["train"], note=note)
    if not options.knobs:
        return
    for label, precision, jit, knob_batch in KNOBS:
        batch_size = knob_batch or batch
        n_batches = max(2, steps * SEED_BATCH // batch_size)
        if max(n_batches, options.warmup) * batch_size > len(train_index):
            continue
        bench.console.print(f"  {name}: harness + {label}")
        model = with_input_pipeline(build_core(name, precision))
        compile_model(model, _with_precision(training, precision))
        model.jit_compile = jit
        step, clock = harness_way(model, batch_size)
        for _ in range(options.repeats):
            step()
        rate = clock.rate(batch_size)
        note = f"{rate / ours_rate:.2f}x the harness's default"
        timed = options.repeats * n_batches * batch_size
        record(f", harness + {label}", timed, rate, baseline=ours_rate, note=note)
        if rate > bench.train_rates[name][0]:
            bench.train_rates[name] = (rate, label)
        del model
    keras.backend.clear_session()


def _training_config(name: str) -> Any:
    """The architecture's registered training settings (the notebook's optimiser and batch), else the defaults."""
    from harness.config import TrainingConfig
    from harness.registry import ARCHITECTURES

    return ARCHITECTURES.get(name).meta.get("training") or TrainingConfig()


def _one_epoch(training: Any, batch_size: int) -> Any:
    changes: dict[str, Any] = {"epochs": 1, "batch_size": batch_size, "time_limit": None}
    if hasattr(training, "precise_bn"):
        changes["precise_bn"] = 0  # a calibration pass after the epoch: not training, and not timed
    return dataclasses.replace(training, **changes)


def _with_precision(training: Any, precision: str) -> Any:
    return dataclasses.replace(training, precision=precision) if hasattr(training, "precision") else training
