"""What `harness bench` measures: its options, stages and the targets each stage's ratio must meet."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError
from harness.settings import knob, numbers, positive_int

STAGES = ("prepare", "feed", "train", "predict")
# Least harness/seed ratio per stage (issue 5); train: no slower than the seed for the same model and batch.
TARGETS = {"prepare": 20.0, "feed": 10.0, "train": 1.0, "predict": 4.0}
FEED_OVER_TRAIN = 5.0  # the feed must outrun training by this much, or it is the bottleneck
MIN_PREPARE_SIZE = 20
SEED_BATCH = 50


def _names(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


@dataclass(frozen=True)
class BenchOptions:
    """What to measure, on which images, how often (`harness bench`'s flags and the library's keywords derive from
    these fields)."""

    data: Path | None = field(default=None, metadata=knob("Kaggle-layout folder, e.g. kaggle", metavar="DIR"))
    synthetic: int | None = field(  # test images in Kaggle's proportion
        default=None, metadata=knob("generate N labelled .tif images (default: 2000)", metavar="N", parse=positive_int)
    )
    stages: tuple[str, ...] = field(
        default=STAGES, metadata=knob("comma-separated (default: all four)", metavar="S,S", parse=_names)
    )
    repeats: int = field(default=3, metadata=knob("timings per figure; the median is shown", parse=positive_int))
    models: tuple[str, ...] = field(
        default=("seed_model2",),
        metadata=knob("'baselines' or names (default model 2)", metavar="ARCH", nargs="+"),
    )
    sample: int | None = field(
        default=None,
        metadata=knob("labelled images for feed/train/predict", metavar="N", parse=positive_int),
    )
    sizes: tuple[int, ...] | None = field(
        default=None,
        metadata=knob(
            "prepare sizes (default: sample/10, sample, the whole folder)", metavar="N,N", parse=numbers(int)
        ),
    )
    seed_limit: int = field(
        default=20_000,
        metadata=knob(
            "largest size for the seed's quadratic PrepareData; beyond it is extrapolated", metavar="N",
            parse=positive_int,
        ),
    )  # fmt: skip
    steps: int = field(default=20, metadata=knob("timed training steps per repeat (default 20)", parse=positive_int))
    warmup: int = field(default=3, metadata=knob("untimed steps first (tracing, caches)", cli=False))
    predict_images: int = field(default=1000, metadata=knob("test images predicted", metavar="N", parse=positive_int))
    predict_batch_size: int = field(default=512, metadata=knob("prediction batch size", cli=False))
    knobs: bool = field(
        default=True, metadata=knob("also time mixed_bfloat16, XLA and batch-256 variants (--no-knobs skips them)")
    )
    # Time `harness data check` and the seed's PrepareData as whole new processes on the largest size: the
    # figure a user sees (imports and all), beside the in-process stage figure; and the check's peak RSS.
    data_check: bool = field(
        default=True, metadata=knob("the `data check` subprocess and its peak RSS (--no-data-check skips it)")
    )
    work: Path | None = field(
        default=None, metadata=knob("scratch folder (default: the system's); removed at the end", metavar="DIR")
    )
    json_path: Path | None = field(
        default=None, metadata=knob("also write every figure to this JSON file", flag="--json", metavar="PATH")
    )

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
