"""Frozen run configuration: what data, how to train, which model; stored verbatim with each run."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from harness.errors import ConfigError

PROTOCOLS = ("seed", "stratified")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
PRECISIONS = ("float32", "mixed", "mixed_bfloat16")


@dataclass(frozen=True)
class OptimizerConfig:
    """An optimiser by name, its learning rate and any other constructor arguments."""

    name: str = "adam"
    learning_rate: float = 1e-3
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.name!r}; choose one of {', '.join(OPTIMIZERS)}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning rate must be positive, got {self.learning_rate}")


CROPS = ("random", "centre")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation: on the device, as Keras layers, so the feed stays uint8 on every backend."""

    dihedral: bool = False  # the 8 flips and 90-degree rotations
    brightness: float = 0.0  # max shift, as a fraction of the 0..255 range
    contrast: float = 0.0  # max relative change
    hue: float = 0.0  # max hue rotation, as a fraction of the colour circle
    crop: str | None = None  # "random" in training and centre at inference, or always "centre"
    crop_size: int = 72

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "hue"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be in [0, 1), got {getattr(self, name)}")
        if self.crop is not None and self.crop not in CROPS:
            raise ConfigError(f"--crop must be one of {', '.join(CROPS)}, got {self.crop!r}")
        if not 32 <= self.crop_size <= 96:
            raise ConfigError(f"--crop-size must keep the centre 32x32 and fit in 96, got {self.crop_size}")

    @property
    def active(self) -> bool:
        return self.dihedral or bool(self.brightness or self.contrast or self.hue or self.crop)


@dataclass(frozen=True)
class TrainingConfig:
    """How one model is fitted. The seed notebook's values are each baseline's defaults."""

    epochs: int = 10
    batch_size: int = 50
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    # Training stops after the epoch in which this many seconds have passed (None: no limit).
    time_limit: float | None = None
    predict_batch_size: int = 256  # large enough to keep a GPU busy; 512 wide same-padded maps cost GBs on a CPU
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Test-time augmentation: average predictions over this many dihedral transforms (1 = off).
    tta: int = 1
    # Training batches whose statistics BatchNorm's population estimates are recomputed from before each
    # validation (0 = off: Keras' running averages, as the notebook). See train.RecalibrateBatchNorm.
    precise_bn: int = 20
    # Dtype policy of the architecture's layers: "mixed" computes in float16 (GPUs with tensor cores),
    # "mixed_bfloat16" in bfloat16 (CPUs with AVX512-BF16 or AMX, TPUs); the output layer stays float32.
    precision: str = "float32"
    # At most this many training batches an epoch (None: a full pass); a scaling study's equal-compute budget
    # uses it to give a large model a fraction of an epoch.
    steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(f"steps per epoch must be at least 1, got {self.steps_per_epoch}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        if self.tta not in (1, 2, 4, 8):
            raise ConfigError(f"--tta must be 1, 2, 4 or 8, got {self.tta}")


STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # a file, table and URL-safe name


def check_study_name(name: str) -> str:
    """A study name every store and tuner accepts, or a one-line error naming --study."""
    if not STUDY_NAME.match(name):
        raise ConfigError(f"--study {name!r}: use letters, digits, '.', '_' and '-' (at most 100, no leading symbol)")
    return name


SEED_MAX = 2**32 - 1  # numpy's and scikit-learn's random_state take 0 .. 2**32 - 1


def check_seed(seed: int) -> int:
    """A seed every library accepts, or a one-line error naming --seed."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"--seed must be a whole number from 0 to {SEED_MAX:,}, got {seed!r}")
    return seed


@dataclass(frozen=True)
class DataConfig:
    """Which labelled images a run sees and how they are split."""

    protocol: str = "seed"
    sample: int | None = None
    seed: int = 101
    val_fraction: float = 0.15
    folds: int = 1  # K > 1: K-fold cross-validation, every image validated once (out of fold)
    near_duplicates: bool = True  # stratified protocol: keep near-duplicate images on one side too

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.sample is not None and self.sample < 4:
            raise ConfigError(f"--sample must be at least 4, got {self.sample}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"validation fraction must be in (0, 1), got {self.val_fraction}")
        if self.folds < 1:
            raise ConfigError(f"--folds must be at least 1, got {self.folds}")
        if self.folds > 1 and self.protocol != "stratified":
            raise ConfigError("--folds needs --protocol stratified: the seed protocol is one fixed 85/15 split")
        check_seed(self.seed)


@dataclass(frozen=True)
class Origin:
    """Where a run came from: a baseline, a search trial or an ensemble."""

    kind: str = "run"  # "baseline" only for a registered baseline; "search", "ensemble", "rerun:<id>"
    study: str | None = None
    trial: int | None = None
    tuner: str | None = None


@dataclass(frozen=True)
class RunSpec:
    """Everything needed to reproduce one trained model."""

    architecture: str
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 101
    origin: Origin = field(default_factory=Origin)

    def __post_init__(self) -> None:
        check_seed(self.seed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunSpec:
        training = dict(raw.get("training", {}))
        training["optimizer"] = OptimizerConfig(**training.get("optimizer", {}))
        training["augment"] = AugmentConfig(**training.get("augment", {}))
        return cls(
            architecture=raw["architecture"],
            arch_kwargs=dict(raw.get("arch_kwargs", {})),
            training=TrainingConfig(**training),
            data=DataConfig(**raw.get("data", {})),
            seed=raw.get("seed", 101),
            origin=Origin(**raw.get("origin", {})),
        )
