"""A study's settings: its space and tuner, and the data and training budget every trial shares (no Keras here)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from harness.config import DataConfig, OptimizerConfig, TrainingConfig
from harness.errors import HarnessError
from harness.settings import (
    build,
    check_names,
    flag_of,
    flags_of,
    flat,
    flat_names,
    knob,
    knobs,
    nested,
    positive_float,
)

TUNERS = ("optuna", "keras-tuner")
ALGORITHMS = ("hyperband", "bayesian", "random")


@dataclass(frozen=True)
class StudySettings:
    """A study's fixed settings: its space and tuner, and the data and training budget of every trial.

    Stored flat (`as_dict`): these four fields, then every data and training knob a study keeps (knob(study=None)),
    so a new training knob is a study setting, with its flag in the resume checks, by being a field.
    `settings.epochs`, `settings.seed` read the training's and the data's fields.
    """

    space: str = field(default="widen", metadata=knob("search space from 'harness list' (default widen)"))
    tuner: str = field(default="optuna", metadata=knob("the tuner (default optuna)", choices=TUNERS))
    algorithm: str | None = field(
        default=None,
        metadata=knob("KerasTuner's search algorithm (default bayesian; Optuna always uses TPE)", choices=ALGORITHMS),
    )
    max_gmacs: float | None = field(
        default=None,
        metadata=knob(
            "prune points whose forward pass costs more than G GMACs per image (CPU budgets; seed_model3: 0.63)",
            metavar="G",
            parse=positive_float,
        ),
    )
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def __post_init__(self) -> None:
        if self.tuner not in TUNERS:
            raise HarnessError(f"--tuner must be one of {', '.join(TUNERS)}, got {self.tuner!r}")
        if self.tuner == "optuna" and self.algorithm is not None:
            raise HarnessError("--algorithm chooses KerasTuner's algorithm; with --tuner optuna the search is TPE")
        if self.tuner == "keras-tuner" and self.algorithm is None:
            object.__setattr__(self, "algorithm", "bayesian")

    def __getattr__(self, name: str) -> Any:  # settings.epochs, settings.seed: the parts' fields, read flat
        if not name.startswith("_"):
            for part in ("training", "data"):
                config = self.__dict__.get(part)
                if config is not None and hasattr(config, name):
                    return getattr(config, name)
        raise AttributeError(name)

    @staticmethod
    def names(study: bool = False) -> list[str]:
        """The flat names: every keyword a search takes (study=True: only those a study stores)."""
        own = flat_names(StudySettings)
        return own + flat_names(DataConfig, study=study) + flat_names(TrainingConfig, study=study)

    def as_dict(self) -> dict[str, Any]:
        return {**flat(self), **flat(self.data, study=True), **flat(self.training, study=True)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StudySettings:
        """Settings from flat values (keyword arguments, flags or a stored study); unset ones take the defaults."""
        check_names(values, cls.names())
        for config in (TrainingConfig, DataConfig):
            for f in knobs(config):
                if f.metadata["study"] is not None and values.get(f.name) is not None:
                    raise HarnessError(f"{flag_of(f)} does not apply to search: {f.metadata['study']}")
        own = {f.name: values[f.name] for f in knobs(cls) if values.get(f.name) is not None}
        data = build(DataConfig(), {k: v for k in flat_names(DataConfig) if (v := values.get(k)) is not None})
        training = build(
            TrainingConfig(), {k: v for k in flat_names(TrainingConfig) if (v := values.get(k)) is not None}
        )
        return cls(**own, data=data, training=training)

    def trial_training(
        self, epochs: int | None = None, batch_size: int | None = None, optimizer: OptimizerConfig | None = None
    ) -> TrainingConfig:
        """Every trial's training recipe; a space may choose the optimiser and the batch size."""
        return dataclasses.replace(
            self.training,
            epochs=epochs or self.training.epochs,
            batch_size=batch_size or self.training.batch_size,
            optimizer=optimizer or OptimizerConfig(),
        )


def _study_key(name: str) -> str:
    """The stored key a flat name belongs to: a nested field's name for its own fields (dihedral -> augment)."""
    for f in knobs(TrainingConfig):
        inner = nested(TrainingConfig, f)
        if inner is not None and name in flat_names(inner):
            return f.name
    return name


def _flag(name: str) -> str:
    for config in (StudySettings, DataConfig, TrainingConfig):
        for f in knobs(config):
            if f.name == name:
                return flags_of(config, f)
    return name


def reconcile(study: str, given: dict[str, Any], stored: dict[str, Any] | None) -> StudySettings:
    """Settings for this session: a resumed study keeps its own; a setting given that contradicts one is an error."""
    wanted = StudySettings.from_dict(given)
    if not stored:
        return wanted
    keys = StudySettings.names(study=True)
    known = {k: v for k, v in stored.items() if k in keys}  # a newer harness's extra keys are not ours to judge
    kept = StudySettings.from_dict({**wanted.as_dict(), **known})
    explicit = {_study_key(name) for name, value in given.items() if value is not None}
    want, have = wanted.as_dict(), kept.as_dict()
    clashes = [f"{_flag(k)} {have[k]}" for k in keys if k in explicit and k in known and want[k] != have[k]]
    if clashes:
        raise HarnessError(
            f"study {study!r} was started with {', '.join(clashes)}; rerun with those values to continue it, "
            "or name a new study with --study"
        )
    return kept
