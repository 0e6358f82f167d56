"""Training and prediction throughput of the `modern` first point and seed_model1 on this machine (issue 25), as a
share of the chip's bfloat16 peak and of the feed's rate, float32 against mixed bfloat16, XLA on and off.

    python benchmarks/device/throughput.py --images 220025 --out /tmp/out/throughput.csv

Synthetic uint8 images in the harness's own feed (ImageBatches over an in-memory array, as the memory-mapped cache
serves them), the harness's own model pipeline (augmentation inside the model), `model.fit` with the harness's
callbacks off (their cost is measured apart by `harness bench`). Each figure is the median batch time after the
first epoch's tracing, over `--seconds` of training. Runs on a CPU too (small figures), so it is checked before a
GPU is lent.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import keras
import numpy as np

from harness.config import AugmentConfig, OptimizerConfig, TrainingConfig
from harness.cost import architecture_cost
from harness.data.feed import ImageBatches
from harness.registry import SEARCH_SPACES
from harness.training.inference import predict_probabilities
from harness.training.train import build_core, compile_model, with_input_pipeline
from harness.tuning.space import FixedSuggest

# Dense bfloat16 peaks, TFLOP/s (NVIDIA's data sheets, without sparsity).
PEAKS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "T4": 65.0}


def chip() -> tuple[str, float | None]:
    from harness.backend import devices

    found = devices()
    if not found:
        return "cpu", None
    name = found[0]
    return name, next((peak for key, peak in PEAKS.items() if key in name), None)


def first_point() -> tuple[str, dict, AugmentConfig]:
    entry = SEARCH_SPACES.get("modern")
    sample = entry.builder(FixedSuggest(dict(entry.meta["first"])))
    return sample.architecture, sample.arch_kwargs, sample.augment or AugmentConfig()


class Times(keras.callbacks.Callback):
    async_safe = True

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[float] = []

    def on_train_batch_begin(self, batch: int, logs: object = None) -> None:
        self.starts.append(time.perf_counter())


def train_rate(name: str, kwargs: dict, augment: AugmentConfig, images: np.ndarray, labels: np.ndarray,
               batch: int, precision: str, jit: str, seconds: float) -> float:  # fmt: skip
    keras.backend.clear_session()
    training = TrainingConfig(epochs=1, batch_size=batch, optimizer=OptimizerConfig("adamw", 2e-3), precision=precision,
                              jit_compile=jit, augment=augment)  # fmt: skip
    model = compile_model(with_input_pipeline(build_core(name, precision, **kwargs), augment, 1), training, 100)
    steps = max(20, min(len(images) // batch, 400))
    feed = ImageBatches(images, np.arange(len(images)), labels, batch, shuffle=True, seed=1, steps=steps)
    model.fit(feed, epochs=1, verbose=0, shuffle=False)  # tracing, autotuning
    timer = Times()
    started = time.perf_counter()
    epochs = 0
    while time.perf_counter() - started < seconds or epochs == 0:
        model.fit(feed, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
        epochs += 1
    gaps = np.diff(timer.starts)
    return batch / float(np.median(gaps))


def predict_rate(name: str, kwargs: dict, images: np.ndarray, batch: int, precision: str) -> float:
    keras.backend.clear_session()
    model = with_input_pipeline(build_core(name, precision, **kwargs), AugmentConfig(), 1)
    indices = np.arange(min(len(images), 50_000))
    predict_probabilities(model, images, indices[: batch * 2], batch)
    started = time.perf_counter()
    predict_probabilities(model, images, indices, batch)
    return len(indices) / (time.perf_counter() - started)


def feed_rate(images: np.ndarray, labels: np.ndarray, batch: int) -> float:
    feed = ImageBatches(images, np.arange(len(images)), labels, batch, shuffle=True, seed=1)
    started = time.perf_counter()
    n = 0
    for i in range(min(len(feed), 500)):
        n += len(feed[i][0])
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20_000, help="synthetic images (220025: Kaggle's train set)")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed training per configuration")
    parser.add_argument("--batches", default="64,256,512")
    parser.add_argument("--out", type=Path, default=Path("throughput.csv"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 96, 96, 3), dtype=np.uint8)
    labels = (np.arange(args.images) % 2).astype(np.float32)
    device, peak = chip()
    arch, kwargs, augment = first_point()
    models = {"modern first point": (arch, kwargs, augment), "seed_model1": ("seed_model1", {}, AugmentConfig())}
    feed = feed_rate(images, labels, 256)
    print(f"{device}, {keras.backend.backend()}: feed {feed:,.0f} img/s; bf16 peak {peak or '?'} TFLOP/s", flush=True)
    rows = []
    for label, (name, kw, aug) in models.items():
        gmacs = architecture_cost(name, **kw).gmacs
        for batch in map(int, args.batches.split(",")):
            for precision in ("float32", "mixed_bfloat16"):
                for jit in ("on", "off"):
                    try:
                        rate = train_rate(name, kw, aug, images, labels, batch, precision, jit, args.seconds)
                    except Exception as exc:  # an out-of-memory batch, a backend without XLA: one line, go on
                        print(f"{label} batch {batch} {precision} jit {jit}: failed ({type(exc).__name__})")
                        continue
                    flops = rate * gmacs * 1e9 * 2 * 3  # a multiply-accumulate is 2 FLOPs; backward ~2x forward
                    share = f"{100 * flops / (peak * 1e12):.1f}%" if peak else "-"
                    row = {"model": label, "what": "train", "batch": batch, "precision": precision, "jit": jit,
                           "images_per_s": round(rate), "peak_share": share, "feed_share": f"{100 * rate / feed:.1f}%",
                           "epoch_220025_s": round(220_025 / rate, 1)}  # fmt: skip
                    rows.append(row)
                    print(row, flush=True)
        for precision in ("float32", "mixed_bfloat16"):
            rate = predict_rate(name, kw, images, 1024, precision)
            rows.append({"model": label, "what": "predict", "batch": 1024, "precision": precision, "jit": "auto",
                         "images_per_s": round(rate)})  # fmt: skip
            print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=sorted({k for r in rows for k in r}))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
