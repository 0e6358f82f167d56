"""What `harness bench` measures: its options, stages and the targets each stage's ratio must meet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

STAGES = ("prepare", "feed", "train", "predict")
# Least harness/seed ratio per stage (issue 5); train: no slower than the seed for the same model and batch.
TARGETS = {"prepare": 20.0, "feed": 10.0, "train": 1.0, "predict": 4.0}
FEED_OVER_TRAIN = 5.0  # the feed must outrun training by this much, or it is the bottleneck
MIN_PREPARE_SIZE = 20
SEED_BATCH = 50


@dataclass(frozen=True)
class BenchOptions:
    """What to measure, on which images, how often."""

    data: Path | None = None
    synthetic: int | None = None  # generate a folder of this many labelled images (test: Kaggle's proportion)
    stages: tuple[str, ...] = STAGES
    repeats: int = 3
    models: tuple[str, ...] = ("seed_model2",)
    sample: int | None = None  # labelled images for feed, train and predict (default: the folder, up to seed_limit)
    sizes: tuple[int, ...] | None = None  # prepare at these sizes (default: sample/10, sample and the whole folder)
    seed_limit: int = 20_000  # the seed's quadratic PrepareData runs up to here; beyond, it is extrapolated
    steps: int = 20  # timed training steps per repeat
    warmup: int = 3  # untimed steps first (tracing, caches)
    predict_images: int = 1000
    predict_batch_size: int = 512
    knobs: bool = True  # also time the harness with mixed_bfloat16, XLA and batch 256
    # Time `harness data check` and the seed's PrepareData as whole new processes on the largest size: the
    # figure a user sees (imports and all), beside the in-process stage figure; and the check's peak RSS.
    data_check: bool = True
    work: Path | None = None  # scratch folder (default: the system's temporary folder)
    json_path: Path | None = None

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.stages:
            raise HarnessError(f"--stages: unknown stage {unknown[0] if unknown else '(none)'}; use {','.join(STAGES)}")
        if self.data is not None and self.synthetic is not None:
            raise HarnessError("give --data DIR or --synthetic N, not both")
        for name in ("repeats", "steps", "predict_images", "predict_batch_size", "seed_limit"):
            if getattr(self, name) < 1:
                raise HarnessError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 1:
            raise HarnessError(f"warmup must be at least 1 step (the first steps trace the model), got {self.warmup}")
        if self.synthetic is not None and self.synthetic < MIN_PREPARE_SIZE:
            raise HarnessError(f"--synthetic must be at least {MIN_PREPARE_SIZE}, got {self.synthetic}")
        if self.sample is not None and self.sample < MIN_PREPARE_SIZE:
            raise HarnessError(f"--sample must be at least {MIN_PREPARE_SIZE}, got {self.sample}")
        if self.sizes is not None and (not self.sizes or min(self.sizes) < MIN_PREPARE_SIZE):
            raise HarnessError(f"--sizes must each be at least {MIN_PREPARE_SIZE}, got {list(self.sizes)}")
