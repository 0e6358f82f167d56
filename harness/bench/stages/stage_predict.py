"""The predict stage: the seed's batch-1 flow_from_dataframe against the harness's batched predict, on the very
same model, with each model's arithmetic rate set against the machine's float32 matmul ceiling."""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.bench.clocks import median
from harness.bench.options import TARGETS
from harness.bench.table import Row

if TYPE_CHECKING:
    from harness.bench.stages.state import Bench
    from harness.data import Dataset

# (label, precision, jit_compile, XLA-fused element-wise ops): the default fuses them (backend.fused_elementwise)
KNOBS = (
    ("mixed_bfloat16", "mixed_bfloat16", False, True),
    ("XLA (jit_compile)", "float32", True, False),
    ("the TF graph alone (no XLA fusion)", "float32", False, False),
)


def run(bench: Bench) -> None:
    dataset = bench.fixtures.dataset(bench.fixtures.main)
    for model_name in bench.options.models:
        _predict_model(bench, model_name, dataset)


def _predict_model(bench: Bench, name: str, dataset: Dataset) -> None:
    from harness.backend import fused_elementwise
    from harness.bench.seed_way import predict as seed_predict
    from harness.bench.seed_way import test_generator
    from harness.cost import architecture_cost
    from harness.training.runner import predict_probabilities
    from harness.training.train import build_core, with_input_pipeline

    options, fixtures = bench.options, bench.fixtures
    # The one cost model (the architecture's registered cost, as search and report read it), before any build.
    flops = 2 * architecture_cost(name).gmacs * 1e9
    folder = fixtures.folder(fixtures.main)
    files = fixtures.test_files[: min(options.predict_images, fixtures.n_test(fixtures.main))]
    position = {id_: i for i, id_ in enumerate(dataset.test.ids.tolist())}
    index = np.asarray([position[os.path.splitext(f)[0]] for f in files], dtype=np.int64)
    batches = f"batch 1 (seed) and {options.predict_batch_size} (harness)"
    bench.console.print(f"  {name}: {len(files):,} test images, {batches}")
    core = build_core(name)
    ours = with_input_pipeline(core)  # shares the core's weights: both ways run the very same model

    def ours_once(model: Any, fused: bool = True) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        with fused_elementwise() if fused else contextlib.nullcontext():  # as `harness predict` runs it
            probs = predict_probabilities(model, dataset.test.images, index, options.predict_batch_size)
        return time.perf_counter() - start, probs

    seed_predict(core, test_generator(folder / "test", files[:2]))  # trace once, as ours below
    generator = test_generator(folder / "test", files)
    ours_once(ours)
    seed_times, our_times = [], []
    for _ in range(options.repeats):
        start = time.perf_counter()
        seed_probs = seed_predict(core, generator)
        seed_times.append(time.perf_counter() - start)
        seconds, our_probs = ours_once(ours)
        our_times.append(seconds)
    n = len(files)
    ours_rate = n / median(our_times)
    seed_rate = n / median(seed_times)
    # Against the machine's float32 matmul rate: how far batching can go before arithmetic is the limit.
    ceiling = bench.ceiling()
    agree = (
        f"same predictions to {np.abs(seed_probs - our_probs).max():.0e}; {flops / 1e9:.2f} GFLOP/image: seed"
        f" {100 * seed_rate * flops / 1e9 / ceiling:.0f}%, harness {100 * ours_rate * flops / 1e9 / ceiling:.0f}%"
        f" of the {ceiling:,.0f} GFLOP/s float32 matmul ceiling"
    )
    bench.result.rows.append(
        Row(
            "predict",
            f"{name}: flow_from_dataframe batch 1 vs harness batch {options.predict_batch_size}",
            n,
            seed=seed_rate,
            harness=ours_rate,
            target=TARGETS["predict"],
            note=agree,
        )
    )
    if not options.knobs:
        return
    for label, precision, jit, fused in KNOBS:
        model = with_input_pipeline(build_core(name, precision))
        model.set_weights(ours.get_weights())
        model.compile(jit_compile=jit)
        ours_once(model, fused)
        times, probs = zip(*[ours_once(model, fused) for _ in range(options.repeats)], strict=True)
        rate = n / median(list(times))
        bench.result.rows.append(
            Row(
                "predict",
                f"{name}, harness + {label}",
                n,
                seed=seed_rate,
                harness=rate,
                baseline=ours_rate,
                note=f"{rate / ours_rate:.2f}x the default; max |Δp| {np.abs(probs[-1] - our_probs).max():.0e}",
            )
        )
