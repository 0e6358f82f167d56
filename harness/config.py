"""Frozen run configuration: what data, how to train, which model; stored verbatim with each run.

Over 350 lines by design: every setting is declared once here, as one field with its flag, help and checks, and
the flags, keyword arguments, config files, stored studies and spec.json are all derived from these fields."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from harness.dihedral import TTA_VIEWS
from harness.errors import ConfigError
from harness.settings import (  # noqa: F401 - SEED_MAX, check_seed: re-exported
    DURATION_HELP,
    SEED_MAX,
    check_keys,
    check_seconds,
    check_seed,
    check_types,
    duration,
    knob,
    positive_int,
    seed_number,
)

PROTOCOLS = ("seed", "stratified", "grouped")
# The optimisers by name, each with its keras.optimizers class: the one list (flags, spaces, training read it).
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "sgd": "SGD"}
PRECISIONS = ("float32", "mixed", "mixed_bfloat16")
LR_SCHEDULES = ("constant", "cosine", "one-cycle", "wsd")  # harness.training.schedules
JIT_CHOICES = ("auto", "on", "off")


@dataclass(frozen=True)
class OptimizerConfig:
    """An optimiser by name, its learning rate and any other constructor arguments."""

    name: str = "adam"
    learning_rate: float = 1e-3
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_types(self)
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.name!r}; choose one of {', '.join(OPTIMIZERS)}")
        if not (isinstance(self.learning_rate, int | float) and 0 < self.learning_rate < math.inf):
            raise ConfigError(f"learning rate must be a finite positive number, got {self.learning_rate!r}")


CROPS = ("random", "centre")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation: on the device, as Keras layers, so the feed stays uint8 on every backend."""

    dihedral: bool = field(default=False, metadata=knob("random flips and 90-degree rotations in training"))
    brightness: float = field(  # a fraction of the 0..255 range
        default=0.0, metadata=knob("random brightness shift up to F (0..1)", metavar="F")
    )
    contrast: float = field(default=0.0, metadata=knob("random contrast change up to F (0..1)", metavar="F"))
    hue: float = field(default=0.0, metadata=knob("random hue rotation up to F of the colour circle", metavar="F"))
    crop: str | None = field(
        default=None, metadata=knob("crop to --crop-size: random (centre at test) or centre", choices=CROPS)
    )
    crop_size: int = field(default=72, metadata=knob("crop side (default 72)", metavar="PX", parse=positive_int))
    hed: float = field(
        default=0.0,
        metadata=knob(
            "HED stain jitter (Tellez et al. 2019): scale each stain's optical density by 1 +- S (0..1)", metavar="S"
        ),
    )
    hed_shift: float | None = field(
        default=None,
        metadata=knob("HED stain jitter: shift each stain's optical density by +- B (default: --hed's S)", metavar="B"),
    )
    saturation: float = field(default=0.0, metadata=knob("random HSV saturation scale 1 +- F (0..1)", metavar="F"))

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("brightness", "contrast", "hue", "hed", "saturation"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be in [0, 1), got {getattr(self, name)}")
        if self.hed_shift is not None and not 0 <= self.hed_shift < 1:
            raise ConfigError(f"--hed-shift must be in [0, 1), got {self.hed_shift}")
        if self.crop is not None and self.crop not in CROPS:
            raise ConfigError(f"--crop must be one of {', '.join(CROPS)}, got {self.crop!r}")
        if not 32 <= self.crop_size <= 96:
            raise ConfigError(f"--crop-size must keep the centre 32x32 and fit in 96, got {self.crop_size}")

    @property
    def active(self) -> bool:
        colour = self.brightness or self.contrast or self.hue or self.hed or self.stain_shift or self.saturation
        return self.dihedral or bool(colour or self.crop)

    @property
    def stain_shift(self) -> float:
        """The HED jitter's optical-density shift: hed_shift where given, else the same strength as the scale."""
        return self.hed if self.hed_shift is None else self.hed_shift


@dataclass(frozen=True)
class TrainingConfig:
    """How one model is fitted. The seed notebook's values are each baseline's defaults."""

    epochs: int = field(
        default=10, metadata=knob("epochs per model (default: each model's own)", parse=positive_int, budget=True)
    )
    batch_size: int = field(
        default=50, metadata=knob("training batch size (default: each model's own, 50)", parse=positive_int)
    )
    optimizer: OptimizerConfig = field(  # a search space chooses it per trial
        default_factory=OptimizerConfig, metadata=knob("optimiser", cli=False, study="the space chooses the optimiser")
    )
    # Training stops after the epoch in which this many seconds have passed (None: no limit). Seconds, as the
    # library keeps every duration; the flag reads minutes (settings.duration).
    time_limit: float | None = field(
        default=None,
        metadata=knob(
            f"stop a model's training after the epoch in which this much time has passed ({DURATION_HELP})",
            metavar="MINUTES",
            parse=duration,
            study="every trial trains for --epochs; see --timeout and --deadline",
        ),
    )
    # Early stopping (train.fit): the best epoch's weights are kept, as they always are.
    patience: int | None = field(
        default=None,
        metadata=knob(
            "stop training when val AUC has not improved for N epochs (default: train every epoch)",
            metavar="N",
            parse=positive_int,
        ),
    )
    predict_batch_size: int = field(  # large enough to keep a GPU busy; 512 wide same-padded maps cost GBs on a CPU
        default=256, metadata=knob("prediction batch size", cli=False)
    )
    augment: AugmentConfig = field(
        default_factory=AugmentConfig,
        metadata=knob(
            "shorthand: --dihedral --brightness .1 --contrast .1 --hue .02",
            budget=True,
            preset={"dihedral": True, "brightness": 0.1, "contrast": 0.1, "hue": 0.02},
        ),
    )
    # Test-time augmentation: average predictions over this many dihedral transforms (1 = off).
    tta: int = field(
        default=1,
        metadata=knob(
            "test-time augmentation: average over this many dihedral transforms (default 1: off)",
            choices=TTA_VIEWS,
            budget=True,
            absent=1,
        ),
    )
    # Training batches whose statistics BatchNorm's population estimates are recomputed from before each
    # validation (0 = off: Keras' running averages, as the notebook). See train.RecalibrateBatchNorm.
    precise_bn: int = field(
        default=20,
        metadata=knob(
            "recompute BatchNorm statistics from B training batches before each validation (0: off, as the notebook)",
            metavar="B",
            budget=True,
            absent=0,  # records from before it existed trained without it
        ),
    )
    # Dtype policy of the architecture's layers: "mixed" computes in float16 (GPUs with tensor cores),
    # "mixed_bfloat16" in bfloat16 (CPUs with AVX512-BF16 or AMX, TPUs); the output layer stays float32.
    precision: str = field(
        default="float32",
        metadata=knob(
            "compute dtype: mixed = float16 (GPUs), mixed_bfloat16 (AVX512-BF16 CPUs, TPUs); output stays float32",
            choices=PRECISIONS,
        ),
    )
    # XLA (TensorFlow, JAX) or torch.compile (PyTorch) for the training step: "auto" compiles on an accelerator (on
    # TensorFlow's CPU build XLA made every model slower, measured by `harness bench`), "on" and "off" force it.
    jit_compile: str = field(
        default="auto",
        metadata=knob(
            "compile the training step: auto (XLA or torch.compile on a GPU, not on a CPU), on, off",
            choices=JIT_CHOICES,
        ),
    )
    # At most this many training batches an epoch (None: a full pass); a scaling study's equal-compute budget
    # uses it to give a large model a fraction of an epoch.
    steps_per_epoch: int | None = field(
        default=None, metadata=knob("training batches per epoch (default: a full pass)", cli=False, budget=True)
    )
    # The tunable recipe (harness.training.schedules, train.compile_model): each default is the notebook's.
    lr_schedule: str = field(
        default="constant",
        metadata=knob(
            "learning-rate schedule over the run's steps: constant, cosine (to 0), one-cycle (from lr/25 up to lr,"
            " then down to lr/1e4) or wsd (warmup, stable at lr, then a linear cooldown to 0 over the last"
            " --cooldown-fraction); each after --warmup-epochs or --warmup-fraction",
            choices=LR_SCHEDULES,
        ),
    )
    # The schedule's length in epochs, when it is not the epochs trained now: a clocked search trains a trial's
    # rungs on one warmup-stable-decay schedule, so a promoted trial goes on where it stopped (None: --epochs).
    schedule_epochs: int | None = field(
        default=None, metadata=knob("the learning-rate schedule's length in epochs (default: --epochs)", cli=False)
    )
    # Validate only after these epochs (and the last one, and one the clock cuts): a clocked search scores its
    # trials at rungs, so the epochs between them need no validation pass (None: every epoch).
    validate_at: tuple[int, ...] | None = field(
        default=None, metadata=knob("validate only after these epochs and the last (default: every epoch)", cli=False)
    )
    cooldown_fraction: float = field(
        default=0.2, metadata=knob("--lr-schedule wsd: the share of the steps its linear cooldown takes", metavar="F")
    )
    warmup_epochs: float = field(
        default=0.0, metadata=knob("linear learning-rate warmup over E epochs (fractions allowed)", metavar="E")
    )
    warmup_fraction: float = field(
        default=0.0, metadata=knob("linear learning-rate warmup over a fraction F of all steps", metavar="F")
    )
    weight_decay: float | None = field(
        default=None,
        metadata=knob("decoupled weight decay (default: the optimiser's own; AdamW 0.004, others none)", metavar="WD"),
    )
    label_smoothing: float = field(
        default=0.0, metadata=knob("binary cross-entropy label smoothing: targets S/2 and 1 - S/2", metavar="S")
    )
    ema: bool = field(
        default=False,
        metadata=knob("average the weights over steps (Keras' use_ema); validation and the saved model use it"),
    )
    ema_momentum: float = field(default=0.99, metadata=knob("momentum of --ema's moving average", metavar="M"))
    # A pretrained backbone (architectures.applications) trains frozen this many epochs, then fine-tunes.
    freeze_epochs: int = field(
        default=0,
        metadata=knob("train the head only (backbone frozen) N epochs, then all at --finetune-lr", metavar="N"),
    )
    finetune_lr: float = field(
        default=0.1, metadata=knob("the fine-tuning learning rate, as a fraction F of the first phase's", metavar="F")
    )
    # Where each run's TensorBoard logs go: DIR/<run id>/{train,validation}; "" = <results>/tensorboard.
    tensorboard: str | None = field(
        default=None,
        metadata=knob(
            "write TensorBoard logs (per-epoch scalars) of each run to DIR/<run id> (default DIR:"
            " <results>/tensorboard; needs TensorFlow installed, whatever the backend)",
            metavar="DIR",
            const="",
        ),
    )

    def __post_init__(self) -> None:
        check_types(self)
        check_seconds(self.time_limit, "time_limit")
        self._check_recipe()
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(f"steps per epoch must be at least 1, got {self.steps_per_epoch}")
        if self.jit_compile not in JIT_CHOICES:
            raise ConfigError(f"--jit-compile must be one of {', '.join(JIT_CHOICES)}, got {self.jit_compile!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"--patience must be at least 1, got {self.patience}")
        if self.tta not in TTA_VIEWS:
            raise ConfigError(f"--tta must be one of {', '.join(map(str, TTA_VIEWS))}, got {self.tta}")

    def _check_recipe(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(f"--warmup-epochs must be from 0 to --epochs ({self.epochs}), got {self.warmup_epochs}")
        if self.schedule_epochs is not None and self.schedule_epochs < self.epochs:
            raise ConfigError(f"the schedule's {self.schedule_epochs} epochs are fewer than --epochs {self.epochs}")
        if not 0 < self.cooldown_fraction <= 1:
            raise ConfigError(f"--cooldown-fraction must be in (0, 1], got {self.cooldown_fraction}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"--warmup-fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.warmup_epochs and self.warmup_fraction:
            raise ConfigError("give --warmup-epochs or --warmup-fraction, not both")
        if self.weight_decay is not None and not 0 <= self.weight_decay < 1:
            raise ConfigError(f"--weight-decay must be in [0, 1), got {self.weight_decay}")
        if self.weight_decay is not None and "weight_decay" in self.optimizer.kwargs:
            raise ConfigError("--weight-decay: the optimizer's own arguments already set weight_decay")
        if not 0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"--label-smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if not 0 < self.ema_momentum < 1:
            raise ConfigError(f"--ema-momentum must be in (0, 1), got {self.ema_momentum}")
        if not 0 <= self.freeze_epochs < self.epochs:
            raise ConfigError(f"--freeze-epochs must be below --epochs ({self.epochs}), got {self.freeze_epochs}")
        if not 0 < self.finetune_lr <= 1:
            raise ConfigError(f"--finetune-lr must be in (0, 1], got {self.finetune_lr}")


STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # a file, table and URL-safe name


def check_study_name(name: str) -> str:
    """A study name every store and tuner accepts, or a one-line error naming --study."""
    if not STUDY_NAME.match(name):
        raise ConfigError(f"--study {name!r}: use letters, digits, '.', '_' and '-' (at most 100, no leading symbol)")
    return name


@dataclass(frozen=True)
class DataConfig:
    """Which labelled images a run sees and how they are split."""

    protocol: str = field(default="seed", metadata=knob("split (default: seed)", choices=PROTOCOLS, budget=True))
    sample: int | None = field(
        default=None,
        metadata=knob("use a stratified subset of N labelled images", metavar="N", parse=positive_int, budget=True),
    )
    seed: int = field(
        default=101,
        metadata=knob(
            "random seed for the sample, split and weights (0 to 4294967295)", parse=seed_number, budget=True
        ),
    )
    val_fraction: float = field(default=0.15, metadata=knob("validation fraction", cli=False))
    folds: int = field(  # K > 1: K-fold cross-validation, every image validated once (out of fold)
        default=1,
        metadata=knob(
            "K-fold cross-validation (needs --protocol stratified or grouped); metric = mean ± std over folds",
            metavar="K",
            parse=positive_int,
            budget=True,
            absent=1,
        ),
    )
    near_duplicates: bool = field(  # stratified protocol: keep near-duplicate images on one side too
        default=True, metadata=knob("keep near-duplicate images on one side of the split", cli=False)
    )
    group_size: int = field(  # --protocol grouped: see harness.data.slide_groups
        default=100,
        metadata=knob(
            "--protocol grouped: about N images per approximate slide group (stain clusters)",
            metavar="N",
            parse=positive_int,
            budget=True,
            absent=100,
        ),
    )

    def __post_init__(self) -> None:
        check_seed(self.seed)  # first: its message gives the range
        check_types(self)
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.sample is not None and self.sample < 4:
            raise ConfigError(f"--sample must be at least 4, got {self.sample}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"validation fraction must be in (0, 1), got {self.val_fraction}")
        if self.folds < 1:
            raise ConfigError(f"--folds must be at least 1, got {self.folds}")
        if self.folds > 1 and self.protocol == "seed":
            raise ConfigError(
                "--folds needs --protocol stratified or grouped: the seed protocol is one fixed 85/15 split"
            )
        if self.group_size < 1:
            raise ConfigError(f"--group-size must be at least 1, got {self.group_size}")
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
        """A spec from its stored form (a record, a spec.json): every key known, every value of its field's type."""
        check_keys(raw, cls, "spec")
        training = dict(raw.get("training", {}))
        check_keys(training, TrainingConfig, "spec's training")
        for name, kind in (("optimizer", OptimizerConfig), ("augment", AugmentConfig)):
            part = training.get(name, {})
            if not isinstance(part, dict):
                raise ConfigError(f"spec's training.{name} must be a table of its settings, got {part!r}")
            check_keys(part, kind, f"spec's training.{name}")
        check_keys(dict(raw.get("data", {})), DataConfig, "spec's data")
        check_keys(dict(raw.get("origin", {})), Origin, "spec's origin")
        if not isinstance(raw.get("arch_kwargs", {}), dict):
            raise ConfigError(f"spec's arch_kwargs must be a table of keyword arguments, got {raw['arch_kwargs']!r}")
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
